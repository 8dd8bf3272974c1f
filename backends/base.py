"""The backend interface: what every framework adapter implements, and what conformance calls.

A backend turns a ``core.arch.Architecture`` into a native model and exchanges parameters with the
reference in canonical form (``{name: np.ndarray}``, Keras layouts, see ``core.params``). All data
crossing this interface is NumPy, channels-last ``(N, H, W, C)``; each backend converts at the edge.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.arch import Architecture
from ..core.pointwise import KPointwiseSpec


class Backend:
    """Base class of backend adapters. Subclasses set ``name``, ``requires`` and ``extra`` and
    implement the methods below; ``is_available`` needs no override."""

    name: str = ""
    requires: tuple[str, ...] = ()  # importable modules the backend needs
    extra: str = ""  # pip extra that installs them

    @property
    def install_hint(self) -> str:
        return f"pip install 'gpconv[{self.extra}]'" if self.extra else ""

    def is_available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    # --- whole networks -------------------------------------------------------------------
    def build(self, arch: Architecture) -> Any:
        """A native float32 model of ``arch`` (returns logits), freshly initialised."""
        raise NotImplementedError

    def load_params(self, model: Any, params: Mapping[str, np.ndarray]) -> None:
        """Copy canonical parameters into ``model``; one ``ValueError`` lists every bad
        name/shape."""
        raise NotImplementedError

    def export_params(self, model: Any) -> dict[str, np.ndarray]:
        """Every parameter (trainable and moving statistics) in canonical names and layouts, as
        copies: the export must not change when the model does."""
        raise NotImplementedError

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        """Run ``x`` ``(N, H, W, 3)``; returns ``{"logits", "stem", <block names>..., "top"}``
        (the same intermediates as ``core.network.forward``'s cache). Training mode uses batch
        statistics and updates the model's moving statistics."""
        raise NotImplementedError

    def loss_and_grads(
        self, model: Any, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        """Mean softmax cross-entropy and its gradients: ``{"loss": float, "logits",
        "dx" (N, H, W, 3), "grads": {canonical trainable name: array in Keras layout}}``;
        updates moving stats in training."""
        raise NotImplementedError

    # --- single layers (property tests) ---------------------------------------------------
    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        """Build the backend's kPointwise layer for ``spec``, load ``params`` (local names of
        ``spec.param_shapes()``), run ``x`` ``(N, H, W, Cin)`` and pull back ``dy``.
        Returns ``{"y", "dx", "grads": {local name: array}, "moving_stats": {local name: array}}``.
        """
        raise NotImplementedError

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        """The backend's channel interleave of channels-last ``x``."""
        raise NotImplementedError

    def param_count(self, model: Any) -> tuple[int, int]:
        """``(trainable, non_trainable)`` as the framework itself counts them."""
        raise NotImplementedError
