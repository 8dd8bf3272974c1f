"""The reference itself as a backend (``gpconv check --backend numpy``): core.network in float64.

It anchors the conformance table (the reference checked against its golden files and
finite differences) and is the template for mutant backends in the conformance tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import network
from ..core.arch import Architecture
from ..core.params import init_params, validate_params
from ..core.pointwise import KPointwise, KPointwiseSpec, interleave
from .base import Backend, images_in, labels_in


@dataclass
class ReferenceModel:
    """A reference 'model': the architecture plus its canonical parameters."""

    arch: Architecture
    # Not in the repr: every array of B0 printed is ~660k characters of noise in a traceback.
    params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        # The dataclass repr would also print the whole Architecture (block specs, ~8k chars).
        dtypes = sorted({str(v.dtype) for v in self.params.values()})
        values = sum(int(np.size(v)) for v in self.params.values())
        return (
            f"ReferenceModel(arch={self.arch.name!r}, num_classes={self.arch.num_classes}, "
            f"params={len(self.params)} arrays, {values:,} values, {'/'.join(dtypes) or '-'})"
        )


class NumpyBackend(Backend):
    name = "numpy"
    requires = ("numpy",)
    dtype: Any = np.float64

    def build(self, arch: Architecture) -> ReferenceModel:
        return ReferenceModel(arch, init_params(arch, seed=0, dtype=self.dtype))

    def load_params(self, model: ReferenceModel, params: Mapping[str, np.ndarray]) -> None:
        validate_params(model.arch, params)
        model.params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}

    def export_params(self, model: ReferenceModel) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in model.params.items()}

    def forward(
        self, model: ReferenceModel, x: np.ndarray, training: bool = False
    ) -> dict[str, np.ndarray]:
        x = images_in(x, model.arch.stem.cin, self.dtype)
        _, cache = network.forward(model.arch, model.params, x, training=training)
        model.params.update(cache["moving_stats"])
        return dict(cache["intermediates"])

    def loss_and_grads(
        self, model: ReferenceModel, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        x = images_in(x, model.arch.stem.cin, self.dtype)
        labels = labels_in(labels, x.shape[0], model.arch.num_classes)
        out = network.loss_and_grads(model.arch, model.params, x, labels, training=training)
        model.params.update(out["moving_stats"])
        return {
            "loss": float(out["loss"]),
            "logits": out["logits"],
            "dx": out["dx"],
            "grads": out["grads"],
        }

    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        p = {k: np.asarray(v, self.dtype) for k, v in params.items()}
        x = images_in(x, spec.cin, self.dtype)
        y, cache = KPointwise.forward(spec, p, x, training=training)
        dx, grads = KPointwise.backward(cache, images_in(dy, spec.cout, self.dtype, "dy", "dy"))
        return {"y": y, "dx": dx, "grads": grads, "moving_stats": cache["moving_stats"]}

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        return interleave(np.asarray(x), groups)

    def param_count(self, model: ReferenceModel) -> tuple[int, int]:
        """Counted from the model's own arrays (not from ``arch``, which conformance compares
        against), trainable or not as ``arch.param_shapes`` marks each name."""
        shapes = model.arch.param_shapes()
        trainable = non_trainable = 0
        for name, value in model.params.items():
            if name not in shapes:
                raise ValueError(f"Expected parameters of {model.arch.name}, found {name!r}")
            if shapes[name][1]:
                trainable += int(np.size(value))
            else:
                non_trainable += int(np.size(value))
        return trainable, non_trainable


BACKEND = NumpyBackend()
