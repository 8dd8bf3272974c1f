"""Bench output: text tables, the recommendation line, the JSON document and the plot.

JSON document (``format: "gpconv-bench/1"``)::

    {"format", "op": "model" | "pointwise", "machine": {...}, "config": {...},
     "results": [model rows], "ratios": [...], "recommendation": {model: {...}},
     "pointwise": [implementation rows], "skipped": [{"backend", "reason"}]}
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from typing import Any

from ..core.files import write_atomic
from ..train.metrics import make_parent
from .machine import one_line
from .models import setup

FORMAT = "gpconv-bench/1"


def document(
    op: str,
    machine: dict[str, Any],
    config: dict[str, Any],
    results: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    recommendation: dict[str, Any],
    pointwise: list[dict[str, Any]],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "op": op,
        "machine": machine,
        "config": config,
        "results": results,
        "ratios": ratios,
        "recommendation": recommendation,
        "pointwise": pointwise,
        "skipped": skipped,
    }


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path``, creating missing folders (as the plots do). Atomically: a
    value JSON cannot hold or a full disk leaves an earlier report at ``path`` as it was."""
    text = json.dumps(doc, indent=2) + "\n"  # before the file is touched: this may raise
    make_parent(path)
    write_atomic(path, text.encode())


def write_rows(path: str | None, rows: list[dict[str, Any]], args: Any, **meta: Any) -> None:
    """The op-level benchmark scripts' JSON, ``{"meta": {...}, "rows": rows}``, at ``path`` (if
    given): ``meta`` (library versions, threads, ...) plus the machine and the script's
    ``--repeats`` and ``--clock`` from ``args``."""
    if path:
        machine = {"machine": platform.machine(), "repeats": args.repeats, "clock": args.clock}
        write_json(path, {"meta": {**meta, **machine}, "rows": rows})


def model_table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'backend':<20} {'model':<22} {'trainable':>10} {'MMACs/img':>10} {'fwd img/s':>10} "
        f"{'train ms':>10} {'train img/s':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        # Forward passes are timed eagerly only: a compiled row repeats its eager twin's figure.
        fwd = "= eager" if r.get("compiled") else f"{r['forward_images_per_s']:.1f}"
        lines.append(
            f"{setup(r):<20} {r['arch']:<22} {r['params_trainable']:>10,} "
            f"{r['macs_per_image'] / 1e6:>10.1f} {fwd:>10} "
            f"{r['train_step_ms']:>10.1f} {r['train_images_per_s']:>11.1f}"
        )
    devices = {r["backend"]: r.get("device", "cpu") for r in results}
    lines.append("ran on: " + ", ".join(f"{b} {d}" for b, d in devices.items()))
    return "\n".join(lines)


def ratio_lines(ratios: list[dict[str, Any]]) -> list[str]:
    """One line per kEffNet / EfficientNet ratio: sizes, the train-step time ratio of the medians
    (with the range of the per-round ratios when there are two rounds or more) and the forward
    speed ratio."""
    return [
        f"{setup(r)}: {r['kefficientnet']} / {r['efficientnet']}: "
        f"params x{r['params_ratio']:.3f}, "
        f"MACs x{r['macs_ratio']:.3f}, train-step time x{r['train_step_ratio']:.2f} "
        f"({_verdict(r['train_step_ratio'])}"
        f"{_round_range(r.get('train_step_ratio_per_round', []))}), forward speed "
        f"x{r['forward_speed_ratio']:.2f}"
        for r in ratios
    ]


def _verdict(time_ratio: float) -> str:
    """kEffNet's train step against EfficientNet's as the two-decimal ratio printed beside it
    reads: ``x0.99`` is faster, ``x1.00`` level (a 0.996 called "faster" next to "x1.00")."""
    shown = round(time_ratio, 2)
    return "faster" if shown < 1 else "slower" if shown > 1 else "level"


def _round_range(per_round: list[float]) -> str:
    """``"; per round x0.85-0.98"`` for two or more per-round ratios, else ``""``."""
    if len(per_round) < 2:
        return ""
    return f"; per round x{min(per_round):.2f}-{max(per_round):.2f}"


def recommendation_lines(
    best: dict[str, Any], machine: dict[str, Any], options: Mapping[str, str] | None = None
) -> list[str]:
    """One "Recommendation: train MODEL with --backend B{options}" line per model; ``options``
    (per model, e.g. ``{"efficientnet-b0": " --threads 1"}``) are the settings its timings were
    measured with."""
    lines = []
    for model, b in best.items():
        margin = (
            f", {b['speedup_over_runner_up']:.2f}x faster than {b['runner_up']}"
            if b["runner_up"]
            else " (the only backend measured)"
        )
        device = b.get("device", "cpu")  # older documents have no device: the CPU then
        where = one_line(machine) if device == "cpu" else device
        lines.append(
            f"Recommendation: train {model} with --backend {setup(b)}"
            f"{(options or {}).get(model, '')} on this machine "
            f"({where}): {step_ms(b['train_step_ms'])} ms/step{margin}"
        )
    return lines


