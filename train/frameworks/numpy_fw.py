"""The reference (``core.network``, float64) as a training framework: slow, exact, dependency-free.

Steps go through ``core.network.loss_and_grads`` directly (not the adapter's) so that dropout and
drop-connect masks come from a generator seeded by ``(seed, epoch, step)``: resume is bit-exact.
The optimisers follow Keras's update rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import backends
from ...core import network
from ...core.arch import Architecture
from ...core.params import init_params
from ..distributed import Dist
from ..sampling import STREAM_DROPOUT, epoch_rng
from .base import OptimConfig


class NumpyOptimizer:
    """Keras's SGD (``v = m*v - lr*g; p += v``) and Adam (bias correction folded into the rate)
    on a dict of arrays. State: ``velocity/<name>`` or ``m/<name>``, ``v/<name>`` and ``t``."""

    def __init__(self, cfg: OptimConfig) -> None:
        self.cfg = cfg
        self.lr = cfg.lr
        self.slots: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place from ``grads``."""
        c = self.cfg
        self.t += 1
        if c.kind == "sgd":
            for k, g in grads.items():
                v = self.slots.get(f"velocity/{k}", 0.0) * c.momentum - self.lr * g
                self.slots[f"velocity/{k}"] = v
                params[k] = params[k] + v
            return
        lr_t = self.lr * np.sqrt(1 - c.beta2**self.t) / (1 - c.beta1**self.t)
        for k, g in grads.items():
            m = c.beta1 * self.slots.get(f"m/{k}", 0.0) + (1 - c.beta1) * g
            v = c.beta2 * self.slots.get(f"v/{k}", 0.0) + (1 - c.beta2) * g * g
            self.slots[f"m/{k}"], self.slots[f"v/{k}"] = m, v
            params[k] = params[k] - lr_t * m / (np.sqrt(v) + c.eps)


class NumpyFramework:
    """``gpconv.backends.get("numpy")``'s ``ReferenceModel`` trained with ``NumpyOptimizer``."""

    name = "numpy"

    def __init__(self, arch: Architecture, optim: OptimConfig, seed: int, dist: Dist) -> None:
        if dist.world > 1:
            raise ValueError(
                "The numpy backend trains in one process; use --backend torch under torchrun"
            )
        self.arch, self.dist = arch, dist
        self.backend = backends.get("numpy")
        self.model = self.backend.build(arch)
        self.backend.load_params(self.model, init_params(arch, seed, dtype=np.float64))
        self.opt = NumpyOptimizer(optim)
        self._seed, self._epoch, self._step = seed, 0, 0

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def begin_epoch(self, seed: int, epoch: int) -> None:
        self._seed, self._epoch, self._step = seed, epoch, 0

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        rng = epoch_rng(self._seed, self._epoch, STREAM_DROPOUT, self._step)
        self._step += 1
        params = self.model.params
        out = network.loss_and_grads(
            self.arch, params, x.astype(np.float64), y, training=True, rng=rng
        )
        self.opt.step(params, out["grads"])
        params.update(out["moving_stats"])
        return float(out["loss"]), np.asarray(out["logits"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits, _ = network.forward(
            self.arch, self.model.params, x.astype(np.float64), training=False
        )
        return np.asarray(logits)

    def export_params(self) -> dict[str, np.ndarray]:
        return self.backend.export_params(self.model)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        self.backend.load_params(self.model, params)

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return dict(self.opt.slots), {"t": self.opt.t, "kind": self.opt.cfg.kind}

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.opt.slots = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        self.opt.t = int(meta["t"])
