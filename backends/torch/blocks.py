"""The three parts of EfficientNet/kEffNet as nn.Modules, each built from its ``core.arch`` spec:
``Stem`` (``StemSpec``), ``MBConv`` (``MBConvSpec``) and ``Head`` (``HeadSpec``).

Tensors are ``(N, C, H, W)``, NCHW or channels_last. Submodule names follow the canonical
parameter names (``block2a_expand/conv/kernel`` is ``blocks.block2a.expand.conv.weight``), see
``backends/torch/params.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core._validate import require_rate
from ...core.arch import HeadSpec, MBConvSpec, StemSpec
from .batchnorm import KerasBatchNorm2d
from .conv import KerasConv2d
from .eager import spatial_mean
from .inputs import require_tensor
from .pointwise import DEFAULT_IMPL, KPointwise


class Stem(nn.Module):
    """``swish(bn(conv(x)))``: 3×3 conv with Keras padding. ``(N, 3, H, W) -> (N, C, Ho, Wo)``."""

    def __init__(self, spec: StemSpec) -> None:
        super().__init__()
        self.conv = KerasConv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.bn = KerasBatchNorm2d(spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class DropConnect(nn.Module):
    """Stochastic depth per sample (Keras ``Dropout(rate, noise_shape=(None, 1, 1, 1))``): in
    training, each sample's branch is zeroed with probability ``rate`` and the kept ones scaled
    by ``1 / (1 - rate)``; identity in inference. Shapes ``(N, C, H, W)``."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = require_rate("rate", rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, "(N, C, H, W)")  # else torch's 'to() received an invalid combination'
        if not self.training or self.rate == 0.0:
            return x
        # Drawn in float32: bfloat16 uniforms are too coarse (rate 0.0125 would drop 1.4%).
        keep = torch.rand(x.shape[0], 1, 1, 1, dtype=torch.float32, device=x.device) >= self.rate
        return x * (keep.to(x.dtype) / (1.0 - self.rate))


class MBConv(nn.Module):
    """MBConv: [expand] -> depthwise -> bn -> swish -> squeeze-excite -> project -> [drop-connect
    + identity]. ``(N, cin, H, W) -> (N, cout, H/stride, W/stride)``. The pointwise layers are
    ``KPointwise`` (ungrouped for EfficientNet)."""

    def __init__(self, spec: MBConvSpec, impl: str = DEFAULT_IMPL) -> None:
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.expand = KPointwise(spec.expand, impl) if spec.expand is not None else None
        self.dwconv = KerasConv2d(c, c, spec.kernel, spec.stride, spec.padding, groups=c)
        self.bn = KerasBatchNorm2d(c)
        self.se_reduce = KPointwise(spec.se_reduce, impl) if spec.se_reduce is not None else None
        self.se_expand = KPointwise(spec.se_expand, impl) if spec.se_expand is not None else None
        self.project = KPointwise(spec.project, impl)
        self.drop = DropConnect(spec.drop_rate) if spec.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = F.silu(self.bn(self.dwconv(y)))
        if self.se_reduce is not None:
            s = spatial_mean(y)
            y = y * self.se_expand(self.se_reduce(s))
        y = self.project(y)
        return y if self.drop is None else self.drop(y) + x


class Head(nn.Module):
    """Top kPointwise -> global average pool -> dropout -> dense: ``(N, C, H, W) -> (N, classes)``
    logits. ``classify`` is the part after the top conv."""

    def __init__(self, spec: HeadSpec, impl: str = DEFAULT_IMPL) -> None:
        super().__init__()
        self.top = KPointwise(spec.top, impl)
        self.dropout = nn.Dropout(spec.dropout)
        self.predictions = nn.Linear(spec.top.cout, spec.num_classes)

    def classify(self, top: torch.Tensor) -> torch.Tensor:
        """Logits from the top conv's output."""
        return self.predictions(self.dropout(spatial_mean(top).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.top(x))
