"""Batch norm over the global batch under DDP, with Keras semantics, on any device.

``torch.nn.SyncBatchNorm`` cannot serve here: it refuses CPU tensors (gloo) and has PyTorch's
BN semantics (unbiased running variance, eps 1e-5), while the torch backend uses
``KerasBatchNorm2d`` (biased variance, eps 1e-3, momentum 0.99). ``SyncKerasBatchNorm2d`` reduces
the per-channel sums with a differentiable all-reduce (its backward all-reduces the gradient), so
the forward *and* backward equal one process normalising the whole global batch.

The all-reduce is the functional collective ``torch.distributed._functional_collectives
.all_reduce``: a private module, but the one torch names as the successor of the public
``torch.distributed.nn.functional.all_reduce`` (deprecated), and the only one ``torch.compile``
can trace. The public one breaks the graph at every batch norm, and dynamo then compiled each
layer's ``forward`` separately until its recompile limit, running most of the step eagerly.
"""

from __future__ import annotations

import torch
import torch.distributed as td
from torch import nn
from torch.distributed import _functional_collectives as funcol

from ...backends.torch.batchnorm import KerasBatchNorm2d


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over all processes of the default group; differentiable (sum backward)."""
    return funcol.all_reduce(x, "sum", td.group.WORLD)


class SyncKerasBatchNorm2d(KerasBatchNorm2d):
    """``KerasBatchNorm2d`` whose training statistics are taken over all processes.

    Shapes: x ``(N, C, H, W)`` per process. Two all-reduces per forward (sum and count, then the
    centred sum of squares: the two-pass variance, stable in float32) and two in backward.
    """

    def synchronises(self) -> bool:
        """Whether this forward reduces over processes: training, in a group of several."""
        return self.training and td.is_initialized() and td.get_world_size() > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.synchronises():
            return super().forward(x)
        dims = [d for d in range(x.ndim) if d != 1]
        # Statistics in float32 at least, as F.batch_norm keeps them: a float16 channel sum
        # (and the count itself) overflows past 65504 elements, e.g. a batch of 16 at 64x64.
        out_dtype, x = x.dtype, x.to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        shape = [1, -1] + [1] * (x.ndim - 2)
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased, as Keras
        with torch.no_grad():
            self.running_mean.mul_(self.momentum).add_(mean.detach(), alpha=1 - self.momentum)
            self.running_var.mul_(self.momentum).add_(var.detach(), alpha=1 - self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (centred * scale.view(shape) + self.bias.view(shape)).to(out_dtype)


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Turn every ``KerasBatchNorm2d`` of ``model`` into ``SyncKerasBatchNorm2d`` in place (same
    parameters and buffers, so parameter export keeps working); returns how many. Any other BN
    class raises ``TypeError`` rather than silently staying per-process."""
    converted = 0
    for module in model.modules():
        if type(module) is KerasBatchNorm2d:
            module.__class__ = SyncKerasBatchNorm2d
            converted += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, nn.SyncBatchNorm
        ):
            raise TypeError(
                f"cannot synchronise {type(module).__name__}: only KerasBatchNorm2d is supported"
            )
    return converted
