"""The reference on the GPU: ``core`` run unchanged on CuPy arrays (the array namespace comes from
the inputs). Conformance compares it, in float32, with the NumPy float64 reference.

Single kPointwise layers run on the fused CUDA kernels by default (``fused.FusedKPointwise``:
no separate interleave pass); ``CupyBackend(kpointwise_impl="core")`` runs core's
``KPointwise`` instead. Whole networks use core's network on CuPy arrays either way.

Images, labels, ``x`` and ``dy`` are checked on the host as the numpy backend checks them
(``images_in``, ``labels_in``: floating ``(N, H, W, C)``, never a silent cast of integer images)
before they go to the device in float32.

The module imports without CuPy; ``is_available`` also requires a CUDA device.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...core import network
from ...core.pointwise import KPointwise, KPointwiseSpec, interleave
from ..base import images_in, labels_in
from ..numpy_reference import NumpyBackend, ReferenceModel
from .fused import FusedKPointwise


def _cupy() -> Any:
    import cupy

    return cupy


def _to_host(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_host(v) for k, v in tree.items()}
    return tree.get() if hasattr(tree, "get") else tree


KPOINTWISE_IMPLS = {"fused": FusedKPointwise, "core": KPointwise}


class CupyBackend(NumpyBackend):
    """``kpointwise_impl``: ``"fused"`` (the CUDA kernels of ``fused``) or ``"core"``."""

    name = "cupy"
    requires = ("cupy",)
    extra = "cupy"
    impls = tuple(KPOINTWISE_IMPLS)
    dtype: Any = np.float32

    def __init__(self, kpointwise_impl: str = "fused") -> None:
        self.kpointwise_impl = self.impl = self.checked_impl(kpointwise_impl, "kpointwise_impl")

    def is_available(self) -> bool:
        if importlib.util.find_spec("cupy") is None:
            return False
        try:
            return _cupy().cuda.runtime.getDeviceCount() > 0
        except Exception:  # CuPy installed without a driver or device
            return False

    @property
    def install_hint(self) -> str:
        return "pip install 'gpconv[cupy]' (needs a CUDA device)"

    def _device(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        cp = _cupy()
        return {k: cp.asarray(v, dtype=self.dtype) for k, v in params.items()}

    def forward(
        self, model: ReferenceModel, x: np.ndarray, training: bool = False
    ) -> dict[str, np.ndarray]:
        cp = _cupy()
        x = images_in(x, model.arch.stem.cin, self.dtype)  # checked on the host, as numpy's
        params = self._device(model.params)
        _, cache = network.forward(model.arch, params, cp.asarray(x), training=training)
        model.params.update(_to_host(cache["moving_stats"]))
        return _to_host(dict(cache["intermediates"]))

    def loss_and_grads(
        self, model: ReferenceModel, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        cp = _cupy()
        x = images_in(x, model.arch.stem.cin, self.dtype)
        labels = labels_in(labels, x.shape[0], model.arch.num_classes)
        out = network.loss_and_grads(
            model.arch,
            self._device(model.params),
            cp.asarray(x),
            cp.asarray(labels),
            training=training,
        )
        model.params.update(_to_host(out["moving_stats"]))
        return {
            "loss": float(out["loss"]),
            "logits": _to_host(out["logits"]),
            "dx": _to_host(out["dx"]),
            "grads": _to_host(out["grads"]),
        }

    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        cp = _cupy()
        x = images_in(x, spec.cin, self.dtype)
        dy = images_in(dy, spec.cout, self.dtype, "dy", "dy")
        op = KPOINTWISE_IMPLS[self.kpointwise_impl]
        y, cache = op.forward(spec, self._device(params), cp.asarray(x), training)
        dx, grads = op.backward(cache, cp.asarray(dy))
        return {
            "y": _to_host(y),
            "dx": _to_host(dx),
            "grads": _to_host(grads),
            "moving_stats": _to_host(cache["moving_stats"]),
        }

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        return _to_host(interleave(_cupy().asarray(x), groups))


BACKEND = CupyBackend()
