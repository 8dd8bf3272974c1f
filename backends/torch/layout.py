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


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels_last memory format; unchanged under ``torch.func`` transforms
    (``vmap`` cannot change memory formats, and every layer takes either)."""
    if in_functorch_transform():
        return x
    return x.contiguous(memory_format=torch.channels_last)
