"""Spatial convolutions (stem and depthwise) with TensorFlow/Keras padding.

PyTorch's ``padding=k//2`` is symmetric; Keras's ``correct_pad`` for stride 2 puts one pixel
less at the top/left whenever the input size is even, and an EfficientNet port that ignores
this computes a different function. The amounts come from ``core.ops.conv.pad_amounts`` and the
*actual* input size at run time (so any image size works, as in Keras).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core.ops.conv import pad_amounts


class KerasConv2d(nn.Conv2d):
    """A bias-free k×k ``nn.Conv2d`` whose padding is Keras's (``"same"``, ``"correct"``,
    ``"valid"``), computed per call from the input's spatial size.

    Shapes: x ``(N, Cin, H, W)`` (NCHW or channels_last) -> ``(N, Cout, Ho, Wo)``; weight
    ``(Cout, Cin/groups, k, k)``. Depthwise is ``groups == Cin == Cout``.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: str, groups: int = 1
    ) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        pad_amounts(kernel + 1, kernel, stride, padding)  # validates the padding name early
        self.keras_padding = padding

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keras_padding={self.keras_padding!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = pad_amounts(x.shape[-2], k, s, self.keras_padding)
        left, right = pad_amounts(x.shape[-1], k, s, self.keras_padding)
        if top == bottom and left == right:
            # Symmetric: let the conv kernel pad (no padded copy of x).
            return F.conv2d(x, self.weight, None, self.stride, (top, left), 1, self.groups)
        return F.conv2d(
            F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride, 0, 1, self.groups
        )
