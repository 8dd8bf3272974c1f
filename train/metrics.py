"""Run outputs: ``metrics.csv``, ``curves.png`` and comparison plots of several runs.

``history`` is a list of per-epoch rows with the keys of ``COLUMNS``. Files are rewritten whole
and atomically from the history (which checkpoints also carry), so a resumed run's files equal an
uninterrupted run's. Plots use matplotlib's Agg backend (no display needed).

``python -m gpconv.train.metrics RUN [RUN ...] -o FILE [--table]`` draws several runs' curves in
one figure (and prints a Markdown table of their summaries).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections.abc import Sequence
from typing import Any

from .checkpoint import write_text_atomic

COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


def write_csv(path: str, history: Sequence[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per completed epoch (epochs counted from 1)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row[k]) for k in COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def read_csv(path: str) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (``epoch`` as int)."""
    with open(path) as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return plt, fig, ax_loss, ax_acc


def _plot_history(
    ax_loss, ax_acc, history: Sequence[dict[str, Any]], label: str, color: Any = None
) -> None:
    epochs = [r["epoch"] for r in history]
    for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(
            epochs, [r[f"train_{key}"] for r in history], "--", color=color, label=f"{label} train"
        )
        ax.plot(
            epochs,
            [r[f"test_{key}"] for r in history],
            "-o",
            ms=3,
            color=color,
            label=f"{label} test",
        )


def _save(plt, fig, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_curves(path: str, history: Sequence[dict[str, Any]], title: str = "") -> None:
    """``curves.png``: train/test loss and accuracy per epoch."""
    plt, fig, ax_loss, ax_acc = _figure()
    _plot_history(ax_loss, ax_acc, history, "", color="C0")
    ax_acc.legend(["train", "test"])
    fig.suptitle(title)
    _save(plt, fig, path)


def plot_runs(run_dirs: Sequence[str], path: str, title: str = "") -> None:
    """Curves of several run folders in one figure, labelled by each run's model and backend."""
    plt, fig, ax_loss, ax_acc = _figure()
    for i, run in enumerate(run_dirs):
        label = os.path.basename(os.path.normpath(run))
        summary = os.path.join(run, "summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                s = json.load(f)
            label = f"{s['arch']} ({s['backend']})"
        _plot_history(
            ax_loss, ax_acc, read_csv(os.path.join(run, "metrics.csv")), label, color=f"C{i}"
        )
    ax_acc.legend(fontsize=8)
    fig.suptitle(title)
    _save(plt, fig, path)


def summary_table(run_dirs: Sequence[str]) -> str:
    """A Markdown table of several runs' ``summary.json``: size, final and best test accuracy,
    training throughput and wall time."""
    lines = [
        "| model | backend | trainable params | epochs | final test acc | best test acc "
        "| train img/s (last epoch) | wall time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in run_dirs:
        with open(os.path.join(run, "summary.json")) as f:
            s = json.load(f)
        lines.append(
            f"| {s['arch']} | {s['backend']} | {s['params']['trainable']:,} | "
            f"{s['epochs_completed']} | {100 * s['final']['test_acc']:.2f}% | "
            f"{100 * s['best_test_acc']:.2f}% (epoch {s['best_epoch']}) | "
            f"{s['train_images_per_s']:.1f} | {s['seconds_total'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpconv.train.metrics",
        description="Plot the curves of several training runs together.",
    )
    parser.add_argument("runs", nargs="+", help="run folders (with metrics.csv)")
    parser.add_argument("-o", "--out", help="PNG file to write")
    parser.add_argument("--title", default="")
    parser.add_argument("--table", action="store_true", help="print a Markdown table of the runs")
    args = parser.parse_args(argv)
    if args.out:
        plot_runs(args.runs, args.out, args.title)
    if args.table:
        print(summary_table(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
