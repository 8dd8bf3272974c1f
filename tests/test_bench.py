"""``gpconv bench``: JSON schema, ratios and recommendation on tiny runs, pointwise comparison."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import replace

import pytest

from gpconv.cli import bench
from gpconv.cli.main import UsageError, main
from gpconv.perf import models, pointwise, report, timing

TINY = [
    "--image-size",
    "8",
    "--skip-stride",
    "0",
    "--batch-size",
    "2",
    "--steps",
    "1",
    "--warmup",
    "0",
]
ROW_KEYS = {
    "backend",
    "model",
    "arch",
    "params_trainable",
    "params_non_trainable",
    "macs_per_image",
    "forward_ms",
    "forward_images_per_s",
    "train_step_ms",
    "train_images_per_s",
}


def test_model_bench_json_schema_ratios_and_recommendation(tmp_path, capsys):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    assert (
        main(["bench", "--backend", "numpy", *TINY, "--json", str(out), "--plot", str(plot)]) == 0
    )
    text = capsys.readouterr().out
    assert "Recommendation: train kefficientnet-b0 with --backend numpy" in text
    assert "ran on: numpy cpu" in text
    doc = json.loads(out.read_text())
    assert doc["format"] == "gpconv-bench/1" and doc["op"] == "model"
    assert {"date", "cpu", "cpus", "platform", "versions"} <= set(doc["machine"])
    assert doc["config"]["batch_size"] == 2 and doc["config"]["backends"] == ["numpy"]
    assert [r["model"] for r in doc["results"]] == ["efficientnet-b0", "kefficientnet-b0"]
    for row in doc["results"]:
        assert ROW_KEYS <= set(row) and row["train_step_ms"] > 0 and row["forward_images_per_s"] > 0
        assert row["device"] == "cpu"
    (ratio,) = doc["ratios"]
    assert ratio["params_ratio"] == pytest.approx(639702 / 4020358)
    assert ratio["train_step_ratio"] == pytest.approx(
        doc["results"][1]["train_step_ms"] / doc["results"][0]["train_step_ms"]
    )
    rounds = [r["train_timing"]["samples_ms"] for r in doc["results"]]
    assert (
        ratio["train_step_ratio_per_round"] == pytest.approx([k / e for e, k in zip(*rounds)])
        and len(rounds[0]) == doc["config"]["steps"]
    )
    assert doc["recommendation"]["kefficientnet-b0"]["backend"] == "numpy"
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_pointwise_bench_numpy(tmp_path, capsys):
    out = tmp_path / "pw.json"
    assert (
        main(["bench", "--op", "pointwise", "--backend", "numpy", *TINY, "--json", str(out)]) == 0
    )
    assert "Recommendation: numpy grouped pointwise:" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["op"] == "pointwise" and doc["results"] == []
    cases = {r["case"] for r in doc["pointwise"]}
    assert len(cases) >= 2
    for case in cases:
        rows = [r for r in doc["pointwise"] if r["case"] == case]
        assert sum(r["fastest"] for r in rows) == 1 and sum(r["default"] for r in rows) == 1
        assert {r["impl"] for r in rows} == {
            "batched-matmul (core)",
            "dense block-diagonal",
            pointwise.UNGROUPED,
        }


def test_pointwise_bench_torch_lists_every_implementation():
    torch = pytest.importorskip("torch")
    from gpconv.backends.torch.pointwise import IMPLS

    case = pointwise.Case("t", 32, 64, 2, 4, 2)
    rows = pointwise.bench_pointwise("torch", [case], steps=1, warmup=0)
    concrete = [i for i in IMPLS if i != "auto"]  # "auto" is one of them, chosen per device
    assert {r["impl"] for r in rows} == {
        f"{i} [{f}]" for i in concrete for f in ("nchw", "channels_last")
    } | {pointwise.UNGROUPED}
    assert sum(r["default"] for r in rows) == 1
    expected = "cpu" if not torch.cuda.is_available() else f"cuda:0 {torch.cuda.get_device_name(0)}"
    assert {r["device"] for r in rows} == {expected}  # where gpconv train would run
    rows = pointwise.bench_pointwise("torch", [case], steps=1, warmup=0, device="cpu")
    assert {r["device"] for r in rows} == {"cpu"}
    (default,) = [r["impl"] for r in rows if r["default"]]
    assert default == "channels_last [channels_last]"  # the CPU model's impl and format


def test_bench_device_option(tmp_path, capsys):
    # numpy runs on the CPU: --device would be ignored, so it is refused
    assert main(["bench", "--backend", "numpy", "--device", "cpu", *TINY]) == 2
    assert "only with --backend torch" in capsys.readouterr().err
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "torch", "--device", "cpu", *TINY, "--json", str(out)]) == 0
    assert {r["device"] for r in json.loads(out.read_text())["results"]} == {"cpu"}


def test_kefficientnet_cases_are_grouped_and_distinct():
    cases = pointwise.kefficientnet_cases(32, 3, batch=4)
    assert len(cases) == 3 and len({(c.cin, c.cout, c.groups, c.hw) for c in cases}) == 3
    assert all(c.groups > 1 and c.cin % c.groups == 0 and c.hw > 1 for c in cases)
    assert max(c.groups for c in cases) == max(
        c.groups for c in pointwise.kefficientnet_cases(32, 3, count=20)
    )


def test_interleave_sites_are_what_the_torch_model_interleaves():
    """The shuffle benchmarks' sites come from ``core.arch``; the torch model, built separately,
    must run exactly those interleaves, as often (recorded by hooks in one forward pass)."""
    torch = pytest.importorskip("torch")
    from collections import Counter

    from gpconv.backends.torch import kefficientnet_b0
    from gpconv.backends.torch.pointwise import Interleave

    model = kefficientnet_b0(10, min_channels_per_group=16, skip_stride_cnt=3, seed=0)
    seen: Counter = Counter()
    for module in model.modules():
        if isinstance(module, Interleave):
            module.register_forward_pre_hook(
                lambda m, args: seen.update([(*args[0].permute(0, 2, 3, 1).shape, m.groups)])
            )
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    sites = pointwise.interleave_sites(32, 3, batch=2)
    assert sites == seen and sum(sites.values()) == 34


def test_ratios_and_recommendation_from_rows():
    rows = [
        {
            "backend": b,
            "model": m,
            "arch": m,
            "params_trainable": p,
            "macs_per_image": 10,
            "train_step_ms": t,
            "forward_images_per_s": f,
        }
        for b, m, p, t, f in [
            ("torch", "efficientnet-b0", 100, 50.0, 10.0),
            ("torch", "kefficientnet-b0", 16, 25.0, 30.0),
            ("tensorflow", "efficientnet-b0", 100, 40.0, 12.0),
            ("tensorflow", "kefficientnet-b0", 16, 80.0, 6.0),
        ]
    ]
    found = {r["backend"]: r for r in models.ratios(rows)}
    assert (
        found["torch"]["train_step_ratio"] == 0.5 and found["torch"]["forward_speed_ratio"] == 3.0
    )
    assert found["tensorflow"]["train_step_ratio"] == 2.0
    best = models.recommend(rows)
    assert (
        best["efficientnet-b0"]["backend"] == "tensorflow"
        and best["kefficientnet-b0"]["backend"] == "torch"
    )
    assert best["kefficientnet-b0"]["speedup_over_runner_up"] == pytest.approx(80 / 25)

    # A compiled torch step is its own setup: its own ratio, and it can win the recommendation.
    compiled = [dict(r, compiled=True, train_step_ms=r["train_step_ms"] / 2) for r in rows[:2]]
    found = {models.setup(r): r for r in models.ratios(rows + compiled)}
    assert set(found) == {"torch", "torch --compile", "tensorflow"}
    assert found["torch --compile"]["train_step_ratio"] == 0.5
    best = models.recommend(rows + compiled)["kefficientnet-b0"]
    assert (best["backend"], best["compiled"], best["runner_up"]) == ("torch", True, "torch")
    line = report.recommendation_lines({"kefficientnet-b0": best}, {"cpus": 2, "cpu": "x"})[0]
    assert "--backend torch --compile on this machine (2-CPU x)" in line
    # Forward passes are timed eagerly only: a compiled row must not show them as its own.
    table = report.model_table([dict(r, train_images_per_s=1.0) for r in rows + compiled])
    # Its parameter column counts trainable parameters only, and says so.
    assert table.splitlines()[0].split()[2] == "trainable", table.splitlines()[0]
    compiled_lines = [ln for ln in table.splitlines() if ln.startswith("torch --compile")]
    assert len(compiled_lines) == 2 and all("= eager" in ln for ln in compiled_lines)
    assert all(" 10.0 " not in ln and " 30.0 " not in ln for ln in compiled_lines)


def test_results_say_which_device_ran_them():
    # A GPU run names the GPU, not the host's CPU; results without a device (older JSON) are CPU.
    rows = [
        {
            "backend": "torch",
            "model": "kefficientnet-b0",
            "device": "cuda:0 NVIDIA H100",
            "train_step_ms": 10.0,
        },
        {"backend": "tensorflow", "model": "kefficientnet-b0", "train_step_ms": 20.0},
    ]
    machine = {"cpus": 16, "cpu": "Xeon"}
    best = models.recommend(rows)["kefficientnet-b0"]
    assert best["device"] == "cuda:0 NVIDIA H100"
    (line,) = report.recommendation_lines({"kefficientnet-b0": best}, machine)
    assert "on this machine (cuda:0 NVIDIA H100)" in line and "Xeon" not in line
    (line,) = report.recommendation_lines(models.recommend(rows[1:]), machine)
    assert "on this machine (16-CPU Xeon)" in line


@pytest.mark.parametrize(
    "ms, shown", [(1044.4, "1,044 ms/step"), (99.94, "99.9 ms/step"), (0.4123, "0.412 ms/step")]
)
def test_recommended_step_time_keeps_three_figures(ms, shown):
    """A sub-millisecond GPU step was recommended at "0 ms/step"."""
    best = models.recommend(
        [{"backend": "torch", "model": "kefficientnet-b0", "train_step_ms": ms}]
    )
    (line,) = report.recommendation_lines(best, {"cpus": 2, "cpu": "x"})
    assert f": {shown} (the only backend measured)" in line, line


def test_models_of_a_backend_are_timed_round_robin(monkeypatch):
    calls = []

    class Recorder:
        device_label = "cpu"

        def __init__(self, name: str) -> None:
            self.name = name

        def predict(self, x):
            calls.append(("predict", self.name))

        def train_step(self, x, y):
            calls.append(("train", self.name))

    def create(backend, arch, optim, seed, compile_step=False, **options):
        return Recorder(arch.name + (" compiled" if compile_step else ""))

    monkeypatch.setattr(models, "create", create)
    cfg = models.ModelBenchConfig(image_size=8, skip_stride=0, batch_size=2, steps=2, warmup=1)
    rows = models.bench_models("numpy", ["efficientnet-b0", "kefficientnet-b0"], cfg)
    e, k = (r["arch"] for r in rows)
    assert [r["model"] for r in rows] == ["efficientnet-b0", "kefficientnet-b0"]
    assert calls == [("predict", e), ("predict", k)] * 3 + [("train", e), ("train", k)] * 3
    assert all(len(r["train_timing"]["samples_ms"]) == 2 for r in rows)

    # --compile: compiled train steps join the same rounds; predict (eager in both) runs once per
    # model; a backend without a compiler is timed eager only.
    calls.clear()
    cfg = replace(cfg, compile_step=True)
    assert len(models.bench_models("numpy", ["efficientnet-b0"], cfg)) == 1
    calls.clear()
    rows = models.bench_models("torch", ["efficientnet-b0", "kefficientnet-b0"], cfg)
    ec, kc = f"{e} compiled", f"{k} compiled"
    assert calls == [("predict", e), ("predict", k)] * 3 + [
        ("train", e), ("train", k), ("train", ec), ("train", kc)
    ] * 3  # fmt: skip
    assert [(models.setup(r), r["model"]) for r in rows] == [
        ("torch", "efficientnet-b0"),
        ("torch", "kefficientnet-b0"),
        ("torch --compile", "efficientnet-b0"),
        ("torch --compile", "kefficientnet-b0"),
    ]
    assert rows[2]["forward_timing"] == rows[0]["forward_timing"]
    found = models.ratios(rows)
    assert [(r["backend"], r["compiled"]) for r in found] == [("torch", False), ("torch", True)]


def test_per_round_ratios_pair_the_steps_of_each_round_and_the_line_shows_their_range():
    """Each round's kEffNet step is divided by the same round's EfficientNet step, so drift
    between rounds (round 2 twice as slow for both) leaves that round's ratio at 0.5; the line
    prints the range of the rounds' ratios beside the medians' ratio."""

    def row(model: str, samples: list[float]) -> dict:
        return {
            "backend": "torch",
            "model": model,
            "arch": model,
            "params_trainable": 1,
            "macs_per_image": 1,
            "train_step_ms": sorted(samples)[len(samples) // 2],
            "forward_images_per_s": 1.0,
            "train_timing": {"samples_ms": samples},
        }

    eff, keff = (
        row("efficientnet-b0", [100.0, 200.0, 90.0]),
        row("kefficientnet-b0", [50.0, 100.0, 36.0]),
    )
    (ratio,) = models.ratios([eff, keff])
    assert ratio["train_step_ratio_per_round"] == pytest.approx([0.5, 0.5, 0.4])
    assert ratio["train_step_ratio"] == pytest.approx(50 / 100)
    (line,) = report.ratio_lines([ratio])
    assert "train-step time x0.50 (faster; per round x0.40-0.50)" in line, line
    # Rows of unequal rounds, or without samples, give no per-round ratios and no range.
    for samples in ({"samples_ms": [50.0, 100.0]}, None):
        if samples is None:
            del keff["train_timing"]
        else:
            keff["train_timing"] = samples
        (ratio,) = models.ratios([eff, keff])
        assert ratio["train_step_ratio_per_round"] == []
        assert "per round" not in report.ratio_lines([ratio])[0]


def test_clock_option_offers_every_clock_and_rejects_others(capsys):
    import argparse
    import time

    from gpconv.cli.main import add_clock_option

    parser = argparse.ArgumentParser()
    add_clock_option(parser)
    assert parser.parse_args([]).clock == "wall"
    for name in ("wall", "cpu"):
        clock = timing.CLOCKS[parser.parse_args(["--clock", name]).clock]
        start, give_up = clock(), time.perf_counter() + 10
        while clock() - start < 0.01 and time.perf_counter() < give_up:
            pass  # busy, so the CPU clock advances too
        assert clock() - start >= 0.01, f"the {name} clock did not advance"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--clock", "sundial"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        ["--batch-size", "0"],
        ["--image-size", "4"],
        ["--skip-stride", "-2"],
        ["--warmup", "-1"],
        ["--op", "pointwise", "--compile"],
        ["--op", "pointwise", "--model", "kefficientnet-b3"],  # it would time B0's shapes
    ],
)
def test_bench_bad_values_exit_2(args, capsys):
    assert main(["bench", "--backend", "numpy", *args]) == 2
    assert "Expected" in capsys.readouterr().err


def test_bench_unknown_backend_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backend", "mxnet"])
    assert exc.value.code == 2


def _fake_pointwise_rows(backend, cases, steps, warmup, device=None):
    """Stands in for ``pointwise.bench_pointwise``: two implementations on one case, no timing."""
    return [
        {
            "backend": backend,
            "device": "cpu",
            "case": "case",
            "layer": "layer",
            "impl": impl,
            "ms": ms,
            "fastest": fastest,
            "default": default,
        }
        for impl, ms, fastest, default in (("a", 1.0, True, True), ("b", 2.0, False, False))
    ]


def _fake_model_rows(backend, names, cfg, step_ms=None):
    """Stands in for ``models.bench_models``: one row per model, no timing; a train step of
    ``step_ms[(backend, model)]`` ms, 20 ms for the others (10 ms for all without ``step_ms``)."""
    return [
        {
            "backend": backend,
            "model": m,
            "arch": m,
            "params_trainable": 1,
            "macs_per_image": 1,
            "forward_images_per_s": 1.0,
            "train_images_per_s": 1.0,
            "train_step_ms": 10.0 if step_ms is None else step_ms.get((backend, m), 20.0),
        }
        for m in names
    ]


def _measuring_fails(*args, **kwargs):
    raise AssertionError("the benchmark ran before its options were checked")


@pytest.fixture
def model_configs(monkeypatch: pytest.MonkeyPatch) -> list:
    """(backend, models, ModelBenchConfig) of each ``bench_models`` call, answered by
    ``_fake_model_rows``."""
    seen = []

    def record(backend, names, cfg):
        seen.append((backend, list(names), cfg))
        return _fake_model_rows(backend, names, cfg)

    monkeypatch.setattr(models, "bench_models", record)
    return seen


def _only(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Measure exactly the backends ``names`` (as if named with --backend and installed)."""
    monkeypatch.setattr(bench, "_backends", lambda requested, op: (list(names), []))


