"""Run outputs: ``metrics.csv``, ``curves.png`` and comparison plots of several runs.

``history`` is a list of per-epoch rows with the keys of ``COLUMNS``. Files are rewritten whole
and atomically from the history (which checkpoints also carry), so a resumed run's files equal an
uninterrupted run's. Plots use matplotlib's Agg backend (no display needed).

``python -m gpconv.train.metrics RUN [RUN ...] [-o FILE] [--table]`` draws several runs' curves in
one figure (its format from the suffix of ``FILE``) and/or prints a Markdown table of their
summaries, each run named by its folder (``run_names``). A run killed before its first epoch ended
has no ``metrics.csv`` yet, or one without rows: it is skipped with a message, so that a glob over a
folder of runs still compares the others. A file that cannot be read (corrupt JSON, a cell that is
no number) is a ``RunFileError`` naming it; every file is read before anything is printed or
written. Non-finite values (a diverged run's NaN loss, or JSON ``null`` in its place) are data:
gaps in the curves, ``nan`` in the table.

``plot_formats``, ``plot_format`` and ``check_output_path`` let a command check a figure's or a
file's path before it spends minutes computing what goes in it (``gpconv bench`` uses them too).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import numbers
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.files import temp_name
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
    # None (a value a JSON writer stored as null) is written as "nan": read_csv reads it back.
    if v is None:
        return "nan"
    # Any real that is no integer (NumPy's float32 too, which is no Python float) to 6 figures.
    inexact = isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral)
    return f"{v:.6g}" if inexact else str(v)


class RunFileError(ValueError):
    """A file of a run folder that cannot be read; the message names the file and the fault."""


def read_csv(path: str) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (``epoch`` as int); ``nan`` and ``inf`` are numbers.

    Raises ``RunFileError`` for a file that cannot be read, a missing column of ``COLUMNS``, a
    cell that is empty or no number, epochs other than 1, 2, ... in order, or an accuracy outside
    [0, 1] (NaN allowed): ``gpconv train`` writes none of those, and curves drawn from them would
    look like a run."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise RunFileError(f"{path}: no column {', '.join(missing)} in the header line")
            rows = []
            for row in reader:
                rows.append(_csv_row(path, reader.line_num, row))
                _check_row(path, reader.line_num, rows[-1], epoch=len(rows))
            return rows
    except OSError as err:
        raise RunFileError(f"{path}: could not read it ({err.strerror or err})") from err
    except (UnicodeDecodeError, csv.Error) as err:  # binary garbage, a NUL byte
        raise RunFileError(f"{path}: not a CSV text file ({err})") from err


def _check_row(path: str, line: int, row: dict[str, float], epoch: int) -> None:
    if row["epoch"] != epoch:
        raise RunFileError(
            f"{path}: line {line}: expected epoch {epoch} (rows count epochs 1, 2, ...), "
            f"received {row['epoch']}"
        )
    for key in ("train_acc", "test_acc"):
        if not (0.0 <= row[key] <= 1.0 or math.isnan(row[key])):
            raise RunFileError(
                f"{path}: line {line}: expected {key} in [0, 1] or nan, received {row[key]}"
            )


def _csv_row(path: str, line: int, row: dict[str | None, Any]) -> dict[str, float]:
    """One ``metrics.csv`` row as numbers; ``line`` (its line number) is for the message."""
    # DictReader files the surplus of a long row under None and fills a short one with None.
    if None in row or None in row.values():
        header = len(row) - (None in row)
        got = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, ()))
        raise RunFileError(f"{path}: line {line}: expected {header} fields, received {got}")
    parsed: dict[str, float] = {}
    for key, text in row.items():
        try:
            parsed[key] = int(text) if key == "epoch" else float(text)
        except ValueError:
            kind = "an integer" if key == "epoch" else "a number"
            raise RunFileError(
                f"{path}: line {line}: expected {kind} in column {key}, received {text!r}"
            ) from None
    return parsed


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
    """Raise ``ValueError`` unless ``path`` can be written as a file: not a folder, device or
    FIFO, not below a file, and its nearest existing folder writable. Missing folders are fine
    (``make_parent`` creates them when the file is written); nothing is created here, so a run
    that fails before writing leaves no empty folders behind."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"{path} is a folder")
    if os.path.exists(full) and not os.path.isfile(full):  # written via a temp file + rename
        raise ValueError(f"{path} is no regular file (a device, FIFO or socket)")
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


