"""``gpconv bench``: which backend (and grouped-pointwise implementation) is fastest here.

Default: for each installed backend (torch, tensorflow, cupy with a CUDA device; numpy only when
named) and model
(EfficientNet-B0, kEffNet-B0): parameters, MACs, forward images/s and train-step time, the
kEffNet/EfficientNet ratios from this run, and a recommendation line. ``--op pointwise`` times the
grouped 1×1 implementations each backend offers on kEffNet's layer shapes instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

from ..core.arch import MIN_INPUT_SIZE, MODELS
from .main import (
    UsageError,
    add_compile_option,
    add_device_option,
    add_keep_freed_memory,
    nonempty_path,
    require_at_least,
    require_output,
    write_output,
)

BACKENDS = ("torch", "tensorflow", "numpy", "cupy")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="measure backends: throughput, train-step time, kEffNet/EfficientNet ratios",
        description="Benchmark every installed backend on this machine and recommend the fastest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        default=None,
        help="backend to measure (repeatable; default: installed torch, tensorflow and cupy "
        "(CUDA), plus numpy with --op pointwise)",
    )
    p.add_argument(
        "--model",
        action="append",
        choices=sorted(MODELS),
        default=None,
        help="model to measure (repeatable; default: efficientnet-b0 and kefficientnet-b0)",
    )
    p.add_argument("--min-channels-per-group", type=int, default=16, help="kEffNet group minimum")
    p.add_argument("--image-size", type=int, default=32, help="square input size")
    p.add_argument("--skip-stride", type=int, default=3, help="skip_stride_cnt (-1: none)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed rounds (one call of each model or implementation per round; median reported)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (tracing, caches)")
    p.add_argument(
        "--op",
        choices=("model", "pointwise"),
        default="model",
        help="'pointwise': compare grouped 1x1 implementations per backend instead",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per framework (None: the framework's own choice)",
    )
    add_keep_freed_memory(p)
    add_compile_option(p, "also time compiled train steps")
    add_device_option(p)
    p.add_argument(
        "--json",
        type=nonempty_path,
        metavar="FILE",
        help="write all results as JSON (missing folders are created)",
    )
    p.add_argument(
        "--plot",
        type=nonempty_path,
        metavar="FILE",
        help="write a bar chart; the suffix picks the format (.png, .pdf, .svg, ...; missing "
        "folders are created)",
    )
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    from ..train.frameworks import check_threads

    try:
        check_threads(args.threads)
    except ValueError as err:
        raise UsageError(str(err)) from err
    require_at_least(
        args,
        {
            "batch_size": 1,
            "steps": 1,
            "warmup": 0,
            "image_size": MIN_INPUT_SIZE,
            "min_channels_per_group": 1,
            "skip_stride": -1,
        },
    )
    for flag, given in (("--compile", args.compile_step), ("--model", args.model)):
        if given and args.op != "model":  # pointwise mode times kEffNet-B0's layer shapes only
            raise UsageError(f"Expected --op model with {flag}, received --op {args.op}")
    _check_group_minimum(args)
    _check_outputs(args)


def _check_group_minimum(args: argparse.Namespace) -> None:
    """A group minimum other than the default, with only EfficientNet models, would be ignored
    (they have no groups; ``gpconv train`` refuses the pair too): most likely a kEffNet was
    meant. The default 16 cannot be told from a given 16, which changes nothing anyway."""
    from ..perf.models import ModelBenchConfig

    default = ModelBenchConfig.min_channels_per_group
    if args.min_channels_per_group == default or not args.model:
        return
    if not any(m.startswith("kefficientnet") for m in args.model):
        models = " ".join(f"--model {m}" for m in args.model)
        raise UsageError(
            f"Expected a kefficientnet --model with --min-channels-per-group "
            f"{args.min_channels_per_group} (EfficientNet has no groups), received {models}"
        )


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written *before* measuring."""
    from ..train.metrics import OUTPUT_CHECKS

    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path == "-":  # stdout carries the tables: a file named "-" would be a surprise
            raise UsageError(f"Expected a file path for {flag} (stdout has the tables), received -")

    if args.json:
        require_output("--json", args.json)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError as err:
            raise UsageError(
                "Expected matplotlib installed for --plot (pip install 'gpconv[train]'), "
                "received no matplotlib"
            ) from err
        for check, expected in OUTPUT_CHECKS:
            require_output("--plot", args.plot, check, expected)


def _backends(requested: list[str] | None, op: str) -> tuple[list[str], list[dict[str, str]]]:
    from .. import backends
    from ..perf.models import DEFAULT_BACKENDS

    # Whole B0 networks in the float64 reference take minutes per step; single layers do not.
    default = BACKENDS if op == "pointwise" else DEFAULT_BACKENDS
    usable, skipped = [], []
    for name in requested or default:
        adapter = backends.get(name)
        if adapter.is_available():
            usable.append(name)
        else:
            skipped.append({"backend": name, "reason": f"not installed ({adapter.install_hint})"})
    if requested and skipped:
        raise UsageError("; ".join(f"backend {s['backend']!r} {s['reason']}" for s in skipped))
    return list(dict.fromkeys(usable)), skipped


def _nothing_measured(args: argparse.Namespace) -> int:
    """Every backend failed (their tracebacks are printed): say so, and what was not written."""
    outputs = (("--json", args.json), ("--plot", args.plot))
    unwritten = [f"{flag} {path}" for flag, path in outputs if path]
    note = f"; not written: {', '.join(unwritten)}" if unwritten else ""
    print(f"gpconv bench: error: every backend failed, nothing measured{note}", file=sys.stderr)
    return 1