FAST_POINTWISE = ["bench", "--op", "pointwise", "--backend", "numpy", *TINY, "--threads", "1"]


@pytest.mark.parametrize(
    "flag, name, why",
    [
        ("--plot", "pw.txt", "suffix .txt, not one of"),
        ("--plot", "pw", "no suffix, not one of"),
        ("--plot", "afile/pw.png", "is a file"),
        ("--json", "afile/x.json", "is a file"),
        ("--json", "afile/deeper/x.json", "is a file"),
        ("--json", ".", "is a folder"),
        # the atomic write would have replaced the FIFO (or, as root, /dev/stdout) with a file
        ("--json", "fifo.json", "is no regular file"),
        ("--plot", "fifo.png", "is no regular file"),
    ],
)
def test_bench_bad_output_path_exits_2_before_measuring(
    flag, name, why, tmp_path, monkeypatch, capsys
):
    (tmp_path / "afile").write_text("not a folder")
    os.mkfifo(tmp_path / "fifo.json")
    os.mkfifo(tmp_path / "fifo.png")
    monkeypatch.setattr(pointwise, "bench_pointwise", _measuring_fails)
    path = str(tmp_path / name)
    assert main([*FAST_POINTWISE, flag, path]) == 2
    err = capsys.readouterr().err
    assert f"Expected {flag} " in err and why in err and path in err