def displayable(text: str) -> str:
    """``text`` as matplotlib can draw it and a strict UTF-8 stream can print it: the bytes of a
    file name that are no UTF-8, which Python decodes to lone surrogates (``os.fsdecode``),
    written as ``\\xff``; other text unchanged."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the file name's own bytes again
    except UnicodeEncodeError:  # a surrogate that stands for no byte: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.25 on short runs
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


def _loss_axis(ax_loss, histories: Sequence[Sequence[dict[str, Any]]]) -> None:
    """A log loss axis when every finite loss of ``histories`` is > 0: cross-entropy falls by
    decades (2.3 in the first epoch, 0.01 late; a test loss in the BN warm-up can exceed 1e5),
    and a linear axis flattens all but the largest. A zero loss (no logarithm) keeps it linear;
    non-finite ones (gaps) do not count."""
    losses = [row[f"{split}_loss"] for h in histories for row in h for split in ("train", "test")]
    finite = [v for v in losses if isinstance(v, (int, float)) and math.isfinite(v)]
    if finite and min(finite) > 0:
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("cross-entropy loss (log scale)")


def _save(plt, fig, path: str) -> None:
    """Write ``fig`` to ``path`` atomically, in the format of its suffix (``plot_format``)."""
    fmt = plot_format(path)
    make_parent(path)
    # The format is passed explicitly: the temporary name's own suffix must not choose it.
    tmp = temp_name(path)
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
    _loss_axis(ax_loss, [history])
    ax_acc.legend(["train", "test"])
    fig.suptitle(displayable(title))  # the title names the data's folder
    _save(plt, fig, path)


@dataclass(frozen=True)
class Run:
    """A run folder as the command shows it: ``folder`` as given, ``name`` telling it apart from
    the other runs shown (``run_names``), its ``metrics.csv`` rows and its ``summary.json`` (None
    without one)."""

    folder: str
    name: str
    history: list[dict[str, float]]
    summary: dict[str, Any] | None

    @property
    def summary_path(self) -> str:
        return os.path.join(self.folder, "summary.json")


def run_names(folders: Sequence[str]) -> list[str]:
    """Names that tell ``folders`` apart: each folder's own name, with as many of the folders
    above it as it takes where two different folders share a name (``a/lr0.1``, ``b/lr0.1``).
    The same folder given twice (a glob and its explicit path) gets ``#2``, ``#3``, ..."""
    # Absolute paths, so that "run" and "./run" are one folder and ".." never ends up in a name.
    parts = [os.path.abspath(folder).split(os.sep) for folder in folders]
    names = []
    for p in parts:
        k = 1  # ends at len(p) at the latest: only the root's empty part starts an absolute path
        while any(q != p and q[-k:] == p[-k:] for q in parts):
            k += 1
        names.append(displayable(os.sep.join(p[-k:]) or os.sep))
    repeats: dict[tuple[str, ...], int] = {}
    for i, p in enumerate(parts):
        repeats[tuple(p)] = n = repeats.get(tuple(p), 0) + 1
        if n > 1:
            names[i] = f"{names[i]} #{n}"
    return names


def read_summary(path: str) -> dict[str, Any]:
    """A ``summary.json`` as a dict. Raises ``RunFileError`` for a file that cannot be read, is no
    JSON or holds no JSON object. (Bare ``NaN``, which Python's json writes, is accepted.)"""
    try:
        with open(path) as f:
            summary = json.load(f)
    except OSError as err:
        raise RunFileError(f"{path}: could not read it ({err.strerror or err})") from err
    except ValueError as err:  # JSONDecodeError, or bytes that are no UTF-8
        raise RunFileError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(summary, dict):
        raise RunFileError(f"{path}: expected a JSON object, received {type(summary).__name__}")
    return summary


