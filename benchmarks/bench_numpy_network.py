"""NumPy reference network: forward + backward time per batch, EfficientNet-B0 vs kEffNet-B0.

Times ``network.loss_and_grads`` (training mode: batch-statistics BN, dropout masks from a
seeded generator, softmax cross-entropy, backward to every parameter and the input) at 32×32
with ``skip_stride_cnt=3`` (the paper's CIFAR set-up), float32, batch 8 by default. The models
alternate, so a load spike on a shared machine hits both; the median of ``--repeats`` is
reported. ``--profile`` adds where the time goes, per core op (forward and backward), measured
with cProfile on one extra step of each model. Target (issue 4): kEffNet-B0 < 2 s per batch of 8.

    python benchmarks/bench_numpy_network.py [--repeats 5] [--batch 8] [--threads N]
                                             [--profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import platform
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np

from gpconv import core
from gpconv.cli.main import add_threads_option, int_at_least, nonempty_path
from gpconv.core import network
from gpconv.core.arch import Architecture, efficientnet, kefficientnet
from gpconv.perf.timing import limit_blas_threads

TARGET_S = 2.0
SIZE, SKIP = 32, 3


def models() -> dict[str, Architecture]:
    return {
        "EfficientNet-B0": efficientnet("b0", 10, skip_stride_cnt=SKIP),
        "kEffNet-B0 16ch": kefficientnet("b0", 10, 16, skip_stride_cnt=SKIP),
    }


def train_step(arch: Architecture, batch: int) -> Callable[[], None]:
    params = network.init_params(arch, seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, arch.num_classes, batch)

    def run() -> None:
        network.loss_and_grads(arch, params, x, labels, training=True, rng=1)

    return run


def median_times(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds of each callable, wall clock and process CPU time, measured round-robin
    after one warm-up call each. On a shared machine the CPU time is the steadier figure (with
    one BLAS thread it is this process's work alone)."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in fns}


def _op_methods() -> dict[tuple[str, int], str]:
    """``(file, first line) -> "Op.method"`` for every core op's forward/backward and interleave."""
    table = {}
    ops = [getattr(core, name) for name in core.__all__ if inspect.isclass(getattr(core, name))]
    for op in ops:
        for method in ("forward", "backward"):
            fn = getattr(op, method, None)
            if fn is not None and hasattr(fn, "__code__"):
                table[(fn.__code__.co_filename, fn.__code__.co_firstlineno)] = (
                    f"{op.__name__}.{method}"
                )
    for fn in (core.interleave, core.deinterleave):
        table[(fn.__code__.co_filename, fn.__code__.co_firstlineno)] = fn.__name__
    return table


def profile(step: Callable[[], None], top: int = 8) -> list[tuple[str, float]]:
    """Inclusive CPU seconds per core op method during one ``step``, largest first. KPointwise
    includes the GroupedPointwise/BatchNorm/activation calls it makes."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    step()
    prof.disable()
    names = _op_methods()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    per_op = {names[(f, line)]: s[3] for (f, line, _), s in stats.items() if (f, line) in names}
    return sorted(per_op.items(), key=lambda kv: -kv[1])[:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int_at_least("--repeats", 1), default=5)
    parser.add_argument("--batch", type=int_at_least("--batch", 1), default=8)
    add_threads_option(parser, "BLAS")
    parser.add_argument("--profile", action="store_true", help="also show time per core op")
    parser.add_argument(
        "--json", type=nonempty_path, metavar="PATH", help="write the figures as JSON"
    )
    args = parser.parse_args(argv)
    threads = limit_blas_threads(args.threads)
    archs = models()
    steps = {name: train_step(arch, args.batch) for name, arch in archs.items()}
    times = median_times(steps, args.repeats)
    rows = []
    for name, arch in archs.items():
        t = times[name]
        rows.append(
            {
                "model": name,
                "arch": arch.name,
                "params_trainable": arch.param_count()[0],
                "macs_per_image": arch.macs(SIZE),
                "batch": args.batch,
                "wall_s_per_batch": t["wall"],
                "cpu_s_per_batch": t["cpu"],
                "wall_ms_per_image": 1e3 * t["wall"] / args.batch,
            }
        )
    k, e = times["kEffNet-B0 16ch"], times["EfficientNet-B0"]
    ratios = {clock: k[clock] / e[clock] for clock in ("wall", "cpu")}
    print(
        f"NumPy {np.__version__} reference, loss_and_grads (training), {SIZE}x{SIZE}, "
        f"skip_stride_cnt={SKIP}, float32, batch {args.batch}, {threads}, median of {args.repeats}"
    )
    head = (
        f"{'model':<16} {'params':>10} {'MMACs/img':>10} {'wall s/batch':>12} {'cpu s/batch':>11} "
        f"{'wall ms/img':>11}"
    )
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['model']:<16} {r['params_trainable']:>10,} {r['macs_per_image'] / 1e6:>10.1f} "
            f"{r['wall_s_per_batch']:>12.3f} {r['cpu_s_per_batch']:>11.3f} "
            f"{r['wall_ms_per_image']:>11.1f}"
        )
    verdict = "meets" if k["wall"] < TARGET_S else "MISSES"
    print(
        f"kEffNet / EfficientNet time ratio: {ratios['wall']:.3f} (wall), {ratios['cpu']:.3f} "
        f"(cpu); kEffNet-B0 {k['wall']:.2f} s per batch of {args.batch}: {verdict} the "
        f"< {TARGET_S} s target"
    )
    profiles = {}
    if args.profile:
        for name, step in steps.items():
            profiles[name] = profile(step)
            print(f"\n{name}: inclusive CPU seconds per core op (one step under cProfile)")
            for op, sec in profiles[name]:
                print(f"  {op:<28} {sec:>7.3f}")
    if args.json:
        meta = {
            "numpy": np.__version__,
            "machine": platform.machine(),
            "threads": threads,
            "repeats": args.repeats,
            "dtype": "float32",
            "input": [SIZE, SIZE, 3],
            "skip_stride_cnt": SKIP,
        }
        doc = {"meta": meta, "rows": rows, "time_ratio_k_over_e": ratios, "profile": profiles}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
