"""The PyTorch ``Backend`` adapter (``gpconv.backends.get("torch")``): NumPy channels-last
``(N, H, W, C)`` at this interface, NCHW tensors (channels_last memory) inside.

This module must import without torch (the registry imports it before ``is_available()``), so
torch and the modules that need it are imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...core._validate import require_bool
from ...core.arch import Architecture
from ...core.pointwise import KPointwiseSpec
from ..base import Backend, images_in, labels_in


def _to_nchw(x: np.ndarray, channels_last: bool, dtype: Any = np.float32) -> Any:
    """Channels-last NumPy ``(N, ..., C)`` -> tensor ``(N, C, ...)`` of ``dtype``."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)).movedim(-1, 1)
    return (
        t.contiguous(memory_format=torch.channels_last)
        if channels_last and t.dim() == 4
        else t.contiguous()
    )


def _to_nhwc(t: Any) -> np.ndarray:
    """Tensor ``(N, C, ...)`` -> channels-last NumPy ``(N, ..., C)``."""
    return np.ascontiguousarray(t.detach().movedim(1, -1).cpu().numpy())


def model_loss_and_grads(
    model: Any, x: np.ndarray, labels: np.ndarray, training: bool
) -> dict[str, Any]:
    """Logits, the mean softmax cross-entropy and its gradients with respect to ``x`` ``(N, H,
    W, C)`` (returned channels-last) and every parameter (canonical names), computed on the CPU
    in ``x``'s dtype (inputs already checked)."""
    import torch
    import torch.nn.functional as F

    from .params import export_grads

    model.train(training)
    model.zero_grad(set_to_none=True)
    nhwc = model.uses_channels_last(torch.device("cpu"))
    xt = _to_nchw(x, nhwc, x.dtype).requires_grad_(True)
    logits = model(xt)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    return {
        "loss": loss.item(),
        "logits": logits.detach().numpy(),
        "dx": _to_nhwc(xt.grad),
        "grads": export_grads(model),
    }


class TorchBackend(Backend):
    """PyTorch models built from ``core.arch``; ``impl`` picks the grouped 1×1 product
    (``pointwise.IMPLS``, named here too: this module imports without torch)."""

    name = "torch"
    requires = ("torch",)
    extra = "torch"
    impls = ("auto", "conv", "channels_last", "matmul", "einsum")

    def __init__(self, impl: str = "auto") -> None:
        self.impl = self.checked_impl(impl)

    # --- whole networks -------------------------------------------------------------------
    def build(self, arch: Architecture) -> Any:
        from .model import EfficientNet

        return EfficientNet(arch, impl=self.impl)

    def load_params(self, model: Any, params: Mapping[str, np.ndarray]) -> None:
        from .params import load_params

        load_params(model, params)

    def export_params(self, model: Any) -> dict[str, np.ndarray]:
        from .params import export_params

        return export_params(model)

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        import torch

        x = images_in(x, model.arch.stem.cin)
        model.train(require_bool("training", training))  # torch: "training mode is expected..."
        with torch.no_grad():
            nhwc = model.uses_channels_last(torch.device("cpu"))
            out = model.forward_intermediates(_to_nchw(x, nhwc))
        return {k: _to_nhwc(v) for k, v in out.items()}

    def loss_and_grads(
        self, model: Any, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        x = images_in(x, model.arch.stem.cin)
        training = require_bool("training", training)
        return model_loss_and_grads(
            model, x, labels_in(labels, x.shape[0], model.arch.num_classes), training
        )

    # --- single layers --------------------------------------------------------------------
    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        from ..exchange import convert, validated
        from .params import TO_TORCH, copy_into, local_torch_name, read_from
        from .pointwise import KPointwise

        layer = KPointwise(spec, impl=self.impl)
        shapes = SimpleNamespace(name=f"kPointwise {spec}", param_shapes=spec.param_shapes)
        arrays = validated(shapes, params)  # duck-typed: only .name and .param_shapes() are used
        keys = {k: local_torch_name(k) for k in spec.param_shapes()}
        copy_into(layer, convert(arrays, TO_TORCH), keys)
        layer.train(require_bool("training", training))
        xt = _to_nchw(x, True).requires_grad_(True)  # as the CPU network runs
        y = layer(xt)
        y.backward(_to_nchw(dy, False))
        trainable = [k for k, (_, t) in spec.param_shapes().items() if t]
        moving = [k for k, (_, t) in spec.param_shapes().items() if not t] if training else []
        return {
            "y": _to_nhwc(y),
            "dx": _to_nhwc(xt.grad),
            "grads": read_from(layer, trainable, keys, grads=True),
            "moving_stats": read_from(layer, moving, keys),
        }

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        import torch

        from .pointwise import Interleave

        x = np.asarray(x)
        if x.ndim < 2:  # a bare channel vector: give it a batch axis
            return self.interleave(x[None], groups)[0]
        t = torch.from_numpy(np.ascontiguousarray(x)).movedim(-1, 1)  # keeps the dtype
        with torch.no_grad():
            return _to_nhwc(Interleave(groups)(t))

    def param_count(self, model: Any) -> tuple[int, int]:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        return trainable, frozen + sum(b.numel() for b in model.buffers())


BACKEND = TorchBackend()