def load_runs(folders: Sequence[str]) -> list[Run]:
    """Read the run folders to show, named by ``run_names`` of those kept. A folder without
    ``metrics.csv``, or whose ``metrics.csv`` has no row yet, is skipped with a message on stderr;
    a file that cannot be read raises ``RunFileError``."""
    kept = []
    for folder in folders:
        metrics_path = os.path.join(folder, "metrics.csv")
        if not os.path.isfile(metrics_path):
            _skip(folder, _no_metrics(folder))
            continue
        history = read_csv(metrics_path)
        if not history:  # a header only: nothing to draw, and an empty figure would hide that
            _skip(folder, f"no completed epoch in metrics.csv {KILLED_EARLY}")
            continue
        summary_path = os.path.join(folder, "summary.json")
        summary = read_summary(summary_path) if os.path.isfile(summary_path) else None
        kept.append((folder, history, summary))
    names = run_names([folder for folder, _, _ in kept])
    return [Run(f, name, h, s) for (f, h, s), name in zip(kept, names)]


KILLED_EARLY = "(killed before its first epoch ended?)"


def _no_metrics(folder: str) -> str:
    """Why ``folder`` without ``metrics.csv`` is skipped: ``gpconv train`` writes ``run.json``
    when it starts, so without one the folder is no run at all (a typo, a wrong glob)."""
    if os.path.isfile(os.path.join(folder, "run.json")):
        return f"no metrics.csv {KILLED_EARLY}"
    return "no metrics.csv and no run.json: not a gpconv train run folder"


def _skip(folder: str, why: str) -> None:
    print(f"skipping {folder}: {why}", file=sys.stderr)


def _value(run: Run, key: str) -> Any:
    """The value of ``key`` (dotted: ``params.trainable``) in the run's ``summary.json``."""
    value: Any = run.summary
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise RunFileError(f"{run.summary_path}: no key {key}")
        value = value[part]
    return value


def _wrong(run: Run, key: str, expected: str, value: Any) -> RunFileError:
    return RunFileError(
        f"{run.summary_path}: expected {expected} for {key}, received {json.dumps(value)[:40]}"
    )


def _text(run: Run, key: str) -> str:
    value = _value(run, key)
    if not isinstance(value, str):
        raise _wrong(run, key, "a string", value)
    return value


def _count(run: Run, key: str, nullable: bool = False) -> int | None:
    value = _value(run, key)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(run, key, "an integer", value)
    return value


def _number(run: Run, key: str) -> float:
    """A number of the summary; ``null`` (how JSON writers store NaN) reads as NaN."""
    value = _value(run, key)
    if value is None:
        return math.nan
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _wrong(run, key, "a number or null", value)
    return float(value)


def _label(run: Run) -> str:
    """The legend's name of a run: its name, and its model and backend where it has a summary."""
    if run.summary is None:
        return run.name
    return f"{run.name}: {_text(run, 'arch')} ({_text(run, 'backend')})"


def runs_figure(runs: Sequence[Run], title: str = ""):
    """The figure ``plot_runs`` writes, as ``(pyplot, figure)``; close it with ``plt.close``."""
    labels = [_label(run) for run in runs]  # first: a bad summary.json leaves no figure open
    plt, fig, ax_loss, ax_acc = _figure()
    for i, (run, label) in enumerate(zip(runs, labels)):
        # NaN (a diverged run's loss) leaves a gap in its curve: matplotlib skips such points.
        _plot_history(ax_loss, ax_acc, run.history, label, color=f"C{i}")
    _loss_axis(ax_loss, [run.history for run in runs])
    ax_acc.legend(fontsize=8)
    fig.suptitle(displayable(title))
    return plt, fig


def plot_runs(runs: Sequence[Run], path: str, title: str = "") -> None:
    """Curves of several runs in one figure, labelled by each run's name, model and backend."""
    plt, fig = runs_figure(runs, title)
    _save(plt, fig, path)


