"""The reference (``core.network``) as a training framework: NumPy float64 (slow, exact,
dependency-free) or CuPy float32 on a CUDA device (``CupyFramework``: the same code on the GPU).

Steps go through ``core.network.loss_and_grads`` directly (not the adapter's) so that dropout and
drop-connect masks come from a generator seeded by ``(seed, epoch, step)``: resume is bit-exact.
The optimisers follow Keras's update rules. Parameters and optimiser slots live on the framework's
device; ``export_params`` / ``optimizer_state`` hand back NumPy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ... import backends
from ...core import network
from ...core.arch import Architecture
from ...core.params import init_params, validate_params
from ..distributed import Dist
from ..sampling import STREAM_DROPOUT, epoch_rng
from .base import OptimConfig, format_device


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
        lr_t = self.lr * math.sqrt(1 - c.beta2**self.t) / (1 - c.beta1**self.t)
        for k, g in grads.items():
            m = c.beta1 * self.slots.get(f"m/{k}", 0.0) + (1 - c.beta1) * g
            v = c.beta2 * self.slots.get(f"v/{k}", 0.0) + (1 - c.beta2) * g * g
            self.slots[f"m/{k}"], self.slots[f"v/{k}"] = m, v
            params[k] = params[k] - lr_t * m / (v**0.5 + c.eps)  # ** 0.5: any array library


class NumpyFramework:
    """The reference network (``core.network``) trained with ``NumpyOptimizer``, in float64
    NumPy arrays held in ``params``."""

    name = "numpy"
    dtype: Any = np.float64
    device_label = format_device("cpu")

    def __init__(self, arch: Architecture, optim: OptimConfig, seed: int, dist: Dist) -> None:
        if dist.world > 1:
            raise ValueError(
                f"The {self.name} backend trains in one process; use --backend torch under torchrun"
            )
        self.arch, self.dist = arch, dist
        self.params: dict[str, Any] = {}
        self.load_params(init_params(arch, seed, dtype=np.float64))
        self.opt = NumpyOptimizer(optim)
        self._seed, self._epoch, self._step = seed, 0, 0

    def to_device(self, a: Any, dtype: Any = None) -> Any:
        """A host array as this framework's array (``dtype`` default: the framework's)."""
        return np.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def begin_epoch(self, seed: int, epoch: int) -> None:
        self._seed, self._epoch, self._step = seed, epoch, 0

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        rng = epoch_rng(self._seed, self._epoch, STREAM_DROPOUT, self._step)
        self._step += 1
        out = network.loss_and_grads(
            self.arch,
            self.params,
            self.to_device(x),
            self.to_device(y, np.int64),
            training=True,
            rng=rng,
        )
        self.opt.step(self.params, out["grads"])
        self.params.update(out["moving_stats"])
        return float(out["loss"]), self.to_host(out["logits"])

    def begin_evaluation(self) -> None:
        pass  # one process: its model is the one saved

    def predict(self, x: np.ndarray) -> np.ndarray:
        logits, _ = network.forward(self.arch, self.params, self.to_device(x), training=False)
        return self.to_host(logits)

    def export_params(self) -> dict[str, np.ndarray]:
        return {k: self.to_host(v) for k, v in self.params.items()}

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        validate_params(self.arch, params)  # one error listing every bad name or shape
        self.params = {k: self.to_device(v) for k, v in params.items()}

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        slots = {k: self.to_host(v) for k, v in self.opt.slots.items()}
        return slots, {"t": self.opt.t, "kind": self.opt.cfg.kind}

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.opt.slots = {k: self.to_device(v) for k, v in arrays.items()}
        self.opt.t = int(meta["t"])


def cupy_device_label() -> str:
    """CuPy's current device, ``"cuda:<index> <GPU name>"``."""
    import cupy

    index = cupy.cuda.Device().id
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return format_device("cuda", index, name.decode(errors="replace"))


class CupyFramework(NumpyFramework):
    """The same reference network on a CUDA device, in CuPy float32 arrays."""

    name = "cupy"
    dtype: Any = np.float32

    def __init__(self, arch: Architecture, optim: OptimConfig, seed: int, dist: Dist) -> None:
        adapter = backends.get(self.name)
        if not adapter.is_available():  # CuPy installed and a CUDA device present
            raise ValueError(
                f"The cupy backend needs CuPy and a CUDA device: {adapter.install_hint}"
            )
        super().__init__(arch, optim, seed, dist)
        self.device_label = cupy_device_label()

    def to_device(self, a: Any, dtype: Any = None) -> Any:
        import cupy

        return cupy.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_host(self, a: Any) -> np.ndarray:
        import cupy

        return cupy.asnumpy(a)
