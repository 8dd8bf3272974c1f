"""Whole-network speed per backend and model: forward images/s and train-step time.

Both are measured through the same ``train.frameworks`` steps that ``gpconv train`` runs (SGD,
batch of random channels-last images), so a bench number is what a training run will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..core.arch import by_name
from ..train.frameworks import COMPILABLE, OptimConfig, create
from .timing import time_round_robin

DEFAULT_MODELS = ("efficientnet-b0", "kefficientnet-b0")
# The numpy backend is the float64 reference (minutes per B0 step); it is benched only on request.
DEFAULT_BACKENDS = ("torch", "tensorflow", "cupy")


@dataclass(frozen=True)
class ModelBenchConfig:
    """What to measure: square ``image_size`` images, ``batch_size`` per step, ``steps`` timed
    rounds after ``warmup`` untimed calls of each model (median reported); with
    ``compile_step``, train steps of backends with a compiler are also timed compiled (see
    ``train.frameworks.create``; compilation happens in the warm-up); torch runs on ``device``."""

    image_size: int = 32
    skip_stride: int = 3
    batch_size: int = 32
    steps: int = 5
    warmup: int = 1
    min_channels_per_group: int = 16
    num_classes: int = 10
    seed: int = 0
    compile_step: bool = False
    device: str | None = None  # torch's (train.device); None: CUDA when available

    def compiles(self, backend: str) -> bool:
        """Whether ``backend``'s train steps are also timed compiled."""
        return self.compile_step and backend in COMPILABLE


def setup(row: dict[str, Any]) -> str:
    """How a result row's steps ran, as the command-line options say it: ``"torch"`` or
    ``"torch --compile"``."""
    return row["backend"] + (" --compile" if row.get("compiled") else "")


def bench_models(
    backend: str, models: Sequence[str], cfg: ModelBenchConfig
) -> list[dict[str, Any]]:
    """One result row per model and step mode (eager; also compiled if ``cfg.compiles``):
    the architecture's size and cost, and the measured speeds.

    All models of the backend are built first, then timed round-robin: forward passes in rounds
    of one per model, then train steps likewise. So the kEffNet/EfficientNet ratios (and eager
    vs compiled) compare calls made in the same minutes of a shared machine rather than in
    consecutive ones. ``predict`` runs eagerly in either mode, so it is timed once per model."""
    archs = {
        m: by_name(m, cfg.num_classes, cfg.min_channels_per_group, cfg.skip_stride) for m in models
    }
    modes = (False, True) if cfg.compiles(backend) else (False,)
    options = {"device": cfg.device} if backend == "torch" else {}
    fws = {
        (m, compiled): create(
            backend, archs[m], OptimConfig("sgd", 1e-3), cfg.seed, compile_step=compiled, **options
        )
        for compiled in modes
        for m in models
    }
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal((cfg.batch_size, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    y = rng.integers(0, cfg.num_classes, cfg.batch_size)
    forward = time_round_robin(
        {m: partial(fws[(m, False)].predict, x) for m in archs}, cfg.steps, cfg.warmup
    )
    train = time_round_robin(
        {key: partial(fw.train_step, x, y) for key, fw in fws.items()}, cfg.steps, cfg.warmup
    )
    rows = []
    for model, compiled in fws:
        arch = archs[model]
        trainable, non_trainable = arch.param_count()
        fwd, step = forward[model], train[(model, compiled)]
        rows.append(
            {
                "backend": backend,
                "compiled": compiled,
                "device": fws[(model, compiled)].device_label,
                "model": model,
                "arch": arch.name,
                "params_trainable": trainable,
                "params_non_trainable": non_trainable,
                "macs_per_image": arch.macs(cfg.image_size),
                "forward_ms": fwd.ms,
                "forward_images_per_s": cfg.batch_size / fwd.median,
                "train_step_ms": step.ms,
                "train_images_per_s": cfg.batch_size / step.median,
                "forward_timing": fwd.as_dict(),
                "train_timing": step.as_dict(),
            }
        )
    return rows


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend and step mode, kEffNet / EfficientNet for every measured kEffNet: parameter
    and MAC ratios from the architectures, speed ratios from this run's measurements
    (``train_step_ratio < 1``: kEffNet trains faster; ``forward_speed_ratio > 1``: kEffNet
    infers faster); ``train_step_ratio_per_round`` pairs the steps of each round
    (``per_round_ratios``)."""
    out = []
    by_key = {(setup(r), r["model"]): r for r in results}
    for r in results:
        family, _, variant = r["model"].partition("-")
        e = by_key.get((setup(r), f"efficientnet-{variant}"))
        if family != "kefficientnet" or e is None:
            continue
        out.append(
            {
                "backend": r["backend"],
                "compiled": r.get("compiled", False),
                "kefficientnet": r["arch"],
                "efficientnet": e["arch"],
                "params_ratio": r["params_trainable"] / e["params_trainable"],
                "macs_ratio": r["macs_per_image"] / e["macs_per_image"],
                "train_step_ratio": r["train_step_ms"] / e["train_step_ms"],
                "train_step_ratio_per_round": per_round_ratios(r, e),
                "forward_speed_ratio": r["forward_images_per_s"] / e["forward_images_per_s"],
            }
        )
    return out


def per_round_ratios(keff: dict[str, Any], eff: dict[str, Any]) -> list[float]:
    """kEffNet / EfficientNet train-step time in each round of ``time_round_robin``: the two
    steps of a round ran back to back, so each ratio is free of the drift *between* rounds that
    moves both medians (10-15% a minute on a shared machine); their spread shows how far one
    run's ratio can be trusted. Empty when the rows carry no per-round samples."""
    k = keff.get("train_timing", {}).get("samples_ms", [])
    e = eff.get("train_timing", {}).get("samples_ms", [])
    return [a / b for a, b in zip(k, e)] if len(k) == len(e) else []


def recommend(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, the backend and step mode with the shortest train step (and its margin over the
    next)."""
    best: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r for r in results if r["model"] == model), key=lambda r: r["train_step_ms"])
        best[model] = {
            "backend": rows[0]["backend"],
            "compiled": rows[0].get("compiled", False),
            "device": rows[0].get("device", "cpu"),
            "train_step_ms": rows[0]["train_step_ms"],
            "runner_up": setup(rows[1]) if len(rows) > 1 else None,
            "speedup_over_runner_up": rows[1]["train_step_ms"] / rows[0]["train_step_ms"]
            if len(rows) > 1
            else None,
        }
    return best
