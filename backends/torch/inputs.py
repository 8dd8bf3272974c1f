"""Input checks shared by the torch modules: a layer given integer images, another float dtype
than its parameters, or an empty image fails with a message naming the layer's expectation,
not deep inside a torch kernel ('expected scalar type Double but found Float', 'Kernel size
can't be greater than actual input size')."""

from __future__ import annotations

import torch


def require_tensor(x: object, shape: str) -> None:
    """``TypeError`` unless ``x`` is a ``torch.Tensor`` (``shape`` names the expected layout)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"Expected x to be a torch.Tensor {shape}, received {type(x).__name__} "
            "(convert with torch.as_tensor)"
        )


def require_dtype_of(x: torch.Tensor, weight: torch.Tensor, owner: str) -> None:
    """``TypeError`` unless ``x`` is floating and, outside autocast (whose casts mix dtypes on
    purpose), of ``weight``'s dtype; ``owner`` names whose parameters those are ("the layer")."""
    if not x.is_floating_point():
        raise TypeError(f"Expected floating-point x, received x.dtype={x.dtype}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"Expected x.dtype={weight.dtype} (the dtype of {owner}'s parameters: convert x with "
            f"x.to({weight.dtype}), or {owner} with .to({x.dtype})), received x.dtype={x.dtype}"
        )


def require_nonempty_image(x: torch.Tensor) -> None:
    """``ValueError`` if the spatial size ``(H, W)`` (the last two axes) has a 0. Symbolic sizes
    (``torch.export`` with dynamic H/W) are not checked: a test on them would pin them."""
    h, w = x.shape[-2], x.shape[-1]
    if isinstance(h, int) and isinstance(w, int) and (h == 0 or w == 0):
        raise ValueError(
            f"Expected an image of H, W >= 1 (N, C, H, W), received x.shape={tuple(x.shape)}"
        )