def test_bench_plot_creates_a_missing_folder_as_json_does(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pointwise, "bench_pointwise", _fake_pointwise_rows)
    plot, out = tmp_path / "new" / "pw.svg", tmp_path / "other" / "pw.json"
    assert main([*FAST_POINTWISE, "--plot", str(plot), "--json", str(out)]) == 0
    assert b"<svg" in plot.read_bytes()  # the suffix chose the format
    assert json.loads(out.read_text())["op"] == "pointwise"


def test_bench_failed_write_is_reported_and_the_other_file_kept(tmp_path, monkeypatch, capsys):
    def disk_full(path, doc):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pointwise, "bench_pointwise", _fake_pointwise_rows)
    monkeypatch.setattr(report, "write_json", disk_full)
    plot, out = tmp_path / "pw.png", tmp_path / "pw.json"
    assert main([*FAST_POINTWISE, "--json", str(out), "--plot", str(plot)]) == 1
    captured = capsys.readouterr()
    assert "Recommendation: numpy grouped pointwise: a" in captured.out  # measurements printed
    assert f"could not write --json {out}" in captured.err and "No space left" in captured.err
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "doc, exc",
    [({"x": object()}, TypeError), ({"x": 1.0}, OSError)],
    ids=["unserialisable", "disk-full"],
)
def test_a_failed_json_write_keeps_the_earlier_report(tmp_path, monkeypatch, doc, exc):
    """write_json truncated the file first: a value json cannot hold, or a full disk, left a
    torn report where the previous one had been."""
    path = tmp_path / "bench.json"
    report.write_json(str(path), {"earlier": True})
    earlier = path.read_bytes()
    if exc is OSError:

        def disk_full(fd):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(exc):
        report.write_json(str(path), doc)
    assert path.read_bytes() == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_pointwise_bench_without_grouped_layers_is_a_usage_error(monkeypatch, capsys):
    # min_channels_per_group above every layer's channels: kEffNet-B0 is all plain 1x1 convs.
    monkeypatch.setattr(pointwise, "bench_pointwise", _measuring_fails)
    assert main([*FAST_POINTWISE, "--min-channels-per-group", "1000"]) == 2
    err = capsys.readouterr().err
    assert "no grouped pointwise layer" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_bench_refuses_dash_as_an_output_file(flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pointwise, "bench_pointwise", _measuring_fails)
    assert main([*FAST_POINTWISE, flag, "-"]) == 2
    assert f"Expected a file path for {flag}" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_bench_says_so_when_every_backend_fails(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(pointwise, "bench_pointwise", broken)
    out = tmp_path / "pw.json"
    assert main([*FAST_POINTWISE, "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "every backend failed, nothing measured; not written: --json" in err
    assert not out.exists()


def test_the_recommendation_repeats_the_settings_it_was_measured_with(capsys):
    assert main(["bench", "--backend", "numpy", *TINY, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    shape = "--image-size 8 --skip-stride 0 --batch-size 2"  # TINY's, none train's default
    assert f"train kefficientnet-b0 with --backend numpy --threads 1 {shape} on" in out
    # TINY times first calls: TensorFlow's tracing made it "44x slower" than torch
    assert "note: --warmup 0 timed each first call, tracing and compiling included" in out
    assert main(["bench", "--backend", "numpy", *TINY[:-1], "1", "--threads", "1"]) == 0
    assert "--warmup 0" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "backend, advice",
    [
        ("torch", "compare those with `python benchmarks/bench_torch_train.py --impls`"),
        ("tensorflow", "`python benchmarks/bench_tf_train.py --impls`"),
        ("numpy", "the reference keeps a, the formula core/ states"),
    ],
)
def test_pointwise_recommendation_names_a_command_that_can_choose(backend, advice):
    # "b" wins the single layer but "a" is the default: the advice must be actionable
    # (`gpconv bench` itself has no option to choose a grouped-pointwise implementation).
    rows = _fake_pointwise_rows(backend, None, 1, 0)
    rows[0]["fastest"], rows[1]["fastest"] = False, True
    (line,) = report.pointwise_recommendations(rows)
    assert f"{backend} grouped pointwise: b (fastest in 1/1 cases;" in line and advice in line


def test_a_tie_between_implementations_keeps_the_default():
    # "b" (not the default) and "a" (the default) win one case each: the recommendation said
    # "b" (the first to reach the top count), advising a change that measured no faster.
    one, two = _fake_pointwise_rows("numpy", None, 1, 0), _fake_pointwise_rows("numpy", None, 1, 0)
    for row in two:
        row["case"], row["fastest"] = "case 2", not row["fastest"]
    (line,) = report.pointwise_recommendations(two + one)
    assert "numpy grouped pointwise: a (fastest in 1/2 cases" in line, line


def test_each_recommendation_carries_only_options_its_train_command_takes(monkeypatch, capsys):
    """The measured kEffNet's group minimum goes with the kEffNet line only (train refuses it
    with EfficientNet, and without it would train 16ch), --device with torch's only (train
    refuses it with --backend tensorflow)."""
    ms = {("torch", "efficientnet-b0"): 10.0, ("tensorflow", "kefficientnet-b0"): 10.0}
    _only(monkeypatch, "torch", "tensorflow")
    monkeypatch.setattr(models, "bench_models", functools.partial(_fake_model_rows, step_ms=ms))
    argv = ["bench", *TINY, "--device", "cpu", "--min-channels-per-group", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    shape = "--image-size 8 --skip-stride 0 --batch-size 2"
    assert f"train efficientnet-b0 with --backend torch {shape} --device cpu on" in out
    assert (
        f"train kefficientnet-b0 with --backend tensorflow {shape} --min-channels-per-group 32 on"
        in out
    )


def test_the_recommendation_leaves_out_what_train_does_by_default(monkeypatch, capsys):
    """bench measures 32x32 images with skip_stride 3 in batches of 32 by default; gpconv
    train's defaults are the same image size and skip but a batch of 64 (train --help). The
    recommended command must train what was timed, so it names the batch (and only the batch)."""
    from gpconv.train.config import RunConfig

    _only(monkeypatch, "numpy")
    monkeypatch.setattr(models, "bench_models", _fake_model_rows)
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert (RunConfig.image_size, RunConfig.skip_stride, RunConfig.batch_size) == (32, 3, 64)
    assert "train kefficientnet-b0 with --backend numpy --batch-size 32 on" in out
    assert "train efficientnet-b0 with --backend numpy --batch-size 32 on" in out


def test_pointwise_table_aligns_the_times_of_long_implementation_names():
    rows = _fake_pointwise_rows("torch", None, 1, 0)
    rows[0]["impl"] = "channels_last [channels_last]"  # 29 characters, torch's longest
    lines = [ln for ln in report.pointwise_table(rows).splitlines() if ln.startswith("    ")]
    assert len(lines) == 2 and len({ln.index(" ms") for ln in lines}) == 1, lines
    assert all(ln == ln.rstrip() for ln in lines)


def test_group_minimum_with_only_efficientnet_models_exits_2_before_measuring(monkeypatch, capsys):
    # EfficientNet has no groups: the minimum was silently ignored (gpconv train refuses it).
    monkeypatch.setattr(models, "bench_models", _measuring_fails)
    argv = ["bench", "--backend", "numpy", *TINY, "--model", "efficientnet-b0"]
    assert main([*argv, "--min-channels-per-group", "32"]) == 2
    err = capsys.readouterr().err
    assert "Expected a kefficientnet --model with --min-channels-per-group 32" in err
    assert "received --model efficientnet-b0" in err


class _Adapter:
    """Stands in for a backend adapter (the real ones import their framework: TensorFlow's
    takes seconds): only what ``bench._backends`` reads; the frameworks in ``missing`` are not
    installed."""

    missing: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.install_hint = f"pip install 'gpconv[{name}]'"

    def is_available(self) -> bool:
        return self.name not in self.missing


def _missing(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Every backend installed but ``names``."""
    from gpconv import backends

    monkeypatch.setattr(_Adapter, "missing", names)
    monkeypatch.setattr(backends, "get", _Adapter)


@pytest.fixture
def cupy_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backend installed but cupy."""
    _missing(monkeypatch, "cupy")


def test_default_backends_leave_numpy_out_of_whole_models_only(cupy_missing) -> None:
    """The numpy backend is the float64 reference: minutes per B0 train step, so whole-model
    runs take it only when named (``--backend numpy``); single-layer ``--op pointwise`` runs
    take it by default (bench.py's docstring and --help)."""
    model_names, _ = bench._backends(None, "model")
    point_names, _ = bench._backends(None, "pointwise")
    assert "numpy" not in model_names
    assert "numpy" in point_names


def test_a_default_run_lists_a_missing_backend_but_a_requested_one_is_an_error(
    cupy_missing,
) -> None:
    """Without --backend, an uninstalled framework is skipped (listed with its install hint) and
    the installed ones are measured; only a backend the user *named* that is missing is a usage
    error (as ``gpconv check`` does)."""
    names, skipped = bench._backends(None, "pointwise")
    assert "numpy" in names and [s["backend"] for s in skipped] == ["cupy"]
    with pytest.raises(UsageError, match="backend 'cupy' not installed"):
        bench._backends(["cupy"], "pointwise")


def test_a_backend_named_twice_is_measured_once(cupy_missing) -> None:
    """``--backend numpy --backend numpy`` (append action): measuring it twice would double the
    run time and print its rows twice."""
    assert bench._backends(["numpy", "numpy"], "pointwise") == (["numpy"], [])


def test_device_is_checked_against_torch_wherever_it_is_named_and_reaches_it(
    model_configs, monkeypatch, capsys
) -> None:
    """``--device`` steers torch only; with ``--backend tensorflow --backend torch`` it is valid
    (torch is measured), whatever the order the backends were named in, and reaches the
    measurement."""
    _only(monkeypatch, "tensorflow", "torch")
    assert main(["bench", *TINY, "--device", "cpu"]) == 0, capsys.readouterr().err
    assert [(backend, cfg.device) for backend, _, cfg in model_configs] == [
        ("tensorflow", "cpu"),
        ("torch", "cpu"),
    ]


def test_pointwise_mode_passes_device_to_the_measurement(monkeypatch, capsys) -> None:
    """``gpconv bench --op pointwise --backend torch --device cpu`` must time torch on the CPU
    (the device asked for), not on the default device (CUDA when present)."""
    seen = []

    def record(backend, cases, steps, warmup, device=None):
        seen.append(device)
        return _fake_pointwise_rows(backend, cases, steps, warmup, device)

    _only(monkeypatch, "torch")
    monkeypatch.setattr(pointwise, "bench_pointwise", record)
    assert main(["bench", "--op", "pointwise", *TINY, "--device", "cpu"]) == 0
    assert seen == ["cpu"]


def test_defaults_are_the_papers_cifar_setting_after_a_warm_up(
    model_configs, monkeypatch, capsys
) -> None:
    """``gpconv bench`` alone measures the paper's CIFAR-10 setting (docs/method.md, DESIGN.md:
    32x32 images with skip_stride_cnt 3; kEffNet 16ch), batch 32 (docs/gpu.md), with at least one
    untimed call first: a timed first call includes tracing and compiling (the "--warmup 0"
    note), which is not what a training run sees. --steps: "timed rounds (median reported)": by
    default the median of at least 3 rounds, so that one slow round (another job on the shared
    CPU) does not become the figure; of 1 or 2 rounds it is a single sample or a mean."""
    _only(monkeypatch, "numpy")
    assert main(["bench"]) == 0
    ((_, names, cfg),) = model_configs
    assert names == ["efficientnet-b0", "kefficientnet-b0"]
    assert (cfg.image_size, cfg.skip_stride, cfg.batch_size) == (32, 3, 32)
    assert (cfg.min_channels_per_group, cfg.compile_step, cfg.device) == (16, False, None)
    assert cfg.warmup >= 1 and cfg.steps >= 3
    assert "--warmup 0" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "error",
    [RuntimeError("simulated failure"), ImportError("libcudart.so.12"), ValueError("bad shape")],
    ids=["RuntimeError", "ImportError", "ValueError"],
)
def test_one_failed_backend_exits_1_but_keeps_the_others_results(
    error, tmp_path, monkeypatch, capsys
) -> None:
    """Exit 1 when a job failed (cli/main.py: "1 a check or job failed"): a script must not read
    a half-measured run as a success. The backend that worked is still reported and written,
    whatever the failure (a missing shared library, a shape error...)."""

    def half_broken(backend, cases, steps, warmup, device=None):
        if backend == "tensorflow":
            raise error
        return _fake_pointwise_rows(backend, cases, steps, warmup, device)

    _only(monkeypatch, "numpy", "tensorflow")
    monkeypatch.setattr(pointwise, "bench_pointwise", half_broken)
    out = tmp_path / "pw.json"
    assert main(["bench", "--op", "pointwise", *TINY, "--json", str(out)]) == 1
    assert "Recommendation: numpy grouped pointwise: a" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert {r["backend"] for r in doc["pointwise"]} == {"numpy"}
    assert [s["backend"] for s in doc["skipped"]] == ["tensorflow"]
    assert doc["skipped"][0]["reason"].startswith(f"failed: {error}")


def test_nothing_measured_names_only_the_outputs_that_were_asked_for(
    tmp_path, monkeypatch, capsys
) -> None:
    """With only --json given, the error lists --json as not written and says nothing of a
    --plot that nobody asked for ("--plot None")."""

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(pointwise, "bench_pointwise", broken)
    out = tmp_path / "pw.json"
    argv = ["bench", "--op", "pointwise", "--backend", "numpy", *TINY, "--json", str(out)]
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"nothing measured; not written: --json {out}"), last


def test_json_config_records_the_threads(tmp_path, monkeypatch, capsys) -> None:
    """Thread count changes every CPU timing; a results file that does not say it cannot be
    compared with another (``--threads 1`` vs the framework's default)."""
    monkeypatch.setattr(pointwise, "bench_pointwise", _fake_pointwise_rows)
    out = tmp_path / "pw.json"
    argv = ["bench", "--op", "pointwise", "--backend", "numpy", *TINY, "--threads", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["threads"] == 1


def test_bench_options_reach_the_model_measurement(model_configs, monkeypatch, capsys) -> None:
    """Each option of the timed setting reaches ``ModelBenchConfig``: one parsed but not passed
    on would time another setting than the command line, the table and the JSON say."""
    _only(monkeypatch, "numpy")
    argv = ["bench", "--image-size", "40", "--skip-stride", "1", "--batch-size", "6"]
    argv += ["--steps", "4", "--warmup", "2", "--min-channels-per-group", "32", "--compile"]
    assert main(argv) == 0
    ((backend, names, cfg),) = model_configs
    assert (backend, names) == ("numpy", ["efficientnet-b0", "kefficientnet-b0"])
    assert (cfg.image_size, cfg.skip_stride, cfg.batch_size) == (40, 1, 6)
    assert (cfg.steps, cfg.warmup, cfg.min_channels_per_group) == (4, 2, 32)
    assert (cfg.compile_step, cfg.device) == (True, None)
    # numpy has no compiler: the progress line says its steps are timed eager only
    line = "measuring numpy: efficientnet-b0, kefficientnet-b0, eager (no compiler) train steps"
    assert line in capsys.readouterr().out


def test_bench_sets_the_threads_of_every_measured_backend(model_configs, monkeypatch) -> None:
    """``--threads N`` limits each measured framework (``train.frameworks.set_threads``); left
    out, each is told None (its own choice)."""
    from gpconv.train import frameworks

    calls = []
    monkeypatch.setattr(frameworks, "set_threads", lambda name, n: calls.append((name, n)))
    _only(monkeypatch, "numpy", "torch")
    assert main(["bench", "--threads", "1"]) == 0
    assert calls == [("numpy", 1), ("torch", 1)]
    calls.clear()
    assert main(["bench"]) == 0
    assert calls == [("numpy", None), ("torch", None)]


def test_a_model_named_twice_is_measured_once(model_configs, monkeypatch) -> None:
    _only(monkeypatch, "numpy")
    assert main(["bench", "--model", "kefficientnet-b0", "--model", "kefficientnet-b0"]) == 0
    assert [names for _, names, _ in model_configs] == [["kefficientnet-b0"]]


@pytest.mark.parametrize("op", ["model", "pointwise"])
def test_group_minimum_below_one_exits_2_before_measuring(op, monkeypatch, capsys) -> None:
    """``--min-channels-per-group 0`` (no kEffNet has groups of 0 channels) is a usage error
    naming the flag, the bound and the value, as in ``gpconv summary`` and ``train``."""
    monkeypatch.setattr(models, "bench_models", _measuring_fails)
    monkeypatch.setattr(pointwise, "bench_pointwise", _measuring_fails)
    argv = ["bench", "--backend", "numpy", "--op", op, "--min-channels-per-group", "0"]
    assert main(argv) == 2
    assert "Expected --min-channels-per-group >= 1, received 0" in capsys.readouterr().err


@pytest.mark.parametrize("size, code", [("7", 2), ("8", 0)])
def test_image_size_bound_is_the_smallest_input_b0_takes(
    size, code, model_configs, monkeypatch, capsys
) -> None:
    """core.arch.MIN_INPUT_SIZE (8): "the --image-size of gpconv summary, gpconv bench and
    gpconv train: one rule everywhere". 8 is measured, 7 refused with the bound named."""
    _only(monkeypatch, "numpy")
    assert main(["bench", "--image-size", size, "--skip-stride", "-1"]) == code
    if code:
        assert "Expected --image-size >= 8, received 7" in capsys.readouterr().err


def test_group_minimum_with_efficientnet_and_kefficientnet_is_measured(
    model_configs, monkeypatch, capsys
) -> None:
    """The group minimum is refused only when *no* measured model has groups: with a kEffNet
    among the models it applies to that one (and its recommendation line carries it)."""
    _only(monkeypatch, "numpy")
    argv = ["bench", "--model", "efficientnet-b0", "--model", "kefficientnet-b0"]
    assert main([*argv, "--min-channels-per-group", "32"]) == 0
    ((_, names, cfg),) = model_configs
    assert names == ["efficientnet-b0", "kefficientnet-b0"] and cfg.min_channels_per_group == 32
    assert "train kefficientnet-b0 with --backend numpy" in capsys.readouterr().out


def test_plot_without_matplotlib_is_a_usage_error_before_measuring(
    tmp_path, monkeypatch, capsys
) -> None:
    """--plot needs matplotlib (the [train] extra): without it, exit 2 naming the extra, before
    minutes of measuring whose chart could not be drawn."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.setattr(pointwise, "bench_pointwise", _measuring_fails)
    argv = ["bench", "--op", "pointwise", "--backend", "numpy", "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Expected matplotlib installed for --plot (pip install 'gpconv[train]')" in err
    assert "Traceback" not in err


def test_no_backend_installed_is_a_usage_error_naming_each(monkeypatch, capsys) -> None:
    """A default run on a machine with none of the default frameworks measures nothing: exit 2
    listing each with its install hint (not an empty table, nor "every backend failed")."""
    _missing(monkeypatch, "torch", "tensorflow", "cupy")
    monkeypatch.setattr(models, "bench_models", _measuring_fails)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "gpconv bench: error: no backend to measure: torch not installed" in err
    for name in ("torch", "tensorflow", "cupy"):
        assert f"pip install 'gpconv[{name}]'" in err


def test_a_default_run_lists_a_missing_backend_and_still_passes(
    model_configs, tmp_path, monkeypatch, capsys
) -> None:
    """Without --backend, a framework that is not installed is listed on its own line with its
    install hint, recorded in the JSON's "skipped", and does not fail the run (exit 0): it was
    not asked for. The installed defaults are measured."""
    _missing(monkeypatch, "cupy")
    out = tmp_path / "b.json"
    assert main(["bench", "--json", str(out)]) == 0
    assert (
        "  skipping cupy: not installed (pip install 'gpconv[cupy]')\n" in capsys.readouterr().out
    )
    assert [b for b, _, _ in model_configs] == ["torch", "tensorflow"]
    doc = json.loads(out.read_text())
    assert doc["skipped"] == [
        {"backend": "cupy", "reason": "not installed (pip install 'gpconv[cupy]')"}
    ]
    assert doc["config"]["backends"] == ["torch", "tensorflow"]


def test_the_warmup_note_follows_the_figures_it_qualifies(model_configs, monkeypatch, capsys):
    """With --warmup 0 the closing note (first calls timed) is the last line, after the table,
    ratios and recommendation it is about."""
    _only(monkeypatch, "numpy")
    assert main(["bench", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("note: --warmup 0 timed each first call"), lines[-3:]
    assert any(line.startswith("Recommendation: ") for line in lines[:-1])


# --- the statistics behind every figure ---------------------------------------------------------


def test_per_round_ratios_need_one_sample_per_round_of_each_model():
    keff, eff = ({"train_timing": {"samples_ms": s}} for s in ([2.0, 3.0, 4.0], [4.0, 6.0]))
    assert models.per_round_ratios(keff, eff) == []  # zip would pair 2 of 3 rounds silently
    eff["train_timing"]["samples_ms"].append(8.0)
    assert models.per_round_ratios(keff, eff) == [0.5, 0.5, 0.5]
    assert report._round_range([0.5]) == ""  # one round has no range
    assert report._round_range([0.5, 0.75]) == "; per round x0.50-0.75"
