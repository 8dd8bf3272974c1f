"""The ``gpconv`` console script: exit codes, tables and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import one_row_report

from gpconv import __version__
from gpconv.cli.main import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 2


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "gpconv.cli", "summary", "--paper"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "639,702" in out.stdout


def test_check_reference_passes_and_prints_a_table(capsys):
    assert main(["check", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "finite-difference gradient" in out and "golden" in out and "all checks passed" in out


def test_check_json_schema(capsys):
    assert main(["check", "--backend", "numpy", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "gpconv-check/1" and report["passed"] is True
    assert set(report) >= {"version", "mode", "seed", "seconds", "backends", "results"}
    row = report["results"][0]
    assert set(row) == {
        "backend",
        "check",
        "layer",
        "config",
        "error",
        "tolerance",
        "status",
        "detail",
        "passed",
    }


def test_check_json_to_file_keeps_the_table(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["check", "--backend", "numpy", "--json", str(path)]) == 0
    assert "all checks passed" in capsys.readouterr().out
    assert json.loads(path.read_text())["passed"] is True


def test_check_fails_on_a_mutant_and_names_the_layer(capsys):
    code = main(["check", "--backend", "gpconv.conformance.mutants:TOP_ACTIVATION"])
    out = capsys.readouterr().out
    assert code == 1
    assert "first diverging layer top" in out
    assert "--backend gpconv.conformance.mutants:TOP_ACTIVATION" in out  # the reproduce line


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--backend", "nosuch"],
        ["check", "--backend", "nosuch.module:THING"],
        ["summary", "--paper", "--model", "efficientnet-b0"],  # --model used to be ignored
        ["summary", "--paper", "--classes", "100"],
        ["check", "--quick", "--full"],
        ["summary", "--model", "resnet50"],
        ["summary", "--classes", "0"],
        ["summary", "--min-channels-per-group", "0", "--model", "kefficientnet-b0"],
        ["summary", "--image-size", "0", "--json"],  # was a 224x224 report
        ["summary", "--image-size", "5"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "--classes", "0"], "Expected --classes >= 1, received 0"),
        (["summary", "--skip-stride", "-2"], "Expected --skip-stride >= -1, received -2"),
        (
            ["summary", "--min-channels-per-group", "0"],
            "Expected --min-channels-per-group >= 1, received 0",
        ),
        (  # EfficientNet has no groups: the flag used to be ignored, printing the dense table
            ["summary", "--model", "efficientnet-b0", "--min-channels-per-group", "32"],
            "--min-channels-per-group applies to kefficientnet models only; received --model "
            "efficientnet-b0 --min-channels-per-group 32",
        ),
        (["check", "--seed", "-1"], "Expected --seed >= 0, received -1"),
        (["check", "--backend", ":x"], "unknown backend ':x'"),  # was "Empty module name"
        (["bench", "--threads", "0"], "Expected --threads >= 1, received 0"),
        # 4096 threads on 2 CPUs: a one-step torch run did not end in 2 minutes (16 s with 1);
        # an unwritable --json stops the old code there, instead of measuring for minutes
        (
            ["bench", "--threads", "4096", "--json", os.path.join(os.devnull, "x.json")],
            "the CPUs this process may use), received 4096",
        ),
        (
            ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--out", os.devnull]
            + ["--threads", "4096"],
            "Expected --threads <= ",
        ),
    ],
)
def test_usage_errors_name_the_flag(argv, message, capsys):
    """They used to name the Python parameter (``num_classes``) or say nothing of the value."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "model, value, message",
    [  # gpconv train ignored the flag with EfficientNet too, and trained the ungrouped network
        ("efficientnet-b0", "32", "--min-channels-per-group applies to kefficientnet models only"),
        ("kefficientnet-b0", "0", "Expected --min-channels-per-group >= 1, received 0"),
    ],
)
def test_train_refuses_a_group_minimum_it_cannot_use(model, value, message, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--backend", "numpy", "--model", model, "--min-channels-per-group", value]
    argv += ["--out", str(out), "--epochs", "1", "--limit", "4", "--quiet"]  # fails fast if not
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_summary_matches_the_paper(capsys):
    assert main(["summary", "--paper"]) == 0
    out = capsys.readouterr().out
    assert out.count("| yes |") == 6 and "NO" not in out


def test_summary_table_and_json(capsys):
    args = [
        "summary",
        "--model",
        "kefficientnet-b0",
        "--min-channels-per-group",
        "16",
        "--classes",
        "10",
        "--image-size",
        "32",
        "--skip-stride",
        "3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Trainable params: 639,702" in out and "MACs (conv + dense): 81,153,588" in out
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["trainable"], data["non_trainable"], data["macs"]) == (639_702, 45_632, 81_153_588)
    assert data["layers"][-1]["name"] == "predictions" and data["layers"][-4]["output_shape"] == [
        8,
        8,
        1280,
    ]


def test_check_of_a_requested_backend_that_is_not_installed_exits_2(monkeypatch, capsys):
    """Named with --backend, a missing framework is a usage error (as in ``gpconv bench``), not
    "all checks passed" over no checks."""
    from gpconv.backends import get

    monkeypatch.setattr(type(get("cupy")), "is_available", lambda self: False)
    for extra in ([], ["--json"]):
        assert main(["check", "--backend", "cupy", *extra]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert "backend 'cupy'" in err and "pip install 'gpconv[cupy]'" in err


def test_check_rejects_a_bad_backend_before_checking_the_others(monkeypatch, capsys):
    from gpconv.conformance import runner

    ran = []
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: ran.append("selfcheck") or [])
    monkeypatch.setattr(runner, "check_golden", lambda *a: ran.append("golden") or [])
    assert main(["check", "--backend", "numpy", "--backend", "typo.mod:X"]) == 2
    assert ran == []
    err = capsys.readouterr().err
    assert "typo.mod:X" in err and len(err.strip().splitlines()) == 1, err


def test_check_refuses_an_unwritable_json_path_before_checking(monkeypatch, capsys, tmp_path):
    """It used to run every check (a minute or more) and then fail with a traceback."""
    from gpconv.conformance import runner

    ran = []
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: ran.append("selfcheck") or [])
    assert main(["check", "--backend", "numpy", "--json", str(tmp_path)]) == 2
    assert ran == []
    assert "Expected --json FILE in a writable folder" in capsys.readouterr().err


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # wrapping depends on the terminal


