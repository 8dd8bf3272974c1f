"""The ``gpconv`` console script: exit codes, tables and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
        ["check", "--quick", "--full"],
        ["summary", "--model", "resnet50"],
        ["summary", "--classes", "0"],
        ["summary", "--min-channels-per-group", "0", "--model", "kefficientnet-b0"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert "error" in capsys.readouterr().err


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
