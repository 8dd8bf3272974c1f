"""PyTorch backend: EfficientNet and kEffNet B0–B7 as ``nn.Module``s built from ``core.arch``,
proven equal to the reference by ``tests/test_torch_backend.py``.

    >>> import torch
    >>> from gpconv.backends.torch import kefficientnet_b0, load_params, export_params
    >>> model = kefficientnet_b0(num_classes=10, min_channels_per_group=16, skip_stride_cnt=3)
    >>> logits = model(torch.randn(8, 3, 32, 32))  # NCHW in, logits out

Layout of this package: ``batchnorm`` (Keras BN), ``conv`` (Keras padding), ``eager`` (leaner
custom gradients for eager training), ``pointwise`` (grouped 1×1, interleave, kPointwise),
``blocks`` (stem, MBConv, head), ``model`` (the network and constructors), ``params`` (canonical
parameter exchange), ``adapter`` (the ``Backend``).

Names are resolved lazily (PEP 562) so that ``gpconv.backends.get("torch")`` — which imports
``adapter`` through this package — works, and reports "not installed", without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "EfficientNet": "model",
    "build": "model",
    **{f"efficientnet_{v}": "model" for v in _VARIANTS},
    **{f"kefficientnet_{v}": "model" for v in _VARIANTS},
    "GroupedPointwise2d": "pointwise",
    "Interleave": "pointwise",
    "KPointwise": "pointwise",
    "IMPLS": "pointwise",
    "DEFAULT_IMPL": "pointwise",
    "KerasBatchNorm2d": "batchnorm",
    "update_bn": "batchnorm",
    "replace_all_batch_norm_modules_": "batchnorm",
    "KerasConv2d": "conv",
    "Stem": "blocks",
    "MBConv": "blocks",
    "Head": "blocks",
    "DropConnect": "blocks",
    "load_params": "params",
    "export_params": "params",
    "load_file": "params",
    "torch_name": "params",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
