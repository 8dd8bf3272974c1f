"""``perf.models``: sizes, ratios and the recommendation of ``gpconv bench`` (found by
mutation testing). Nothing is timed: ``create`` is replaced by a do-nothing framework, as in
tests/test_bench.py."""

from __future__ import annotations

import pytest

from gpconv.core.arch import by_name
from gpconv.perf import models, timing


class _Idle:
    """A framework whose steps do nothing (the timings are not what is tested here)."""

    device_label = "cpu"

    def predict(self, x) -> None:
        pass

    def train_step(self, x, y) -> None:
        pass


def test_sizes_and_ratios_are_those_of_the_measured_image_size(monkeypatch) -> None:
    """At 32x32 with skip_stride_cnt 3 and 10 classes, DESIGN.md gives conv+dense MACs of
    403,436,272 (EfficientNet-B0) and 81,153,588 (kEffNet-B0 16ch), trainable parameters
    4,020,358 and 639,702 and non-trainable ones (BN moving statistics) 42,016 and 45,632: the
    rows must carry those (not the 224-px figures), and the ratios are kEffNet over
    EfficientNet (MACs 0.201, params 0.159)."""
    monkeypatch.setattr(models, "create", lambda *a, **k: _Idle())
    cfg = models.ModelBenchConfig(image_size=32, skip_stride=3, batch_size=2, steps=1, warmup=0)
    rows = models.bench_models("numpy", ["efficientnet-b0", "kefficientnet-b0"], cfg)
    assert [
        (r["params_trainable"], r["params_non_trainable"], r["macs_per_image"]) for r in rows
    ] == [(4_020_358, 42_016, 403_436_272), (639_702, 45_632, 81_153_588)]
    (ratio,) = models.ratios(rows)
    assert ratio["macs_ratio"] == pytest.approx(81_153_588 / 403_436_272)
    assert ratio["params_ratio"] == pytest.approx(639_702 / 4_020_358)


def _row(model: str, params: int, ms: float = 10.0, backend: str = "torch", **kw) -> dict:
    return {
        "backend": backend,
        "model": model,
        "arch": model,
        "params_trainable": params,
        "macs_per_image": params,
        "train_step_ms": ms,
        "forward_images_per_s": 1.0,
        **kw,
    }


def test_each_kefficientnet_is_compared_with_the_efficientnet_of_its_variant() -> None:
    """``--model efficientnet-b0 --model efficientnet-b1 --model kefficientnet-b1``: kEffNet-B1
    is divided by EfficientNet-B1 (params 300 / 600 = 0.5), not by B0 (300 / 400); without
    EfficientNet-B1 there is nothing to compare it with, and no ratio."""
    b0, b1, kb1 = (
        _row("efficientnet-b0", 400),
        _row("efficientnet-b1", 600),
        _row("kefficientnet-b1", 300),
    )
    (ratio,) = models.ratios([b0, b1, kb1])
    assert (ratio["efficientnet"], ratio["params_ratio"]) == ("efficientnet-b1", 0.5)
    assert models.ratios([b0, kb1]) == []


def test_runner_up_names_its_step_mode() -> None:
    """TensorFlow 10 ms, compiled torch 12 ms, eager torch 30 ms: the runner-up is
    "torch --compile" (the setup that ran 12 ms, 1.2x slower), not plain "torch", which would
    send the user to the eager torch step that ran 30 ms."""
    rows = [
        _row("kefficientnet-b0", 1, 10.0, "tensorflow"),
        _row("kefficientnet-b0", 1, 12.0, "torch", compiled=True),
        _row("kefficientnet-b0", 1, 30.0, "torch"),
    ]
    best = models.recommend(rows)["kefficientnet-b0"]
    assert (best["backend"], best["runner_up"]) == ("tensorflow", "torch --compile")
    assert best["speedup_over_runner_up"] == pytest.approx(1.2)


def test_speeds_are_the_batch_over_the_median_of_each_measurement(monkeypatch) -> None:
    """Forward passes of median 0.1 s and train steps of median 0.4 s (rounds of half, one and
    four times the median: the best and the mean differ from it), batch 8: forward_ms 100 and
    80 img/s, train_step_ms 400 and 20 img/s, each from its own measurement, both measured with
    the config's steps and warm-up."""
    seen = []

    def fake(fns, steps, warmup, clock=None):
        s = 0.4 if seen else 0.1  # forward passes are timed first
        seen.append((steps, warmup))
        return {k: timing.Timing(s, s / 2, (s / 2, s, 4 * s)) for k in fns}

    monkeypatch.setattr(models, "create", lambda *a, **k: _Idle())
    monkeypatch.setattr(models, "time_round_robin", fake)
    cfg = models.ModelBenchConfig(image_size=8, skip_stride=0, batch_size=8, steps=3, warmup=2)
    (row,) = models.bench_models("numpy", ["kefficientnet-b0"], cfg)
    assert row["forward_ms"] == pytest.approx(100.0)
    assert row["forward_images_per_s"] == pytest.approx(80.0)
    assert row["train_step_ms"] == pytest.approx(400.0)
    assert row["train_images_per_s"] == pytest.approx(20.0)
    assert row["forward_timing"]["best_ms"] == pytest.approx(50.0)
    assert row["train_timing"]["samples_ms"] == pytest.approx([200.0, 400.0, 1600.0])
    assert seen == [(3, 2), (3, 2)]


