"""``gpconv summary`` / ``check`` / the benchmark scripts: defaults and option handling that the
other CLI tests leave open (found by mutation testing: each test names the change it catches)."""

from __future__ import annotations

import argparse
import json

import pytest

from gpconv.cli.main import benchmark_threads, main


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


def test_check_json_to_stdout_does_not_check_a_file_named_dash(
    tmp_path, monkeypatch, capsys
) -> None:
    """``gpconv check --json`` (no PATH) writes the report to stdout: no file is written, so
    whatever "-" is in the working folder (here a folder of that name) must not turn it into a
    usage error."""
    from gpconv.conformance import runner
    from gpconv.conformance.results import CheckResult
    from gpconv.conformance.runner import Report

    row = CheckResult("numpy", "interleave order", "interleave", "C=12 G=3", 0.0, 0.0, "pass")
    monkeypatch.setattr(
        runner, "run", lambda *a, **k: Report(rows=[row], backends={"numpy": {"status": "checked"}})
    )
    (tmp_path / "-").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


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
