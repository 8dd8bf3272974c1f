"""``gpconv.train.metrics``: values at the edges of what ``gpconv train`` writes: a perfect
accuracy, accuracies of a 10,000-image test set, a run that diverged in its first epoch (no best
epoch), and the table's wall time in minutes."""

from __future__ import annotations

import json

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


def test_the_table_gives_wall_time_in_minutes(tmp_path) -> None:
    """The wall-time column is labelled in minutes (" min"): 5,400 s is 90.0 min (not 1.5, the
    hours)."""
    run = _run_folder(tmp_path / "long", [_row(1)], _summary(seconds_total=5400.0))
    table = metrics.summary_table(metrics.load_runs([run]))
    assert _cells(table)["wall time"] == "90.0 min"
