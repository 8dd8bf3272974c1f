"""Spatial convolutions (stem and depthwise) with TensorFlow/Keras padding.

PyTorch's ``padding=k//2`` is symmetric; Keras's ``correct_pad`` for stride 2 puts one pixel
less at the top/left whenever the input size is even, and an EfficientNet port that ignores
this computes a different function. The amounts come from ``core.ops.conv.pad_amounts`` and the
*actual* input size at run time (so any image size works, as in Keras).

On CPU, the weight gradient of a wide stride-1 depthwise filter (5×5) is computed in column
slabs that take oneDNN's fast path (``backends/depthwise_grad.py``): same function, the weight
gradient about 2× faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core._validate import require_positive_int
from ...core.ops.conv import pad_amounts
from ..depthwise_grad import column_slabs, slab_input_columns, uses_slabs
from .eager import eager_autograd
from .inputs import require_dtype_of, require_nonempty_image, require_tensor

_conv_backward = torch.ops.aten.convolution_backward.default


class _DepthwiseSlabGrad(torch.autograd.Function):
    """Stride-1 depthwise conv with symmetric zero padding ``(ph, pw)``: forward as
    ``F.conv2d``; backward with the weight gradient in column slabs (``depthwise_grad``).

    Shapes: x ``(N, C, H, W)`` (any memory format), weight ``(C, 1, kh, kw)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        (ph, pw), c = ctx.padding, x.shape[1]
        dx = dw = None
        if ctx.needs_input_grad[0]:
            args = (dy, x, weight, None, [1, 1], [ph, pw], [1, 1])
            dx = _conv_backward(*args, False, [0, 0], c, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            # Pad the width only; the conv pads the height (a full F.pad copy is far slower for
            # some channel counts, e.g. 20 ms for 240 channels at 31x31).
            xp = F.pad(x, (pw, pw, 0, 0))
            slabs = []
            for j0, j1 in column_slabs(weight.shape[3]):
                lo, hi = slab_input_columns(j0, j1, dy.shape[3])
                args = (dy, xp[..., lo:hi], weight[..., j0:j1], None, [1, 1], [ph, 0], [1, 1])
                slabs.append(_conv_backward(*args, False, [0, 0], c, [False, True, False])[1])
            dw = torch.cat(slabs, dim=3)
        return dx, dw, None


class KerasConv2d(nn.Conv2d):
    """A bias-free k×k ``nn.Conv2d`` whose padding is Keras's (``"same"``, ``"correct"``,
    ``"valid"``), computed per call from the input's spatial size.

    Shapes: x ``(N, Cin, H, W)`` (NCHW or channels_last) -> ``(N, Cout, Ho, Wo)``; weight
    ``(Cout, Cin/groups, k, k)``. Depthwise is ``groups == Cin == Cout``.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: str, groups: int = 1
    ) -> None:
        kernel = require_positive_int("kernel", kernel)  # stride=0 was blamed on padding='same'
        stride = require_positive_int("stride", stride)
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        pad_amounts(2 * kernel + 1, kernel, stride, padding)  # validates the padding name early
        self.keras_padding = padding

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keras_padding={self.keras_padding!r}"

    def _slab_grad(self, x: torch.Tensor) -> bool:
        """Use ``_DepthwiseSlabGrad``: a CPU depthwise conv of a batch ``(N, C, H, W)`` (its
        backward takes no unbatched image) that needs a gradient, in eager mode (tracing for
        ONNX / ``torch.compile`` keeps the plain op) and outside autocast (whose casts the plain
        op's backward knows and the slab backward does not)."""
        return (
            x.dim() == 4
            and self.groups == self.in_channels
            and uses_slabs(self.kernel_size[1], self.stride[0])
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and eager_autograd(x, self.weight)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, f"(N, {self.in_channels}, H, W)")
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:  # (C, H, W): as nn.Conv2d
            raise ValueError(
                f"Expected x of shape (N, {self.in_channels}, H, W), "
                f"received x.shape={tuple(x.shape)}"
            )
        require_dtype_of(x, self.weight, "the layer")
        require_nonempty_image(x)
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = pad_amounts(x.shape[-2], k, s, self.keras_padding)
        left, right = pad_amounts(x.shape[-1], k, s, self.keras_padding)
        # A trace records one branch, and branching on a symbolic size (torch.export with dynamic
        # H/W) pins its parity; "correct" padding depends on that parity, so both take the
        # explicit pad, whose amounts follow the size.
        size_free = torch.jit.is_tracing() or not isinstance(x.shape[-2] + x.shape[-1], int)
        if not (self.keras_padding == "correct" and size_free) and top == bottom and left == right:
            if self._slab_grad(x):
                return _DepthwiseSlabGrad.apply(x, self.weight, (top, left))
            # Symmetric: let the conv kernel pad (no padded copy of x).
            return F.conv2d(x, self.weight, None, self.stride, (top, left), 1, self.groups)
        return F.conv2d(
            F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride, 0, 1, self.groups
        )
