"""TensorFlow / Keras 3 backend: kEffNet and EfficientNet B0–B7 as Keras Functional models built
from ``core.arch``, the layers of the method, and parameter exchange with the reference.

    from gpconv.backends.tensorflow import KEfficientNetB0, load_params, export_params
    model = KEfficientNetB0(classes=10, input_shape=(32, 32, 3), skip_stride_cnt=3)

Importing this package imports TensorFlow and Keras and registers every custom layer, as Keras
extension libraries do, so ``keras.models.load_model`` can rebuild saved models whatever the
import order. (The backend registry's ``get("tensorflow")`` therefore imports TensorFlow too.)
Without TensorFlow the import still succeeds, so the registry can report the backend as not
installed; the names (resolved lazily, PEP 562) then raise ``ImportError`` with the pip command.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **{
        f"{family}B{i}": "applications"
        for family in ("EfficientNet", "KEfficientNet")
        for i in range(8)
    },
    "batch_norm_layers": "models",
    "build_model": "models",
    "intermediates_model": "models",
    "CorrectPadding2D": "padding",
    "SlabGradDepthwiseConv2D": "depthwise",
    "FusedBatchNormalization": "normalization",
    "GroupedPointwise": "pointwise",
    "InterleaveChannels": "pointwise",
    "KPointwise": "pointwise",
    "canonical_variables": "params",
    "export_params": "params",
    "load_params": "params",
    "IMPLS": "grouped",
    "resolve_impl": "grouped",
}
_LAYER_MODULES = (
    "depthwise",
    "normalization",
    "padding",
    "pointwise",
)  # imported together: registers every custom layer


def _register_layers() -> None:
    for module in _LAYER_MODULES:
        importlib.import_module(f".{module}", __name__)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _register_layers()
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)

try:
    _register_layers()
except ImportError:  # no TensorFlow / Keras 3 on TF: every name access says how to install it
    pass