def step_ms(ms: float) -> str:
    """A step time to three significant figures, whole milliseconds from 100 up (``1,044``,
    ``12.3``, ``0.412``): a GPU step of 0.4 ms printed as "0 ms/step"."""
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def pointwise_table(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["impl"]) for r in rows)  # torch's "channels_last [channels_last]" is 29
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        device = next(r.get("device", "cpu") for r in rows if r["backend"] == backend)
        for case in dict.fromkeys(r["case"] for r in rows if r["backend"] == backend):
            lines.append(f"{backend} on {device}: {case}, forward + backward")
            for r in (r for r in rows if r["backend"] == backend and r["case"] == case):
                tags = [t for t, on in (("fastest", r["fastest"]), ("default", r["default"])) if on]
                lines.append(
                    f"    {r['impl']:<{width}} {r['ms']:>9.2f} ms  {' '.join(tags)}".rstrip()
                )
    return "\n".join(lines)


def site_table(rows: list[dict[str, Any]], variants: list[str], shape_label: str) -> str:
    """The interleave benchmarks' table: a line per site (``rows`` with ``shape``, ``groups``,
    ``count`` and ``<variant>_ms``), then each variant's total per train step (every site counted
    as often as the network has it) and the second variant's total over the first's."""
    head = f"{shape_label:<20} {'G':>4} {'x':>2} " + " ".join(f"{v:>22}" for v in variants)
    lines = [head, "-" * len(head)]
    for r in rows:
        times = " ".join(f"{r[f'{v}_ms']:>19.3f} ms" for v in variants)
        lines.append(f"{str(tuple(r['shape'])):<20} {r['groups']:>4} {r['count']:>2} {times}")
    totals = {v: sum(r["count"] * r[f"{v}_ms"] for r in rows) for v in variants}
    lines.append("-" * len(head))
    lines.append(f"{'per train step':<28} " + " ".join(f"{totals[v]:>19.1f} ms" for v in variants))
    base, ours = (totals[v] for v in variants[:2])
    lines.append(f"{variants[1]} / {variants[0]}: {ours / base:.3f}")
    return "\n".join(lines)


# The scripts that time whole train steps per grouped-pointwise implementation (``--impls``).
WHOLE_STEP_BENCHMARKS = {
    "torch": "benchmarks/bench_torch_train.py --impls",
    "tensorflow": "benchmarks/bench_tf_train.py --impls",
}


def pointwise_recommendations(rows: list[dict[str, Any]]) -> list[str]:
    """Per backend: the implementation fastest on most cases, and whether it is the default."""
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        wins: dict[str, int] = {}
        default = next((r["impl"] for r in rows if r["backend"] == backend and r["default"]), None)
        for r in rows:
            if r["backend"] == backend and r["fastest"]:
                wins[r["impl"]] = wins.get(r["impl"], 0) + 1
        top = max(wins, key=lambda impl: (wins[impl], impl == default))  # a tie keeps the default
        cases = sum(wins.values())
        # Defaults were chosen on whole train steps, where a layer's neighbours and memory
        # format count too: on an H100 the single-layer winner channels_last ran kEffNet's step
        # 1.7x slower than the default matmul on NCHW (docs/gpu.md).
        if top == default:
            verdict = "the default already"
        elif backend in WHOLE_STEP_BENCHMARKS:
            verdict = (
                f"the models use {default}, chosen on whole train steps; compare those with "
                f"`python {WHOLE_STEP_BENCHMARKS[backend]}`, and pick one with the models' impl="
            )
        elif backend == "numpy":
            verdict = f"the reference keeps {default}, the formula core/ states"
        else:
            verdict = f"the models use {default}"

        lines.append(
            f"Recommendation: {backend} grouped pointwise: {top} (fastest in {wins[top]}/{cases} "
            f"cases; {verdict})"
        )
    return lines


def plot_models(path: str, results: list[dict[str, Any]], title: str) -> None:
    """Train-step time and forward throughput per backend, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["arch"] for r in results))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    width = 0.8 / max(1, len(models))
    setups = list(dict.fromkeys(setup(r) for r in results))
    eager = [b for b in setups if not b.endswith("--compile")]  # forward is timed eagerly only
    for ax, key, label, backends in (
        (axes[0], "train_step_ms", "train step (ms, lower is better)", setups),
        (axes[1], "forward_images_per_s", "forward images/s (higher is better)", eager),
    ):
        for i, model in enumerate(models):
            values = [
                next((r[key] for r in results if setup(r) == b and r["arch"] == model), 0)
                for b in backends
            ]
            ax.bar([j + i * width for j in range(len(backends))], values, width, label=model)
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(backends))], backends)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(plt, fig, path)


def plot_pointwise(path: str, rows: list[dict[str, Any]], title: str) -> None:
    """One panel per backend: fwd+bwd ms of each implementation, grouped by case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, axes = plt.subplots(
        1, len(backends), figsize=(5 * len(backends), 4.5), constrained_layout=True, squeeze=False
    )
    for ax, backend in zip(axes[0], backends):
        mine = [r for r in rows if r["backend"] == backend]
        cases = list(dict.fromkeys(r["layer"] for r in mine))
        impls = list(dict.fromkeys(r["impl"] for r in mine))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            values = [
                next(r["ms"] for r in mine if r["layer"] == c and r["impl"] == impl) for c in cases
            ]
            ax.bar([j + i * width for j in range(len(cases))], values, width, label=impl)
        ax.set_xticks(
            [j + width * (len(impls) - 1) / 2 for j in range(len(cases))], cases, fontsize=8
        )
        ax.set_yscale("log")
        ax.set(title=backend, ylabel="forward + backward ms (log)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(plt, fig, path)


def _save(plt, fig, path: str) -> None:
    """Write ``fig`` in the format of ``path``'s suffix, creating missing folders (as
    ``write_json`` does), and free the figure even if the write fails."""
    try:
        make_parent(path)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
