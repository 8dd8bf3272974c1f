"""``perf.models``: sizes, ratios and the recommendation of ``gpconv bench`` (found by
mutation testing). Nothing is timed: ``create`` is replaced by a do-nothing framework, as in
tests/test_bench.py."""

from __future__ import annotations

import pytest

from gpconv.perf import models


class _Idle:
    """A framework whose steps do nothing (the timings are not what is tested here)."""

    device_label = "cpu"

    def predict(self, x) -> None:
        pass

    def train_step(self, x, y) -> None:
        pass


def test_sizes_and_ratios_are_those_of_the_measured_image_size(monkeypatch) -> None:
    """At 32x32 with skip_stride_cnt 3 and 10 classes, DESIGN.md gives conv+dense MACs of
    403,436,272 (EfficientNet-B0) and 81,153,588 (kEffNet-B0 16ch), and trainable parameters
    4,020,358 and 639,702: the rows must carry those (not the 224-px figures), and the ratios
    are kEffNet over EfficientNet (MACs 0.201, params 0.159)."""
    monkeypatch.setattr(models, "create", lambda *a, **k: _Idle())
    cfg = models.ModelBenchConfig(image_size=32, skip_stride=3, batch_size=2, steps=1, warmup=0)
    rows = models.bench_models("numpy", ["efficientnet-b0", "kefficientnet-b0"], cfg)
    assert [(r["params_trainable"], r["macs_per_image"]) for r in rows] == [
        (4_020_358, 403_436_272),
        (639_702, 81_153_588),
    ]
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