def test_train_help_states_true_defaults(capsys):
    out = _help(["train"], capsys)
    assert "(default: None)" not in out  # required options have none; the others say it in words
    # sync BN is the default: the default stands next to --sync-bn, not a lone --no-sync-bn
    sync = out[out.index("--sync-bn, --no-sync-bn") : out.index("--limit LIMIT ")]
    assert "over all processes" in sync and sync.rstrip().endswith("(default: True)"), sync
    assert "--lr LR base learning rate (default: sgd 0.05, adam 1e-3)" in out
    assert "(default: 64)" in out  # the other defaults are still shown


@pytest.mark.parametrize(
    "flags, sync_bn", [([], True), (["--sync-bn"], True), (["--no-sync-bn"], False)]
)
def test_train_sync_bn_flags(flags, sync_bn):
    from gpconv.cli.main import build_parser

    required = ["--backend", "torch", "--model", "kefficientnet-b0", "--out", "runs/x"]
    assert build_parser().parse_args(["train", *required, *flags]).sync_bn is sync_bn


@pytest.mark.parametrize(
    "argv, unbuffered",
    [
        (["summary", "--paper"], False),
        (["summary", "--paper"], True),  # the first print itself fails
        (["summary", "--model", "efficientnet-b7"], False),
        (["train", "--help"], False),  # argparse's output, flushed as it exits
    ],
)
def test_closed_stdout_ends_quietly(argv, unbuffered):
    """``gpconv summary | head -3``: the reader goes away; no BrokenPipeError traceback, and a
    nonzero status as the Python docs' pattern gives (1). The pipe's read end is closed before
    the command starts, so every write fails, deterministically."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "gpconv.cli", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        os.close(write)
    assert run.stderr == "" and run.returncode == 1, (run.returncode, run.stderr[-2000:])


def test_train_says_it_stopped_when_its_stdout_closes(monkeypatch, tmp_path, capsys):
    """``gpconv train | head -1``: the run stops at its next print with status 1, as any
    command does, and says so on stderr (it stopped without a word)."""
    from gpconv.train import run as run_module

    def reader_goes_away(cfg, dist):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(run_module, "train", reader_goes_away)
    argv = ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    assert "gpconv train: stopped: stdout was closed; run files in" in capsys.readouterr().err


def test_train_reports_a_non_finite_test_loss_as_nan(monkeypatch, tmp_path, capsys):
    """A run whose training loss stays finite but whose test loss overflows completes, and its
    summary.json stores that loss as null: the closing line crashed with a TypeError traceback
    (formatting None) after every file had been written, exit 1."""
    from gpconv.train import run as run_module

    def completes_with_a_nan_test_loss(cfg, dist):
        final = {"train_loss": 3.7e177, "train_acc": 0.22, "test_loss": None, "test_acc": 0.03}
        return {"final": final, "epochs_completed": 2, "seconds_total": 1.5}

    monkeypatch.setattr(run_module, "train", completes_with_a_nan_test_loss)
    argv = ["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert "gpconv train: done: test acc 0.0300, test loss nan after 2 epochs" in (
        capsys.readouterr().out
    )


def test_check_help_lists_every_backends_implementations():
    """``IMPLS_HELP`` is written out so that --help need not import TensorFlow."""
    from gpconv.backends import get, names
    from gpconv.cli.check import IMPLS_HELP

    listed = {
        name: tuple(impl.strip() for impl in impls.split(","))
        for name, impls in (part.split(": ") for part in IMPLS_HELP.split("; "))
    }
    assert listed == {b.name: b.impls for b in map(get, names()) if b.impls}


def test_check_impl_usage_errors_exit_2(capsys):
    assert main(["check", "--backend", "numpy", "--impl", "matmul"]) == 2
    assert "received --impl matmul" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["bench", "--json", ""], "--json"),
        (["bench", "--plot", ""], "--plot"),
        (["check", "--json", ""], "--json"),
        (["train", "--backend", "numpy", "--model", "kefficientnet-b0", "--out", " "], "--out"),
    ],
    ids=["bench --json", "bench --plot", "check --json", "train --out"],
)
def test_an_empty_path_is_a_usage_error_before_any_work(argv, flag, monkeypatch, capsys):
    """``--json ""`` (an unset variable in ``--json "$OUT"``) read as the option left out: bench
    measured everything and wrote no file, exit 0; check said 'received :  is a folder'."""
    import importlib

    ran = []
    command = importlib.import_module(f"gpconv.cli.{argv[0]}")
    monkeypatch.setattr(command, "run", lambda args: ran.append(args) or 0)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and ran == []
    assert f"argument {flag}: expected a path, received '" in capsys.readouterr().err


# --- exit codes: 0 only when everything passed and every file asked for was written ------------


@pytest.mark.parametrize("output", [["--json"], ["--json", "-"], []])
def test_check_exits_1_when_a_row_failed_whatever_the_output(monkeypatch, capsys, output):
    """Scripts reading `gpconv check --json` rely on its exit code: nothing tested it on a
    failing report."""
    from gpconv.conformance import runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: one_row_report("fail"))
    assert main(["check", *output]) == 1
    failed = capsys.readouterr().out
    monkeypatch.setattr(runner, "run", lambda *a, **k: one_row_report("pass"))
    assert main(["check", *output]) == 0
    if output == ["--json", "-"]:  # stdout is the report, and it says what the exit code says
        assert json.loads(failed)["passed"] is False
        assert json.loads(capsys.readouterr().out)["passed"] is True


def test_check_exits_1_when_its_json_file_cannot_be_written(monkeypatch, tmp_path, capsys):
    from gpconv.conformance import runner
    from gpconv.perf import report

    def fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "run", lambda *a, **k: one_row_report("pass"))
    monkeypatch.setattr(report, "write_json", fails)
    assert main(["check", "--json", str(tmp_path / "r.json")]) == 1
    assert "No space left on device" in capsys.readouterr().err


def test_summary_paper_exits_1_when_a_row_does_not_match(monkeypatch, capsys):
    from gpconv.cli import summary

    rows = summary.paper_rows()
    assert main(["summary", "--paper", "--json"]) == 0
    monkeypatch.setattr(summary, "paper_rows", lambda: [*rows[:-1], {**rows[-1], "match": False}])
    assert main(["summary", "--paper", "--json"]) == 1
