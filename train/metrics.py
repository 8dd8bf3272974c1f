"""Run outputs: ``metrics.csv``, ``curves.png`` and comparison plots of several runs.

``history`` is a list of per-epoch rows with the keys of ``COLUMNS``. Files are rewritten whole
and atomically from the history (which checkpoints also carry), so a resumed run's files equal an
uninterrupted run's. Plots use matplotlib's Agg backend (no display needed).

``python -m gpconv.train.metrics RUN [RUN ...] [-o FILE] [--table]`` draws several runs' curves in
one figure (its format from the suffix of ``FILE``) and/or prints a Markdown table of their
summaries. A run killed before its first epoch ended has no ``metrics.csv`` yet: it is skipped with
a message, so that a glob over a folder of runs still compares the others.

``plot_formats``, ``plot_format`` and ``check_output_path`` let a command check a figure's or a
file's path before it spends minutes computing what goes in it (``gpconv bench`` uses them too).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
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


def plot_formats() -> dict[str, str]:
    """The suffixes (lower case, no dot) matplotlib can save a figure as, with their names.

    Raises ``ModuleNotFoundError`` without matplotlib (the ``train`` extra)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return FigureCanvasBase.get_supported_filetypes()


def plot_format(path: str) -> str:
    """The format matplotlib writes ``path`` in: its suffix, lower case.

    Raises ``ValueError`` (listing the supported suffixes) for a suffix matplotlib does not know,
    or for none at all: savefig would then write PNG and append ``.png`` to the name."""
    suffix = os.path.splitext(path)[1][1:].lower()
    formats = plot_formats()
    if suffix not in formats:
        got = f"suffix .{suffix}" if suffix else "no suffix"
        raise ValueError(f"{got}, not one of {', '.join('.' + f for f in sorted(formats))}")
    return suffix


def check_output_path(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be written as a file: not a folder, not below a
    file, and its nearest existing folder writable. Missing folders are fine (``make_parent``
    creates them when the file is written); nothing is created here, so a run that fails before
    writing leaves no empty folders behind."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"{path} is a folder")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise ValueError(f"{path} is not writable")
    parent = os.path.dirname(full)
    while not os.path.exists(parent):  # ends at the root, which exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"folder {parent} is not writable")


def make_parent(path: str) -> None:
    """Create the folder ``path`` goes in, with any missing folders above it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


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
    """Write ``fig`` to ``path`` atomically, in the format of its suffix (``plot_format``)."""
    fmt = plot_format(path)
    make_parent(path)
    # The format is passed explicitly: the temporary name's own suffix must not choose it.
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=110, format=fmt)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):  # savefig or the rename failed: leave no temporary file behind
            os.remove(tmp)


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


def _check_runs(parser: argparse.ArgumentParser, runs: Sequence[str]) -> None:
    """Exit 2 (``parser.error``) naming the first run that is no folder: a typo, not a run."""
    for run in runs:
        if not os.path.isdir(run):
            what = "a file" if os.path.exists(run) else "missing"
            parser.error(f"expected RUN to be a run folder, received {run} ({what})")


# What each check of an output path expects, for the usage error when it fails.
OUTPUT_CHECKS = (
    (plot_format, "FILE with a suffix matplotlib writes"),
    (check_output_path, "FILE in a writable folder"),
)


def _check_out(parser: argparse.ArgumentParser, out: str) -> None:
    """Exit 2 naming ``-o`` for a suffix matplotlib cannot write or a path that cannot be
    written, before any run is read."""
    for check, expected in OUTPUT_CHECKS:
        try:
            check(out)
        except ValueError as err:
            parser.error(f"expected -o {expected}, received {out}: {err}")


def _runs_with(runs: Sequence[str], name: str) -> list[str]:
    """The runs that hold ``name``; the others are skipped with a message on stderr."""
    kept = []
    for run in runs:
        if os.path.isfile(os.path.join(run, name)):
            kept.append(run)
        else:
            print(
                f"skipping {run}: no {name} (killed before its first epoch ended?)",
                file=sys.stderr,
            )
    return kept


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 no run to show or a file could not be written, 2 usage error."""
    parser = argparse.ArgumentParser(
        prog="python -m gpconv.train.metrics",
        description="Plot the curves of several training runs together and/or tabulate them.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        help="run folders; one without metrics.csv (killed before its first epoch ended) is "
        "skipped with a message, and a missing folder is an error",
    )
    parser.add_argument(
        "-o",
        "--out",
        help="figure to write; its suffix picks the format (.png, .pdf, .svg, ...); missing "
        "folders are created",
    )
    parser.add_argument("--title", default="")
    parser.add_argument("--table", action="store_true", help="print a Markdown table of the runs")
    args = parser.parse_args(argv)
    if not (args.out or args.table):
        parser.error("expected -o FILE or --table (or both), received neither")
    _check_runs(parser, args.runs)
    if args.out:
        _check_out(parser, args.out)
    runs = _runs_with(args.runs, "metrics.csv")
    if not runs:
        print("error: no run with metrics.csv to show", file=sys.stderr)
        return 1
    # The table first: it is printed even if the figure cannot be written after all.
    if args.table:
        print(summary_table(_runs_with(runs, "summary.json")))
    if args.out:
        try:
            plot_runs(runs, args.out, args.title)
        except OSError as err:
            print(f"error: could not write -o {args.out}: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
