"""Memory-format helpers shared by the torch modules."""

from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-d tensor is physically NHWC (and not merely ambiguous, e.g. C == 1)."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def in_functorch_transform() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``...) is running."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)  # private: guarded
    return bool(active and active())


def is_batched(t: torch.Tensor) -> bool:
    """Whether ``t`` is a vmap batched tensor: ``torch.func.vmap``'s, or the legacy one that
    ``torch.autograd.grad(..., is_grads_batched=True)`` (so also
    ``torch.autograd.functional.jacobian/hessian(..., vectorize=True)``) passes to every
    backward. Such tensors have no memory format to query or set."""
    functorch = getattr(torch._C, "_functorch", None)  # private: guarded
    return any(
        bool(check(t))
        for check in (
            getattr(functorch, "is_batchedtensor", None),
            getattr(functorch, "is_legacy_batchedtensor", None),
        )
        if check is not None
    )


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels_last memory format; unchanged under ``torch.func`` transforms
    (``vmap`` cannot change memory formats, and every layer takes either)."""
    if in_functorch_transform():
        return x
    return x.contiguous(memory_format=torch.channels_last)
