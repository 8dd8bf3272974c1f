"""``python -m gpconv.train.metrics``: comparison figures and tables of run folders."""

from __future__ import annotations

import json
import math
import os

import pytest

from gpconv.train import metrics


def _run(folder, arch: str = "kefficientnet-b0", epochs: int = 2, lr: float = 0.05):
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
            "lr": lr,
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


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures the command saves, recorded as it saves them."""
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        saved.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return saved


def _legend(fig) -> list[str]:
    """The texts of every legend in ``fig``."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _table(out: str) -> list[dict[str, str]]:
    """The body rows of the Markdown table printed as ``out``, as {column header: cell}."""
    header, _, *body = ([c.strip() for c in line[1:-1].split(" | ")] for line in out.splitlines())
    return [dict(zip(header, row, strict=True)) for row in body]


def _edit_summary(run: str, **changes) -> None:
    """Change top-level keys of a run's ``summary.json``."""
    path = f"{run}/summary.json"
    with open(path) as f:
        summary = json.load(f)
    summary.update(changes)
    with open(path, "w") as f:
        json.dump(summary, f)


def _only_error_line(err: str) -> str:
    """The one line the command writes on stderr for a bad file (no traceback, no usage)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- runs of one model and backend are told apart -------------------------------------------


def test_runs_of_one_model_are_named_in_legend_and_table(tmp_path, saved_figures, capsys):
    runs = [
        _run(tmp_path / "x" / "lr0.1", lr=0.1),
        _run(tmp_path / "y" / "lr0.1", lr=0.1, epochs=3),  # the same basename: the parent tells
        _run(tmp_path / "lr0.2", lr=0.2),
    ]
    out = tmp_path / "all.png"
    assert metrics.main([*runs, "-o", str(out), "--table"]) == 0
    names = ["x/lr0.1", "y/lr0.1", "lr0.2"]
    assert _legend(saved_figures[0]) == [
        f"{name}: kefficientnet-b0 (numpy) {split}" for name in names for split in ("train", "test")
    ]
    table = capsys.readouterr().out
    assert table.startswith("| run | model | backend |")
    assert [(row["run"], row["model"], row["backend"]) for row in _table(table)] == [
        (name, "kefficientnet-b0", "numpy") for name in names
    ]


def test_single_run_is_named_by_its_folder(tmp_path, saved_figures, capsys):
    run = _run(tmp_path / "deep" / "path" / "digits-keff")
    assert metrics.main([run, "-o", str(tmp_path / "one.png"), "--table"]) == 0
    assert _legend(saved_figures[0]) == [
        "digits-keff: kefficientnet-b0 (numpy) train",
        "digits-keff: kefficientnet-b0 (numpy) test",
    ]
    (row,) = _table(capsys.readouterr().out)
    assert row["run"] == "digits-keff" and row["model"] == "kefficientnet-b0"


def test_folder_names_that_are_no_utf8_are_drawn_and_printed_escaped(tmp_path, capsys):
    # os.listdir / argv decode such bytes to lone surrogates, which matplotlib refused with a
    # TypeError (in `gpconv train` too: curves.png's title names the data folder) and a strict
    # UTF-8 stdout with a UnicodeEncodeError.
    run = _run(tmp_path / os.fsdecode(b"run-\xff"))
    out = tmp_path / "both.png"
    assert metrics.main([run, "-o", str(out), "--title", os.fsdecode(b"t\xfe"), "--table"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    table = capsys.readouterr().out
    assert [row["run"] for row in _table(table)] == ["run-\\xff"]
    table.encode("utf-8")  # strict: no surrogate left
    curves = tmp_path / "curves.png"
    history = metrics.read_csv(f"{run}/metrics.csv")
    metrics.plot_curves(str(curves), history, os.fsdecode(b"on folder:/data/\xff, 8x8"))
    assert curves.read_bytes().startswith(b"\x89PNG")


def test_same_run_given_twice_is_numbered(tmp_path, capsys):
    run = _run(tmp_path / "a")
    assert metrics.main([run, f"{run}/", "--table"]) == 0
    assert [row["run"] for row in _table(capsys.readouterr().out)] == ["a", "a #2"]


# --- bad input: one line naming the file, exit 2, nothing written -----------------------------


@pytest.mark.parametrize("output", [["--table"], ["-o", "out.png"], ["--table", "-o", "out.png"]])
def test_corrupt_summary_exits_2_naming_it(output, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good, bad = _run(tmp_path / "a"), _run(tmp_path / "b")
    (tmp_path / "b" / "summary.json").write_text("{bad\n")
    assert _exit_code([good, bad, *output]) == 2
    captured = capsys.readouterr()
    line = _only_error_line(captured.err)
    assert f"{bad}/summary.json" in line and "not valid JSON" in line
    assert captured.out == "" and not (tmp_path / "out.png").exists()


def test_summary_with_missing_key_exits_2_naming_it(tmp_path, capsys):
    run = _run(tmp_path / "a")
    with open(f"{run}/summary.json", "w") as f:
        json.dump({"backend": "numpy"}, f)
    assert _exit_code([run, "--table"]) == 2
    line = _only_error_line(capsys.readouterr().err)
    assert f"{run}/summary.json" in line and "arch" in line


@pytest.mark.parametrize("output", [["--table"], ["-o", "out.png"]])
def test_empty_metrics_cell_exits_2_naming_file_line_and_column(
    output, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path / "a")
    path = tmp_path / "a" / "metrics.csv"
    header, first, *rest = path.read_text().splitlines()
    cells = first.split(",")
    cells[header.split(",").index("test_loss")] = ""
    path.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    assert _exit_code([run, *output]) == 2
    captured = capsys.readouterr()
    line = _only_error_line(captured.err)
    assert f"{run}/metrics.csv" in line and "line 2" in line and "test_loss" in line
    assert captured.out == "" and not (tmp_path / "out.png").exists()


def test_short_metrics_row_exits_2(tmp_path, capsys):
    run = _run(tmp_path / "a")
    with open(f"{run}/metrics.csv", "a") as f:
        f.write("3,0.5,0.6\n")
    assert _exit_code([run, "--table"]) == 2
    line = _only_error_line(capsys.readouterr().err)
    assert f"{run}/metrics.csv" in line and "line 4" in line and "received 3" in line


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cells: cells.__setitem__(0, "1"), "line 3: expected epoch 2 (rows count epochs"),
        (lambda cells: cells.__setitem__(0, "3"), "line 3: expected epoch 2"),
        (lambda cells: cells.__setitem__(2, "5"), "line 3: expected train_acc in [0, 1] or nan"),
        (lambda cells: cells.__setitem__(4, "-0.5"), "expected test_acc in [0, 1] or nan"),
    ],
)
def test_rows_gpconv_train_never_writes_exit_2(tmp_path, capsys, edit, message):
    """Epochs out of order or repeated, accuracies of 5 or -0.5: curves and a table were drawn
    from them (a zig-zag, "2 epochs" for a repeated one) with no word."""
    run = _run(tmp_path / "a")
    path = tmp_path / "a" / "metrics.csv"
    header, first, second = path.read_text().splitlines()
    cells = second.split(",")
    edit(cells)
    path.write_text("\n".join([header, first, ",".join(cells)]) + "\n")
    assert _exit_code([run, "--table"]) == 2
    line = _only_error_line(capsys.readouterr().err)
    assert f"{run}/metrics.csv" in line and message in line, line


def test_nan_accuracies_are_rows_gpconv_train_writes(tmp_path, capsys):
    run = _run(tmp_path / "a")
    path = tmp_path / "a" / "metrics.csv"
    header, first, second = path.read_text().splitlines()
    cells = second.split(",")
    cells[4] = "nan"
    path.write_text("\n".join([header, first, ",".join(cells)]) + "\n")
    assert _exit_code([run, "--table"]) == 0


def _no_epoch(folder) -> str:
    """A run whose ``metrics.csv`` has its header line only."""
    run = _run(folder)
    metrics.write_csv(f"{run}/metrics.csv", [])
    return run


def test_run_without_completed_epoch_is_skipped_and_writes_nothing(tmp_path, capsys):
    run, out = _no_epoch(tmp_path / "a"), tmp_path / "none.png"
    assert _exit_code([run, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"skipping {run}: no completed epoch in metrics.csv" in err
    assert not out.exists()


def test_run_without_completed_epoch_is_left_out_of_the_figure(tmp_path, saved_figures):
    good, empty = _run(tmp_path / "a"), _no_epoch(tmp_path / "b")
    assert metrics.main([good, empty, "-o", str(tmp_path / "one.png")]) == 0
    legend = _legend(saved_figures[0])  # the empty run has no curves, so no legend entries
    assert len(legend) == 2 and all(text.startswith("a: ") for text in legend)


# --- non-finite values of a diverged run are data --------------------------------------------


def _diverged(folder, summary_nan) -> str:
    """A run whose losses went NaN from epoch 2 on; its summary holds ``summary_nan`` where a
    writer stores NaN (Python's bare ``NaN``, or ``null``)."""
    run = _run(folder, epochs=3)
    rows = metrics.read_csv(f"{run}/metrics.csv")
    for row in rows[1:]:
        row["train_loss"] = row["test_loss"] = math.nan
    rows[2]["test_acc"] = math.nan
    metrics.write_csv(f"{run}/metrics.csv", rows)
    _edit_summary(
        run,
        final={"train_loss": summary_nan, "test_loss": summary_nan, "test_acc": summary_nan},
        best_test_acc=summary_nan,
        train_images_per_s=summary_nan,
    )
    return run


@pytest.mark.parametrize("summary_nan", [math.nan, None], ids=["NaN", "null"])
def test_diverged_run_is_plotted_with_gaps_and_tabulated_as_nan(
    summary_nan, tmp_path, saved_figures, capsys
):
    run = _diverged(tmp_path / "a", summary_nan)
    out = tmp_path / "diverged.png"
    assert metrics.main([run, "-o", str(out), "--table"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    loss_train = saved_figures[0].axes[0].get_lines()[0]  # drawn first: the gap is NaN
    assert loss_train.get_ydata()[0] == 2.0 and all(map(math.isnan, loss_train.get_ydata()[1:]))
    (row,) = _table(capsys.readouterr().out)
    assert row["final test acc"] == "nan" and row["train img/s (last epoch)"] == "nan"
    assert row["best test acc"] == "nan (epoch 3)"


def test_none_in_history_is_written_and_read_back_as_nan(tmp_path):
    history = [dict(epoch=1, train_loss=None, train_acc=0.5, test_loss=math.nan, test_acc=0.5)]
    history[0].update(lr=0.05, seconds=1.0)
    path = str(tmp_path / "metrics.csv")
    metrics.write_csv(path, history)
    (row,) = metrics.read_csv(path)
    assert math.isnan(row["train_loss"]) and math.isnan(row["test_loss"])
    assert row["epoch"] == 1 and row["test_acc"] == 0.5


def test_unfinished_run_shows_its_epochs_of_the_planned(tmp_path, capsys):
    """A killed (or diverged) run's table row said "2" epochs, as a finished 2-epoch run's does,
    next to its last accuracy under "final test acc"."""
    done, killed = _run(tmp_path / "done"), _run(tmp_path / "killed")
    _edit_summary(done, status="complete", epochs=2)
    _edit_summary(killed, status="running", epochs=10)
    assert metrics.main([done, killed, "--table"]) == 0
    rows = _table(capsys.readouterr().out)
    assert [row["epochs"] for row in rows] == ["2", "2 of 10 (running)"]


def test_skip_messages_give_each_folder_its_own_reason(tmp_path, capsys):
    """Every skipped folder was said to be "killed before its first epoch ended?": also one
    that is no run (no run.json) and a run with epochs but no summary.json."""
    stray, no_summary = tmp_path / "notes", _run(tmp_path / "nosum")
    stray.mkdir()
    (tmp_path / "nosum" / "summary.json").unlink()
    killed = _killed_in_epoch_1(tmp_path / "killed")
    assert metrics.main([_run(tmp_path / "a"), str(stray), no_summary, killed, "--table"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"skipping {stray}: no metrics.csv and no run.json: not a gpconv train run folder",
        f"skipping {killed}: no metrics.csv (killed before its first epoch ended?)",
        f"skipping {no_summary}: no summary.json for --table",
    ]


def test_epoch_axes_have_whole_epochs_only(tmp_path, saved_figures):
    assert metrics.main([_run(tmp_path / "a", epochs=3), "-o", str(tmp_path / "a.png")]) == 0
    for ax in saved_figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1, 2, 3], f"{ax.get_title()}: x ticks {ticks}"


def test_table_without_any_summary_exits_1_and_still_draws_the_figure(tmp_path, capsys):
    """--table printed a header without rows and exited 0 when no run had a summary.json."""
    run, out = _run(tmp_path / "a"), tmp_path / "a.png"
    (tmp_path / "a" / "summary.json").unlink()
    assert metrics.main([run, "--table", "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no run with summary.json to tabulate" in captured.err
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "last_loss, scale", [(0.01, "log"), (0.0, "linear")], ids=["positive", "zero"]
)
def test_loss_axis_is_logarithmic_when_every_loss_is_positive(
    last_loss, scale, tmp_path, saved_figures
):
    """Losses from 2.3 to 0.01 on a linear axis left every epoch but the first on the floor; a
    zero loss has no logarithm, and a diverged run's NaN is a gap, not a reason to stay linear."""
    run = _run(tmp_path / "a", epochs=3)
    rows = metrics.read_csv(f"{run}/metrics.csv")
    rows[0]["train_loss"], rows[1]["test_loss"], rows[2]["test_loss"] = 2.3, math.nan, last_loss
    metrics.write_csv(f"{run}/metrics.csv", rows)
    assert metrics.main([run, "-o", str(tmp_path / "runs.png")]) == 0
    metrics.plot_curves(str(tmp_path / "curves.png"), rows)  # a run's own curves.png
    assert len(saved_figures) == 2
    for fig in saved_figures:
        loss_ax = fig.axes[0]
        assert (loss_ax.get_title(), loss_ax.get_yscale()) == ("loss", scale)


@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_out_path_is_a_usage_error(out, tmp_path, capsys):
    """``-o ""`` (an unset variable in ``-o "$OUT"``) was taken as ``-o`` left out: with
    ``--table`` the table was printed, no figure written, exit 0. It is refused as the
    ``gpconv`` commands refuse an empty path, by ``cli.main.nonempty_path``."""
    run = _run(tmp_path / "a")
    assert _exit_code([run, "-o", out, "--table"]) == 2
    captured = capsys.readouterr()
    assert f"argument -o/--out: expected a path, received {out!r}" in captured.err
    assert captured.out == "", "nothing is printed before the usage error"
