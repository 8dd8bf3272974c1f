"""Custom gradients for eager training that keep autograd off its slow paths.

A CPU train step of EfficientNet/kEffNet is mostly memory-bound (``benchmarks/
bytes_torch_train.py``), so a backward that produces a gradient in the wrong memory format, and
makes the ops downstream take strided passes, costs real time. The functions here compute the
same values as the plain ops; they are used only in eager mode, where an ``autograd.Function``
runs as written (ONNX export and ``torch.compile`` trace the plain ops).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

from .layout import in_functorch_transform, is_batched, is_channels_last


def transformed() -> bool:
    """Whether the call is being traced (ONNX, ``torch.jit.trace``), compiled, or run under a
    ``torch.func`` transform (``grad``, ``vmap``...) or forward-mode AD: then only plain torch
    ops are used, which every one of these understands (the functions here have no
    ``setup_context``, vmap rule or ``jvp``)."""
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or in_functorch_transform()
        or getattr(fwAD, "_current_level", -1) >= 0  # inside a dual_level (private, so guarded)
    )


def eager_autograd(*tensors: torch.Tensor) -> bool:
    """Whether a custom ``autograd.Function`` on ``tensors`` is worth using: a gradient is being
    recorded for one of them, and nothing transforms the call (``transformed``)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors) and not transformed()


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
        return dy if is_batched(dy) else dy.contiguous(memory_format=ctx.format)


def spatial_mean(y: torch.Tensor) -> torch.Tensor:
    """Mean over H and W, kept as 1×1: ``(N, C, H, W) -> (N, C, 1, 1)`` (any memory format)."""
    if eager_autograd(y):
        return _SpatialMean.apply(y)
    return y.mean(dim=(2, 3), keepdim=True)


_SHUFFLE_INDEX: dict[tuple[int, int], torch.Tensor] = {}


def _shuffle_index(channels: int, groups: int) -> torch.Tensor:
    """Source channel of every output channel of ``channel_shuffle(x, groups)``:
    ``index[s*G + g] = g*S + s`` with ``S = channels // groups`` (a CPU int64 tensor).

    Kept for the process, so only a real CPU tensor is kept: made on the CPU whatever the
    default device (a meta index would make every later gather return uninitialised memory),
    and not kept when a mode made a stand-in for it (``FakeTensorMode``)."""
    index = _SHUFFLE_INDEX.get((channels, groups))
    if index is None:
        index = torch.arange(channels, device="cpu").view(groups, -1).t().reshape(-1)
        if type(index) is torch.Tensor:
            _SHUFFLE_INDEX[(channels, groups)] = index
    return index


def _gather_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``torch.channel_shuffle(x, groups)`` of a channels_last ``(N, C, H, W)`` tensor as one
    ``index_select`` along its physical last axis, written into a new channels_last tensor (not
    a view of one, which autograd would forbid changing in place, as ``channel_shuffle``'s
    output may be)."""
    n, c, h, w = x.shape
    out = torch.empty_like(x, memory_format=torch.channels_last)
    rows = out.permute(0, 2, 3, 1).view(-1, c)  # a view of out: rows are pixels
    torch.index_select(x.permute(0, 2, 3, 1).reshape(-1, c), 1, _shuffle_index(c, groups), out=rows)
    return out


class _ChannelShuffle(torch.autograd.Function):
    """``channel_shuffle`` with the inverse shuffle (``C // G`` groups) as its backward, not
    autograd's scatter-add backward of ``index_select``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.inverse_groups = x.shape[1] // groups
        return _gather_channels(x, groups)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        return gather_shuffle(dy, ctx.inverse_groups), None


def gather_wins() -> bool:
    """Whether ``channel_shuffle`` gathers (a CPU channels_last tensor): with one torch thread
    only. ``index_select`` along the channel axis runs on one thread whatever
    ``torch.get_num_threads()`` says; torch's shuffle kernel uses them all. Measured on the
    2-core machine, round-robin, the kEffNet-B0 16ch train step (32×32, batch 32) with 2 threads:
    897 and 847 ms gathering against 803 and 778 ms with torch's kernel (two runs); with 1 thread
    the gather's shuffles take 76 ms a step against torch's 89 ms
    (``benchmarks/bench_torch_shuffle.py``, docs/train.md)."""
    return torch.get_num_threads() == 1


def gather_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``torch.channel_shuffle(x, groups)`` as one gather along the physical channel axis where
    ``x`` is a CPU channels_last tensor in eager mode (backward: the inverse gather), else
    torch's kernel. Same values and memory format as torch's: ``(N, C, H, W) -> (N, C, H, W)``."""
    if (
        type(x) is not torch.Tensor  # a FakeTensor, a subclass: their own rules, torch's kernel
        or x.device.type != "cpu"
        or transformed()
        or is_batched(x)
        or not is_channels_last(x)
    ):
        return torch.channel_shuffle(x, groups)
    if eager_autograd(x):
        return _ChannelShuffle.apply(x, groups)
    return _gather_channels(x, groups)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``torch.channel_shuffle(x, groups)``, the same values: ``(N, C, ...) -> (N, C, ...)``,
    memory format kept.

    With one torch thread, CPU channels_last tensors are shuffled by ``gather_shuffle``. Torch's
    kernel transposes each pixel's ``(G, S)`` block by a separate call, which is slow for few
    channels and for some group counts (``benchmarks/bench_torch_shuffle.py``, forward +
    backward, 1 thread: all shuffles of a kEffNet-B0 train step at 32×32, batch 32, 86 ms
    instead of 117 ms; 480 channels in 5 groups at 16×16, 4.5 ms instead of 12.1 ms). Torch's
    kernel stays faster for some wide layers (1152 channels in 12 groups at 8×8: 2.6 ms against
    4.2 ms), but not enough to be worth a per-shape choice. With more threads torch's kernel
    runs (``gather_wins``)."""
    if gather_wins():
        return gather_shuffle(x, groups)
    return torch.channel_shuffle(x, groups)