def _measured_with(args: argparse.Namespace, model: str, backend: str) -> str:
    """The options the timings of ``model`` on ``backend`` depended on, for the recommended
    ``gpconv train`` command: only those that command takes with that model and backend (it
    refuses ``--device`` without torch and ``--min-channels-per-group`` with EfficientNet), and
    of those only the ones whose measured value is not already train's default."""
    from ..train.run import RunConfig

    options = [("--threads", args.threads)]
    # train's defaults are not all bench's (a batch of 64 against 32): left to them, the command
    # would train a setting other than the one whose ms/step the line quotes
    shape_options = ["image_size", "skip_stride", "batch_size"]
    if model.startswith("kefficientnet"):
        shape_options.append("min_channels_per_group")
    for field in shape_options:
        if getattr(args, field) != getattr(RunConfig, field):
            options.append(("--" + field.replace("_", "-"), getattr(args, field)))
    if backend == "torch":
        options.append(("--device", args.device))
    return "".join(f" {flag} {value}" for flag, value in options if value is not None)


def run(args: argparse.Namespace) -> int:
    from ..perf import allocator, report
    from ..perf.machine import describe, one_line
    from ..perf.models import DEFAULT_MODELS, ModelBenchConfig, bench_models, ratios, recommend
    from ..perf.pointwise import bench_pointwise, kefficientnet_cases
    from ..train.device import check_device
    from ..train.frameworks import set_threads

    _check(args)
    cases = []
    if args.op == "pointwise":
        try:  # before anything is measured: a setting without grouped layers is a usage error
            cases = kefficientnet_cases(
                args.image_size, args.skip_stride, args.batch_size, args.min_channels_per_group
            )
        except ValueError as err:
            raise UsageError(str(err)) from err
    names, skipped = _backends(args.backend, args.op)
    if not names:
        raise UsageError(
            "no backend to measure: " + "; ".join(f"{s['backend']} {s['reason']}" for s in skipped)
        )
    if args.device is not None:
        try:  # it steers torch only: a run without torch would ignore it
            check_device(args.device, "torch" if "torch" in names else names[0])
        except ValueError as err:
            raise UsageError(str(err)) from err
    if args.keep_freed_memory:
        allocator.keep_freed_memory()
    machine = describe()
    print(
        f"gpconv bench on {one_line(machine)}, {machine['date']}, {machine['malloc']}", flush=True
    )
    for s in skipped:
        print(f"  skipping {s['backend']}: {s['reason']}", flush=True)
    cfg = ModelBenchConfig(
        args.image_size,
        args.skip_stride,
        args.batch_size,
        args.steps,
        args.warmup,
        args.min_channels_per_group,
        compile_step=args.compile_step,
        device=args.device,
    )
    for name in names:
        set_threads(name, args.threads)
    results, point_rows = [], []

    def measured(name: str, measure: Callable[[], list[dict]]) -> list[dict]:
        """``measure()``'s rows; a failure is reported (traceback, a skipped entry) and gives
        none, so that one broken backend does not hide the others' results."""
        try:
            return measure()
        except Exception as err:
            traceback.print_exc()
            skipped.append({"backend": name, "reason": f"failed: {err}"})
            return []

    if args.op == "pointwise":
        for name in names:
            print(
                f"  measuring {name} grouped pointwise on {len(cases)} kEffNet-B0 layer shapes ...",
                flush=True,
            )
            point_rows += measured(
                name, partial(bench_pointwise, name, cases, args.steps, args.warmup, args.device)
            )
        if not point_rows:
            return _nothing_measured(args)
        print(report.pointwise_table(point_rows))
        lines = report.pointwise_recommendations(point_rows)
    else:
        models = list(dict.fromkeys(args.model or DEFAULT_MODELS))
        for name in names:
            how = ""
            if args.compile_step:
                how = "eager and compiled" if cfg.compiles(name) else "eager (no compiler)"
                how += " train steps, "
            print(f"  measuring {name}: {', '.join(models)}, {how}round-robin ...", flush=True)
            results += measured(name, partial(bench_models, name, models, cfg))
        if not results:
            return _nothing_measured(args)
        print(report.model_table(results))
        best = recommend(results)
        options = {m: _measured_with(args, m, b["backend"]) for m, b in best.items()}
        lines = report.ratio_lines(ratios(results)) + report.recommendation_lines(
            best, machine, options
        )
    if args.warmup == 0:
        # The first call traces (tf.function), compiles (--compile) and fills caches: timed,
        # it compares start-up costs, and the recommendation follows them.
        lines.append(
            "note: --warmup 0 timed each first call, tracing and compiling included; "
            "figures and recommendation are not the steady state (use --warmup 1 or more)"
        )
    for line in lines:
        print(line)
    written = True
    if args.json:
        doc = report.document(
            args.op,
            machine,
            {**asdict(cfg), "backends": names, "op": args.op, "threads": args.threads},
            results,
            ratios(results) if results else [],
            recommend(results) if results else {},
            point_rows,
            skipped,
        )
        written &= write_output(
            "bench", "--json", args.json, lambda: report.write_json(args.json, doc)
        )
    if args.plot:
        title = f"gpconv bench, {one_line(machine)}, {machine['date'][:10]}"
        if point_rows:
            plot = partial(report.plot_pointwise, args.plot, point_rows, title)
        else:
            plot = partial(report.plot_models, args.plot, results, title)
        written &= write_output("bench", "--plot", args.plot, plot)
    failed = any(s["reason"].startswith("failed:") for s in skipped)
    return 1 if failed or not written else 0
