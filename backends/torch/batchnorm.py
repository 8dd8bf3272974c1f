"""Batch normalisation with Keras semantics, for NCHW (or channels_last) tensors.

PyTorch's ``nn.BatchNorm2d`` differs from Keras in three ways that silently change a ported
model: eps (1e-5 vs 1e-3), momentum convention (0.1 for the *new* value vs 0.99 for the *old*
one) and the running variance, which PyTorch feeds the *unbiased* batch variance while Keras
(and ``core.ops.normalization``) feeds the biased one. ``KerasBatchNorm2d`` keeps the fused
``F.batch_norm`` kernel and corrects the running variance afterwards, on ``C`` numbers only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core._validate import require_fraction, require_nonnegative, require_positive_int
from ...core.ops.normalization import EPSILON, MOMENTUM
from .inputs import require_dtype_of, require_tensor


class KerasBatchNorm2d(nn.Module):
    """``y = weight * (x - mean) / sqrt(var + eps) + bias`` per channel (axis 1).

    Shapes: x ``(N, C, ...)`` in any memory format; ``weight`` (gamma), ``bias`` (beta),
    ``running_mean``, ``running_var`` ``(C,)``. Training normalises with the batch mean and
    biased variance and updates ``r <- momentum * r + (1 - momentum) * batch`` with the biased
    variance; inference uses the running statistics. ``momentum`` is in Keras's convention.
    """

    def __init__(self, num_features: int, eps: float = EPSILON, momentum: float = MOMENTUM) -> None:
        super().__init__()
        self.num_features = require_positive_int("num_features", num_features)
        self.eps = require_nonnegative("eps", eps)
        self.momentum = require_fraction("momentum", momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum} (Keras convention)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, f"(N, {self.num_features}, ...)")
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"Expected x of shape (N, {self.num_features}, ...), "
                f"received x.shape={tuple(x.shape)}"
            )
        require_dtype_of(x, self.weight, "the layer")
        n = x.numel() // max(x.shape[1], 1)  # elements per channel
        if self.running_mean is None or self.running_var is None:
            return self._forward_batch_statistics_only(x, n)
        if not self.training or n == 0:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if n < 2:
            return self._forward_single(x)
        # torch updates r' = m r + (1 - m) var_b n / (n - 1); Keras m r + (1 - m) var_b. torch's
        # update goes to a copy (autograd saves it, so it must not change afterwards), and solving
        # it for var_b gives Keras's r = m r / n + r' (n - 1) / n: C numbers, no second pass over x.
        torch_var = self.running_var.clone()
        y = F.batch_norm(
            x,
            self.running_mean,
            torch_var,
            self.weight,
            self.bias,
            True,
            1.0 - self.momentum,
            self.eps,
        )
        with torch.no_grad():
            self.running_var.mul_(self.momentum / n).add_(torch_var, alpha=(n - 1) / n)
        return y

    def _forward_batch_statistics_only(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Without running statistics (``replace_all_batch_norm_modules_``, like
        ``nn.BatchNorm2d(track_running_stats=False)``): the batch's in every mode."""
        if n < 2:
            return self._forward_single(x, update=False)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def _forward_single(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        """One element per channel: the batch variance is 0, torch's unbiased one undefined."""
        dims = [d for d in range(x.ndim) if d != 1]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        if update:
            with torch.no_grad():
                self.running_mean.mul_(self.momentum).add_(mean.detach(), alpha=1 - self.momentum)
                self.running_var.mul_(self.momentum).add_(var.detach(), alpha=1 - self.momentum)
        shape = [1, -1] + [1] * (x.ndim - 2)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (x - mean.view(shape)) * scale.view(shape) + self.bias.view(shape)


def replace_all_batch_norm_modules_(root: nn.Module) -> nn.Module:
    """``torch.func.replace_all_batch_norm_modules_`` for models whose batch norms are
    ``KerasBatchNorm2d`` (torch's looks for ``nn.BatchNorm`` modules only, so on these models it
    silently changes nothing): every batch norm in ``root`` drops its running statistics and
    normalises with the batch's in every mode, updating nothing, which is what ``torch.func.vmap``
    needs for per-sample gradients of a training-mode model. In place; returns ``root``. The
    statistics are gone: ``export_params`` then refuses the model."""
    if not isinstance(root, nn.Module):
        raise TypeError(f"Expected root to be a torch.nn.Module, received {type(root).__name__}")
    torch.func.replace_all_batch_norm_modules_(root)
    for m in root.modules():
        if isinstance(m, KerasBatchNorm2d):
            m.running_mean = None
            m.running_var = None
    return root


@torch.no_grad()
def update_bn(
    loader: Iterable[Any], model: nn.Module, device: torch.device | str | None = None
) -> None:
    """``torch.optim.swa_utils.update_bn`` for models whose batch norms are ``KerasBatchNorm2d``
    (torch's looks for ``nn.BatchNorm`` modules only, so on these models it silently changes
    nothing): one pass over ``loader`` in training mode, after which every batch norm's running
    mean and variance are the plain averages over the batches of its batch mean and *biased*
    batch variance (Keras's statistic). Each batch is an input tensor ``(N, C, H, W)`` or a
    list/tuple whose first item is one, moved to ``device`` if given, as in torch's.

    Afterwards each batch norm's momentum and every module's train/eval mode are as before (a
    batch norm kept in eval mode inside a training model stays so). If the pass fails (a batch the
    model refuses, an error or Ctrl-C in ``loader``) or ``loader`` yields no batch (``ValueError``),
    the running statistics are restored too: they are never left reset or half-averaged."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected model to be a torch.nn.Module, received {type(model).__name__}")
    norms = [m for m in model.modules() if isinstance(m, KerasBatchNorm2d)]
    if not norms:
        return
    stateless = [m for m in norms if m.running_mean is None or m.running_var is None]
    if stateless:
        raise ValueError(
            f"Expected batch norms with running statistics, received {len(stateless)} without "
            "(replace_all_batch_norm_modules_ removed them): there is nothing to update"
        )
    # Copies of C numbers per batch norm, to put back if the pass does not complete.
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in norms}
    modes = [(m, m.training) for m in model.modules()]
    completed = False
    try:
        for m in norms:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
        model.train()
        batches = 0
        for batches, batch in enumerate(loader, start=1):
            x = batch[0] if isinstance(batch, list | tuple) else batch
            if device is not None:
                x = x.to(device)
            for m in norms:  # r <- (1 - 1/k) r + batch / k: the running average of k batches
                m.momentum = 1.0 - 1.0 / batches
            model(x)
        if batches == 0:
            raise ValueError(
                "Expected loader to yield at least one batch, received no batch "
                "(running statistics left as they were)"
            )
        completed = True
    finally:
        for m, (mean, var, momentum) in saved.items():
            m.momentum = momentum
            if not completed:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        for m, training in modes:
            m.training = training