def summary_table(runs: Sequence[Run]) -> str:
    """A Markdown table of runs with a ``summary.json``: size, final and best test accuracy,
    training throughput and wall time; NaN or null values read ``nan``."""
    lines = [
        "| run | model | backend | trainable params | epochs | final test acc | best test acc "
        "| train img/s (last epoch) | wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [_table_row(run) for run in runs])


def _table_row(run: Run) -> str:
    cells = [
        run.name,
        _text(run, "arch"),
        _text(run, "backend"),
        f"{_count(run, 'params.trainable'):,}",
        _epochs(run),
        _percent(_number(run, "final.test_acc")),
        _best(run),
        _fixed(_number(run, "train_images_per_s"), ".1f"),
        _fixed(_number(run, "seconds_total") / 60, ".1f", " min"),
    ]
    # A "|" in a folder's name would end its cell early.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _epochs(run: Run) -> str:
    """The epochs completed; ``"2 of 10 (running)"`` where the summary's status is not
    ``complete`` (still running, killed, or diverged), whose "final" accuracy is no final one."""
    done = str(_count(run, "epochs_completed"))
    if run.summary.get("status", "complete") == "complete":  # hand-made summaries may have none
        return done
    return f"{done} of {_count(run, 'epochs')} ({_text(run, 'status')})"


def _best(run: Run) -> str:
    """The best test accuracy and its epoch (null in a summary of a run without epochs)."""
    best = _percent(_number(run, "best_test_acc"))
    epoch = _count(run, "best_epoch", nullable=True)
    return best if epoch is None else f"{best} (epoch {epoch})"


def _fixed(value: float, spec: str, unit: str = "") -> str:
    """``value`` in format ``spec`` with its unit; a non-finite one as ``nan`` / ``inf``."""
    return f"{value:{spec}}{unit}" if math.isfinite(value) else str(value)


def _percent(fraction: float) -> str:
    return _fixed(100 * fraction, ".2f", "%")


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


def _with_summary(runs: Sequence[Run]) -> list[Run]:
    """The runs that have a ``summary.json``; the others are skipped with a message on stderr."""
    for run in runs:
        if run.summary is None:  # it has epochs: being killed early is no explanation
            _skip(run.folder, "no summary.json for --table")
    return [run for run in runs if run.summary is not None]


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 no run to show (for ``--table``: none with a ``summary.json``) or a
    file could not be written, 2 usage error or a run's file that cannot be read."""
    # The CLI's argparse type for path options, so -o "" is refused as `gpconv bench --plot ""`
    # is; imported here, as cli imports train (cli.main itself imports nothing heavy).
    from ..cli.main import nonempty_path

    parser = argparse.ArgumentParser(
        prog="python -m gpconv.train.metrics",
        description="Plot the curves of several training runs together and/or tabulate them.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        help="run folders, named by their folder's name in the legend and the table; one without "
        "a completed epoch in metrics.csv (killed before its first epoch ended) is skipped with a "
        "message, and a missing folder or a corrupt metrics.csv or summary.json is an error",
    )
    parser.add_argument(
        "-o",
        "--out",
        type=nonempty_path,
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
    # Everything is read (and the figure drawn) before anything is printed or written, so that a
    # corrupt file gives its error alone, not half a table or a figure without that run.
    try:
        runs = load_runs(args.runs)
        if not runs:
            print("error: no run with metrics.csv to show", file=sys.stderr)
            return 1
        tabulated = _with_summary(runs) if args.table else []
        table = summary_table(tabulated) if tabulated else None
        figure = runs_figure(runs, args.title) if args.out else None
    except RunFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    # The table first: it is printed even if the figure cannot be written after all.
    if table is not None:
        print(table)
    elif args.table:  # a header without rows would pass for a result; the figure still follows
        print("error: no run with summary.json to tabulate", file=sys.stderr)
        status = 1
    if figure is not None:
        try:
            _save(*figure, args.out)
        except OSError as err:
            print(f"error: could not write -o {args.out}: {err}", file=sys.stderr)
            return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
