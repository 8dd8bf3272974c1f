"""``gpconv.train.metrics``: values at the edges of what ``gpconv train`` writes and ``python -m
gpconv.train.metrics`` reads: a perfect accuracy, accuracies of a 10,000-image test set, a run that
diverged in its first epoch (no best epoch), the table's wall time in minutes and accuracies in
percent, integer epochs, booleans that are no counts, a summary that is no JSON object, the plot
format's suffix case, and each curve drawn from its own column."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpconv.train import metrics


def _row(epoch: int, **changes: float) -> dict[str, float]:
    row = {
        "epoch": epoch,
        "train_loss": 0.5,
        "train_acc": 0.8,
        "test_loss": 0.6,
        "test_acc": 0.75,
        "lr": 0.05,
        "seconds": 1.5,
    }
    return {**row, **changes}


def _summary(**changes) -> dict:
    summary = {
        "arch": "kefficientnet-b0",
        "backend": "numpy",
        "params": {"trainable": 1234},
        "epochs_completed": 1,
        "epochs": 1,
        "status": "complete",
        "final": {"test_acc": 0.75},
        "best_test_acc": 0.75,
        "best_epoch": 1,
        "train_images_per_s": 10.0,
        "seconds_total": 60.0,
    }
    return {**summary, **changes}


def _run_folder(folder, history: list[dict], summary: dict) -> str:
    folder.mkdir(parents=True)
    metrics.write_csv(str(folder / "metrics.csv"), history)
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def _cells(table: str) -> dict[str, str]:
    """The one data row of a Markdown table, by column header."""
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    return dict(zip(head, row))


def test_a_perfect_accuracy_is_a_row_gpconv_train_writes(tmp_path, capsys) -> None:
    """Accuracy is a fraction in [0, 1] (``read_csv`` refuses only values outside it): a model
    that classifies every image right (digits, a small ``--limit``) scores exactly 1.0, and its
    run must be read, drawn and tabulated like any other."""
    history = [_row(1, train_acc=0.9), _row(2, train_acc=1.0, test_acc=1.0)]
    run = _run_folder(tmp_path / "perfect", history, _summary())
    rows = metrics.read_csv(f"{run}/metrics.csv")
    assert [r["test_acc"] for r in rows] == [0.75, 1.0] and rows[1]["train_acc"] == 1.0
    assert metrics.main([run, "--table"]) == 0
    assert "perfect" in capsys.readouterr().out


def test_metrics_csv_keeps_the_accuracy_of_a_10000_image_test_set(tmp_path) -> None:
    """CIFAR-10's test set has 10,000 images, so its accuracy is a multiple of 1e-4 (4
    significant digits, 0.9123): ``metrics.csv`` must keep at least that, else two epochs one
    image apart read as equal. The learning rate of a cosine schedule (0.0499877) likewise."""
    history = [_row(1, test_acc=0.9123, train_acc=0.91234, lr=0.0499877)]
    path = str(tmp_path / "metrics.csv")
    metrics.write_csv(path, history)
    (row,) = metrics.read_csv(path)
    assert abs(row["test_acc"] - 0.9123) < 1e-9
    assert abs(row["train_acc"] - 0.91234) < 1e-9
    assert abs(row["lr"] - 0.0499877) < 1e-9


def test_a_run_diverged_in_its_first_epoch_is_tabulated_without_a_best_epoch(
    tmp_path, capsys
) -> None:
    """A run whose only epoch has a NaN train loss has no best epoch: its summary holds
    ``best_epoch: null`` and ``best_test_acc: null`` (how JSON writers store "none"/NaN). The
    table must show it (``nan``, no "(epoch ...)") with exit 0, not call its summary corrupt."""
    history = [_row(1, train_loss=float("nan"), test_loss=float("nan"), test_acc=0.1)]
    summary = _summary(
        status="diverged", epochs=5, best_test_acc=None, best_epoch=None, final={"test_acc": 0.1}
    )
    run = _run_folder(tmp_path / "diverged", history, summary)
    assert metrics.main([run, "--table"]) == 0
    cells = _cells(capsys.readouterr().out)
    assert cells["best test acc"] == "nan"
    assert cells["epochs"] == "1 of 5 (diverged)"


@pytest.mark.parametrize(
    "seconds, shown", [(5400.0, "90.0 min"), (math.inf, "inf"), (math.nan, "nan"), (None, "nan")]
)
def test_the_table_gives_wall_time_in_minutes(tmp_path, seconds, shown) -> None:
    """The wall-time column is labelled in minutes (" min"): 5,400 s is 90.0 min (not 1.5, the
    hours); a non-finite or missing one is shown bare, without a unit ("inf min" would read as a
    measured time)."""
    run = _run_folder(tmp_path / "long", [_row(1)], _summary(seconds_total=seconds))
    table = metrics.summary_table(metrics.load_runs([run]))
    assert _cells(table)["wall time"] == shown


def test_epochs_are_read_as_integers_and_a_fractional_epoch_is_refused(tmp_path) -> None:
    """``read_csv``: rows "as floats (``epoch`` as int)"; an epoch cell that is no integer
    ("1.0", "1.5": gpconv train writes "1") is a ``RunFileError`` naming file, line and column."""
    path = tmp_path / "metrics.csv"
    metrics.write_csv(str(path), [_row(1), _row(2)])
    rows = metrics.read_csv(str(path))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(type(r["epoch"]) is int for r in rows)
    for cell in ("1.0", "1.5"):
        path.write_text(f"{','.join(_row(1))}\n{cell},0.5,0.8,0.6,0.75,0.05,1.5\n")
        message = r"line 2: expected an integer in column epoch"
        with pytest.raises(metrics.RunFileError, match=message):
            metrics.read_csv(str(path))


@pytest.mark.parametrize("name, fmt", [("curves.PNG", "png"), ("a/b.Pdf", "pdf"), ("x.SVG", "svg")])
def test_plot_format_ignores_the_suffix_case(name, fmt) -> None:
    """``plot_format``: "its suffix, lower case" (matplotlib's savefig accepts upper-case
    suffixes); ``curves.PNG`` is a PNG, not a usage error."""
    assert metrics.plot_format(name) == fmt


def _lines(ax) -> dict[str, list[float]]:
    return {line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.get_lines()}


def test_each_curve_draws_its_own_column() -> None:
    """``runs_figure``: the loss panel draws ``train_loss`` as "NAME train" and ``test_loss`` as
    "NAME test", the accuracy panel likewise; a test curve showing the training values would hide
    over-fitting. The values are distinct per column, so any swap is seen."""
    history = [
        _row(1, train_loss=2.0, test_loss=3.0, train_acc=0.1, test_acc=0.2),
        _row(2, train_loss=1.0, test_loss=1.5, train_acc=0.4, test_acc=0.3),
    ]
    run = metrics.Run("r", "r", history, None)
    plt, fig = metrics.runs_figure([run])
    try:
        ax_loss, ax_acc = fig.axes[:2]
        assert _lines(ax_loss) == {"r train": [2.0, 1.0], "r test": [3.0, 1.5]}
        assert _lines(ax_acc) == {"r train": [0.1, 0.4], "r test": [0.2, 0.3]}
        assert [list(map(float, line.get_xdata())) for line in ax_loss.get_lines()] == [[1, 2]] * 2
    finally:
        plt.close(fig)


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ('"done"', "str"), ("3", "int")])
def test_a_summary_that_is_no_json_object_is_a_run_file_error(tmp_path, text, kind) -> None:
    """``read_summary``: a file holding "no JSON object" raises ``RunFileError`` naming the file
    and the type found, rather than a later "no key arch" about a list."""
    path = tmp_path / "summary.json"
    path.write_text(text)
    message = f"summary.json: expected a JSON object, received {kind}"
    with pytest.raises(metrics.RunFileError, match=message):
        metrics.read_summary(str(path))


@pytest.mark.parametrize("key", ["epochs_completed", "best_epoch"])
def test_a_boolean_is_no_count_in_the_table(key) -> None:
    """JSON ``true`` is no epoch count (Python's bool is an int subclass, which would print
    "True" or "1" as an epoch): a ``RunFileError`` naming the key, expected and received."""
    run = metrics.Run("r", "r", [_row(1)], _summary(**{key: True}))
    with pytest.raises(metrics.RunFileError, match=f"expected an integer for {key}, received true"):
        metrics.summary_table([run])


def test_the_table_gives_accuracies_in_percent() -> None:
    """``summary_table``: accuracies are fractions in summary.json and percentages (two
    decimals, "%") in the table: 0.75 -> 75.00%, 0.123456 -> 12.35%."""
    run = metrics.Run(
        "r",
        "r",
        [_row(1)],
        _summary(final={"test_acc": 0.75}, best_test_acc=0.123456, best_epoch=1),
    )
    cells = _cells(metrics.summary_table([run]))
    assert cells["final test acc"] == "75.00%"
    assert cells["best test acc"] == "12.35% (epoch 1)"


@pytest.mark.parametrize("kind", [float, np.float64, np.float32])
def test_metrics_csv_writes_every_float_kind_to_six_figures(tmp_path, kind) -> None:
    """A loss handed over as NumPy's float32 (no Python float) is written like a Python float,
    to 6 significant figures: 1/3 is "0.333333", not float32's "0.33333334"; epochs stay
    integers."""
    path = tmp_path / "metrics.csv"
    metrics.write_csv(str(path), [_row(np.int64(1), train_loss=kind(1 / 3))])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1].split(",")[:2] == ["1", "0.333333"]