@pytest.mark.parametrize("backend, options", [("torch", {"device": "cpu"}), ("numpy", {})])
def test_the_device_goes_to_torch_only(monkeypatch, backend, options) -> None:
    """``ModelBenchConfig.device`` steers torch (``--device``): it must reach torch's framework,
    and no other backend's (they take no device)."""
    seen = []

    def create(backend, arch, optim, seed, compile_step=False, **kw):
        seen.append(kw)
        return _Idle()

    monkeypatch.setattr(models, "create", create)
    cfg = models.ModelBenchConfig(
        image_size=8, skip_stride=0, batch_size=2, steps=1, warmup=0, device="cpu"
    )
    models.bench_models(backend, ["kefficientnet-b0"], cfg)
    assert seen == [options]


def test_config_defaults_are_those_of_gpconv_bench() -> None:
    """An API user's ``ModelBenchConfig()`` measures what ``gpconv bench`` alone measures: the
    paper's CIFAR-10 setting (32x32, skip_stride_cnt 3, kEffNet 16ch; docs/method.md), batch 32
    (docs/gpu.md), 10 classes, after an untimed warm-up call."""
    cfg = models.ModelBenchConfig()
    assert (cfg.image_size, cfg.skip_stride, cfg.batch_size) == (32, 3, 32)
    assert (cfg.min_channels_per_group, cfg.num_classes) == (16, 10)
    assert cfg.warmup >= 1 and cfg.steps >= 1 and not cfg.compile_step


def test_rows_say_where_the_framework_ran(monkeypatch) -> None:
    """A row's ``device`` is the framework's own label (a GPU run names its GPU)."""

    class OnGpu(_Idle):
        device_label = "cuda:0 NVIDIA H200"

    monkeypatch.setattr(models, "create", lambda *a, **k: OnGpu())
    cfg = models.ModelBenchConfig(image_size=8, skip_stride=0, batch_size=2, steps=1, warmup=0)
    (row,) = models.bench_models("torch", ["kefficientnet-b0"], cfg)
    assert row["device"] == "cuda:0 NVIDIA H200"


def test_a_compiled_row_carries_the_compiled_steps_timing(monkeypatch) -> None:
    """With --compile, eager steps of 0.4 s and compiled ones of 0.1 s: the compiled row says
    100 ms per step, the eager one 400 ms (forward passes, eager only, 0.05 s in both)."""

    def fake(fns, steps, warmup, clock=None):
        def seconds(key):
            return 0.05 if isinstance(key, str) else (0.1 if key[1] else 0.4)

        return {k: timing.Timing(seconds(k), seconds(k), (seconds(k),)) for k in fns}

    monkeypatch.setattr(models, "create", lambda *a, **k: _Idle())
    monkeypatch.setattr(models, "time_round_robin", fake)
    cfg = models.ModelBenchConfig(
        image_size=8, skip_stride=0, batch_size=2, steps=1, warmup=0, compile_step=True
    )
    rows = models.bench_models("torch", ["kefficientnet-b0"], cfg)
    got = {r["compiled"]: (r["train_step_ms"], r["forward_ms"]) for r in rows}
    assert got == {False: pytest.approx((400.0, 50.0)), True: pytest.approx((100.0, 50.0))}


@pytest.mark.parametrize("skip_stride", [-1, 0])
def test_rows_are_of_the_skip_stride_asked_for(monkeypatch, skip_stride: int) -> None:
    """The MACs of a row are those of the architecture at the config's skip_stride_cnt (core.arch
    builds it), which differ from the default 3's 81,153,588 (DESIGN.md, 32x32)."""
    monkeypatch.setattr(models, "create", lambda *a, **k: _Idle())
    cfg = models.ModelBenchConfig(
        image_size=32, skip_stride=skip_stride, batch_size=2, steps=1, warmup=0
    )
    (row,) = models.bench_models("numpy", ["kefficientnet-b0"], cfg)
    expected = by_name("kefficientnet-b0", 10, 16, skip_stride).macs(32)
    assert row["macs_per_image"] == expected != 81_153_588
