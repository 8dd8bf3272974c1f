"""Custom gradients for eager training that keep autograd off its slow paths.

A CPU train step of EfficientNet/kEffNet is mostly memory-bound (``benchmarks/
bytes_torch_train.py``), so a backward that produces a gradient in the wrong memory format, and
makes the ops downstream take strided passes, costs real time. The functions here compute the
same values as the plain ops; they are used only in eager autograd, where an
``autograd.Function`` runs as written (ONNX export and ``torch.compile`` trace the plain ops).
"""

from __future__ import annotations

import torch

from .pointwise import is_channels_last


def eager_autograd(*tensors: torch.Tensor) -> bool:
    """Whether a custom ``autograd.Function`` on ``tensors`` is worth using: a gradient is being
    recorded for one of them, and nothing is tracing (ONNX) or compiling the call."""
    return (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


class _SpatialMean(torch.autograd.Function):
    """``y.mean((2, 3), keepdim=True)`` whose gradient has ``y``'s memory format.

    Autograd's own backward broadcasts ``ds`` ``(N, C, 1, 1)`` to a *contiguous* (NCHW) tensor
    even when ``y`` is channels_last, and every op it reaches then mixes formats: batch-norm
    backward on a channels_last input with that NCHW gradient takes 37 ms instead of 4.8 ms
    (32×1280×8×8, 1 thread). Measured on the whole train step (1 thread, min of 11 round-robin
    steps): EfficientNet-B0 1,921 -> 1,812 ms, kEffNet-B0 16ch 1,605 -> 1,501 ms."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        ctx.shape = y.shape
        ctx.format = torch.channels_last if is_channels_last(y) else torch.contiguous_format
        return y.mean(dim=(2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, ds: torch.Tensor) -> torch.Tensor:
        dy = (ds / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)
        return dy.contiguous(memory_format=ctx.format)


def spatial_mean(y: torch.Tensor) -> torch.Tensor:
    """Mean over H and W, kept as 1×1: ``(N, C, H, W) -> (N, C, 1, 1)`` (any memory format)."""
    if eager_autograd(y):
        return _SpatialMean.apply(y)
    return y.mean(dim=(2, 3), keepdim=True)
