"""``python -m gpconv.train.metrics``: comparison figures and tables of run folders."""

from __future__ import annotations

import json

import pytest

from gpconv.train import metrics


def _run(folder, arch: str = "kefficientnet-b0", epochs: int = 2):
    """A finished run folder with the files the command reads: ``metrics.csv`` (written by the
    trainer's own writer) and ``summary.json`` (the keys of ``summary_table``)."""
    folder.mkdir(parents=True)
    history = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": 0.4 + 0.1 * e,
            "test_loss": 2.2 / e,
            "test_acc": 0.3 + 0.1 * e,
            "lr": 0.05,
            "seconds": 1.5,
        }
        for e in range(1, epochs + 1)
    ]
    metrics.write_csv(str(folder / "metrics.csv"), history)
    summary = {
        "arch": arch,
        "backend": "numpy",
        "params": {"trainable": 1234},
        "epochs_completed": epochs,
        "final": {"test_acc": history[-1]["test_acc"]},
        "best_test_acc": history[-1]["test_acc"],
        "best_epoch": epochs,
        "train_images_per_s": 10.0,
        "seconds_total": 60.0,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def _killed_in_epoch_1(folder):
    """A run killed before its first epoch ended: only ``run.json``."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    return str(folder)


def _exit_code(argv: list[str]) -> int:
    """The exit status of the command, whether ``main`` returns it or argparse exits."""
    try:
        return metrics.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    "suffix, magic", [("pdf", b"%PDF"), ("svg", b"<?xml"), ("png", b"\x89PNG")]
)
def test_out_is_written_in_the_format_of_its_suffix(suffix, magic, tmp_path):
    run, out = _run(tmp_path / "a"), tmp_path / f"curves.{suffix}"
    assert metrics.main([run, "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [out.name]  # no temp file left


def test_unsupported_out_suffix_exits_2_and_writes_nothing(tmp_path, capsys):
    run, out = _run(tmp_path / "a"), tmp_path / "curves.txt"
    assert _exit_code([run, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "-o" in err and str(out) in err and ".pdf" in err
    assert not out.exists()


def test_missing_run_folder_exits_2_naming_it(tmp_path, capsys):
    missing = str(tmp_path / "nonexist")
    assert _exit_code([missing, "--table"]) == 2
    assert missing in capsys.readouterr().err


def test_run_without_metrics_is_skipped_with_a_message(tmp_path, capsys):
    good, killed = _run(tmp_path / "a"), _killed_in_epoch_1(tmp_path / "b")
    out = tmp_path / "both.png"
    assert metrics.main([good, killed, "-o", str(out), "--table"]) == 0
    captured = capsys.readouterr()
    assert f"skipping {killed}: no metrics.csv" in captured.err
    assert captured.out.count("| kefficientnet-b0 | numpy |") == 1
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_no_run_with_metrics_exits_1(tmp_path, capsys):
    killed = _killed_in_epoch_1(tmp_path / "b")
    assert _exit_code([killed, "--table"]) == 1
    assert "no run with metrics.csv" in capsys.readouterr().err


def test_out_or_table_is_required(tmp_path, capsys):
    assert _exit_code([_run(tmp_path / "a")]) == 2
    assert "-o" in capsys.readouterr().err


def test_missing_out_folder_is_created(tmp_path):
    out = tmp_path / "new" / "sub" / "curves.png"
    assert metrics.main([_run(tmp_path / "a"), "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_out_under_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    out = str(tmp_path / "afile" / "curves.png")
    assert _exit_code([_run(tmp_path / "a"), "-o", out]) == 2
    err = capsys.readouterr().err
    assert out in err and "is a file" in err
