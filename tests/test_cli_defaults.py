"""``gpconv summary`` / ``check`` / the benchmark scripts and the shared helpers of cli/main.py:
defaults and option handling that the other CLI tests leave open (each test names the change it
catches); ``gpconv check``'s conformance run is replaced by a recorder where only its arguments
matter."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from helpers import one_row_report

from gpconv.cli.main import (
    add_benchmark_options,
    benchmark_threads,
    main,
    write_output,
)
from gpconv.conformance import runner


@pytest.fixture
def recorded_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The arguments of each conformance run ``gpconv check`` starts (nothing is checked: each
    run reports one passed row, at the seed it was given)."""
    calls = []

    def record(backend_names=None, full=False, seed=0, impls=None):
        calls.append({"backends": backend_names, "full": full, "seed": seed, "impls": impls})
        return one_row_report("pass", seed)

    monkeypatch.setattr(runner, "run", record)
    return calls


def _summary_json(capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    assert main(["summary", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_without_options_is_kefficientnet_b0_16ch_10_classes_at_224(capsys) -> None:
    """``gpconv summary`` alone is kEffNet-B0 16ch with 10 classes, no skipped strides, at the
    variant's 224 px (its --help: defaults kefficientnet-b0, 16, 10, skip -1). The figures are
    the paper's (docs: DESIGN.md "Published numbers"): 639,702 trainable, 45,632 non-trainable,
    and 123,613,524 conv+dense MACs at 224x224 without skip. Any other default model, group
    minimum, class count or skip_stride_cnt changes one of them; the JSON must also name the
    size used (224, not null) and the network (with its group minimum)."""
    data = _summary_json(capsys)
    assert data["model"] == "kefficientnet-b0-16ch"
    assert data["classes"] == 10
    assert data["skip_stride_cnt"] == -1
    assert data["image_size"] == 224
    assert (data["trainable"], data["non_trainable"]) == (639_702, 45_632)
    assert data["macs"] == 123_613_524


def test_summary_json_names_the_model_with_its_group_minimum(capsys) -> None:
    """Two runs with --min-channels-per-group 16 and 32 describe different networks (639,702 vs
    1,059,202 trainable, DESIGN.md): the JSON's "model" must tell them apart, not echo the
    --model flag, which is the same for both."""
    sixteen = _summary_json(capsys, "--model", "kefficientnet-b0", "--min-channels-per-group", "16")
    thirty_two = _summary_json(
        capsys, "--model", "kefficientnet-b0", "--min-channels-per-group", "32"
    )
    assert sixteen["model"] != thirty_two["model"]
    assert "32" in thirty_two["model"] and thirty_two["trainable"] == 1_059_202


def test_summary_paper_refuses_image_size_it_would_ignore(capsys) -> None:
    """``--paper`` prints the paper's fixed table (parameter counts do not depend on the input
    size): an ``--image-size`` with it would be silently ignored, so it is a usage error like the
    other per-model options (--model, --classes are refused the same way)."""
    assert main(["summary", "--paper", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--image-size" in err


def test_check_json_to_stdout_is_one_document_whatever_a_file_named_dash_is(
    recorded_runs, tmp_path, monkeypatch, capsys
) -> None:
    """``gpconv check --json`` (no PATH) writes the report to stdout: no file is written, so
    whatever "-" is in the working folder (here a folder of that name) must not turn it into a
    usage error. stdout is exactly one JSON document ended by a newline (``| jq``, ``> r.json``:
    no table, no prompt glued to the closing brace)."""
    (tmp_path / "-").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("}\n") and not out.endswith("\n\n")
    assert json.loads(out)["passed"] is True


def test_benchmark_threads_zero_means_the_library_default() -> None:
    """The benchmark scripts' ``--threads 0`` is documented as "0: its default" (and 0 is the
    option's default): it must parse to 0, not be refused; negatives are refused."""
    assert benchmark_threads("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        benchmark_threads("-1")


def test_ctrl_c_hints_resume_only_for_the_train_command(monkeypatch, capsys) -> None:
    """The "continues with --resume" hint is about ``gpconv train``: a check whose arguments
    merely contain the word "train" (``--json train``, a file named train) has nothing to
    resume."""
    import gpconv.cli.main as cli_main

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_dispatch", interrupted)
    assert cli_main.main(["check", "--json", "train"]) == 130
    assert capsys.readouterr().err.strip() == "gpconv: interrupted"


def test_summary_json_names_efficientnet_without_a_group_minimum(capsys) -> None:
    """EfficientNet has no grouped convs, so its name carries no "-16ch" (nor "-Nonech"): it is
    "efficientnet-b0", the name the paper's table and keras.applications use."""
    data = _summary_json(capsys, "--model", "efficientnet-b0")
    assert data["model"] == "efficientnet-b0"


def test_summary_labels_an_ungrouped_pointwise_layer_a_plain_conv(capsys) -> None:
    """DESIGN.md: a kPointwise with G == 1 is a plain 1x1 conv ("Nothing else": no interleave,
    no second conv), and (16->96, m=16) gives G=1: kEffNet-B0's block2a_expand is listed as
    "Conv1x1" with 1 group, while block6b_project (1152->192, G=64 in DESIGN.md's examples) is
    a kPointwise."""
    layers = {r["name"]: r for r in _summary_json(capsys, "--model", "kefficientnet-b0")["layers"]}
    assert (layers["block2a_expand"]["op"], layers["block2a_expand"]["groups"]) == ("Conv1x1", 1)
    assert layers["block6b_project"]["groups"] == 64
    assert layers["block6b_project"]["op"].startswith("kPointwise")


def test_summary_paper_json_is_the_rows_of_the_papers_table(capsys: pytest.CaptureFixture[str]):
    """``--paper --json`` prints machine-readable rows (not the Markdown table): the six
    published models (DESIGN.md's table: 3 models x 10/100 classes), every one matching."""
    assert main(["summary", "--paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and all(r["match"] is True for r in rows), rows


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {"backends": None, "full": False, "seed": 0, "impls": None}),
        (["--quick"], {"backends": None, "full": False, "seed": 0, "impls": None}),
        (["--full"], {"backends": None, "full": True, "seed": 0, "impls": None}),
        (
            ["--backend", "torch", "--backend", "numpy", "--seed", "7", "--impl", "all"],
            {"backends": ["torch", "numpy"], "full": False, "seed": 7, "impls": ["all"]},
        ),
        (
            ["--impl", "conv", "--impl", "einsum", "--full", "--seed", "3"],
            {"backends": None, "full": True, "seed": 3, "impls": ["conv", "einsum"]},
        ),
    ],
    ids=["defaults", "quick", "full", "backends-seed-impl", "impls-full-seed"],
)
def test_check_options_reach_the_conformance_run(flags, expected, recorded_runs, capsys):
    """--backend (repeatable, default: all), --full (--quick the default), --seed and --impl
    (repeatable, default: each backend's default) each change what is checked: an option parsed
    but not passed on would be silently ignored, and the report would claim a check not run."""
    assert main(["check", *flags]) == 0
    assert recorded_runs == [expected]
    assert f"seed {expected['seed']}" in capsys.readouterr().out  # the report's verdict line


@pytest.mark.parametrize(
    "name, said",
    [
        ("gpconv.conformance.mutants:NO_SUCH_MUTANT", "has no 'NO_SUCH_MUTANT'"),
        ("gpconv.no_such_module:BACKEND", "cannot import module 'gpconv.no_such_module'"),
        ("gpconv.backends.base:Backend", "received the class Backend"),  # a class, no instance
    ],
    ids=["missing-attribute", "missing-module", "a-class"],
)
def test_a_third_party_backend_that_does_not_resolve_is_a_usage_error(name, said, capsys):
    """``--backend module:ATTRIBUTE``: a module without that attribute (AttributeError), one that
    does not import (ImportError) or an attribute that is no Backend instance (ValueError) is
    exit 2 with one line naming it, never a traceback."""
    assert main(["check", "--backend", name]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("gpconv check: error: ") and said in err and name in err


@pytest.mark.parametrize("bad", [":x", "mod:", "nosuch"])
def test_every_backend_named_is_validated_not_only_the_first(bad, recorded_runs, capsys):
    """``--backend numpy --backend :x``: a malformed name in any position is refused by name
    ("unknown backend ':x'", the expected forms listed) before anything runs; the runner's own
    error for it was "Empty module name"."""
    assert main(["check", "--backend", "numpy", "--backend", bad]) == 2
    assert recorded_runs == []
    err = capsys.readouterr().err
    assert f"unknown backend {bad!r}; expected one of" in err and "module:ATTRIBUTE" in err


@pytest.mark.parametrize(
    "error",
    [RuntimeError("savefig failed"), OSError(28, "No space left on device"), ValueError("bad")],
    ids=["RuntimeError", "OSError", "ValueError"],
)
def test_write_output_reports_each_documented_failure_without_a_traceback(error, capsys):
    """write_output's docstring: a failed write is said on stderr (naming the command, the flag
    and the path) and gives False, so the other outputs are still written; matplotlib's savefig
    raises RuntimeError as well as OSError/ValueError."""

    def fails() -> None:
        raise error

    assert write_output("bench", "--plot", "out/x.png", fails) is False
    err = capsys.readouterr().err
    assert err.startswith("gpconv bench: error: could not write --plot out/x.png: "), err
    assert str(error) in err


def test_write_output_says_what_it_wrote(capsys):
    assert write_output("check", "--json", "r.json", lambda: None) is True
    assert capsys.readouterr().err == "wrote r.json\n"


@pytest.mark.parametrize("repeats", [1, 7, 30])
def test_benchmark_options_default_repeats_is_the_scripts_own(repeats):
    """``add_benchmark_options(p, repeats, ...)``: each script picks its number of timed rounds;
    ``--repeats`` left out must be that number, and ``--json`` left out None."""
    parser = argparse.ArgumentParser()
    add_benchmark_options(parser, repeats, "torch")
    args = parser.parse_args([])
    assert (args.repeats, args.threads, args.clock, args.json) == (repeats, 0, "wall", None)


def test_commands_quiet_tensorflows_info_lines_unless_the_user_set_the_level(monkeypatch, capsys):
    """cli/main.py: TensorFlow's C++ info lines would interleave with the tables, so every
    command sets TF_CPP_MIN_LOG_LEVEL=2 (warnings and errors still shown) before any framework
    is imported; a level the user set is kept."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert main(["summary", "--paper", "--json"]) == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert main(["summary", "--paper", "--json"]) == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    capsys.readouterr()


@pytest.mark.parametrize("path", ["", "  "])
def test_benchmark_json_option_refuses_an_empty_path(path, capsys):
    """The benchmark scripts' ``--json`` is tested with ``if args.json:``: an empty path (an unset
    variable in ``--json "$OUT"``) would measure everything and write nothing. It is refused at
    parse time (exit 2) as the ``gpconv`` commands' paths are (``nonempty_path``)."""
    parser = argparse.ArgumentParser()
    add_benchmark_options(parser, 3, "torch")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--json", path])
    assert exc.value.code == 2
    assert f"argument --json: expected a path, received {path!r}" in capsys.readouterr().err
