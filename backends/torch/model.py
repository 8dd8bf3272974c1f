"""EfficientNet / kEffNet as one nn.Module built by walking a ``core.arch.Architecture``, and the
torchvision-style constructors ``efficientnet_b0..b7`` and ``kefficientnet_b0..b7``.

Input ``(N, 3, H, W)`` (NCHW as PyTorch users expect, any memory format), output logits
``(N, num_classes)``. The input is converted once at the entry to the network's memory format
and every layer keeps it. ``channels_last=None`` (the default) picks it per device: NHWC on CPU,
where the grouped 1×1 convs, the depthwise convs and batch norm are all several times faster
than in NCHW (``benchmarks/bench_torch_train.py``); on CUDA NHWC for EfficientNet but NCHW for
kEffNet, whose batched-matmul grouped convs then need no layout copies
(``benchmarks/bench_cupy_pointwise.py``, H200, batch 256 32x32: EfficientNet 45 ms NHWC vs
53 NCHW; kEffNet 83 ms NCHW vs 105 NHWC per train step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...core import arch as core_arch
from ...core._validate import require_bool, require_rate
from ...core.arch import Architecture, require_arch
from ...core.params import init_params
from .blocks import Head, MBConv, Stem
from .inputs import require_dtype_of, require_nonempty_image, require_tensor
from .layout import to_channels_last
from .params import load_params
from .pointwise import DEFAULT_IMPL

# Whole-network default memory format: None = per device (``EfficientNet.uses_channels_last``).
DEFAULT_CHANNELS_LAST: bool | None = None


def default_channels_last(device: torch.device, grouped: bool) -> bool:
    """The memory format a network picks by default (``channels_last=None``): NHWC on CPU, and
    on other devices unless it has grouped pointwise convs (kEffNet), whose batched matmul over
    groups needs no copies on NCHW there (docs/gpu.md)."""
    return device.type == "cpu" or not grouped


class EfficientNet(nn.Module):
    """The network of ``arch`` (EfficientNet or kEffNet): ``stem`` -> ``blocks`` (an
    ``nn.ModuleDict`` keyed by Keras block name, ``block1a``...) -> ``head``.

    ``impl`` selects the grouped 1×1 implementation (``pointwise.IMPLS``); ``seed`` the initial
    weights (DESIGN.md §1's Keras initialisers, drawn by ``core.params.init_params``; default:
    a seed drawn from torch's RNG, so ``torch.manual_seed`` makes it reproducible).
    """

    def __init__(
        self,
        arch: Architecture,
        impl: str = DEFAULT_IMPL,
        channels_last: bool | None = DEFAULT_CHANNELS_LAST,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        require_arch(arch)
        if channels_last is not None and not isinstance(channels_last, (bool, np.bool_)):
            raise TypeError(
                "Expected channels_last to be True, False or None, "
                f"received {type(channels_last).__name__} {channels_last!r}"
            )
        self.arch = arch
        # A plain bool, np.True_ accepted as require_bool accepts it.
        self.channels_last = None if channels_last is None else bool(channels_last)
        self.stem = Stem(arch.stem)
        self.blocks = nn.ModuleDict({b.name: MBConv(b, impl) for b in arch.blocks})
        self.head = Head(arch.head, impl)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-initialise every parameter (and reset moving statistics) like the Keras models."""
        if seed is None:
            # On the CPU whatever the default device (``with torch.device("meta")``...).
            seed = int(torch.randint(0, 2**31 - 1, (), device="cpu").item())
        load_params(self, init_params(self.arch, seed=seed))

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        cin = self.arch.stem.cin
        require_tensor(x, f"(N, {cin}, H, W)")
        if x.dim() != 4:
            raise ValueError(
                f"Expected x of rank 4 (N, {cin}, H, W), received x.shape={tuple(x.shape)}"
            )
        if x.shape[1] != cin:
            hint = " (channels-last data? use x.permute(0, 3, 1, 2))" if x.shape[-1] == cin else ""
            raise ValueError(
                f"Expected x.shape[1] == {cin} channels (N, C, H, W), "
                f"received x.shape={tuple(x.shape)}{hint}"
            )
        # The stem conv is the layer x meets first (and the one a user is least likely to swap:
        # a replaced head, e.g. an nn.Sequential, need not have a .weight).
        require_dtype_of(x, self.stem.conv.weight, "the model")
        require_nonempty_image(x)
        if self.uses_channels_last(x.device):
            return to_channels_last(x)
        return x.contiguous()

    def uses_channels_last(self, device: torch.device) -> bool:
        """Whether the network runs NHWC on ``device``: ``channels_last`` if set, else NHWC on
        CPU and on other devices unless the network has grouped pointwise convs (kEffNet)."""
        if self.channels_last is not None:
            return self.channels_last
        return default_channels_last(device, grouped=self.arch.family == "kefficientnet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(self._check_input(x))
        for block in self.blocks.values():
            y = block(y)
        return self.head(y)

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of ``stem``, every block, ``top`` (the top conv, before pooling) and
        ``logits``: the keys of ``core.network.forward``'s ``cache["intermediates"]``."""
        out = {"stem": self.stem(self._check_input(x))}
        y = out["stem"]
        for name, block in self.blocks.items():
            y = out[name] = block(y)
        out["top"] = self.head.top(y)
        out["logits"] = self.head.classify(out["top"])
        return out


def build(arch: Architecture, **kwargs: Any) -> EfficientNet:
    """``EfficientNet(arch, **kwargs)``: any ``core.arch`` architecture as a module."""
    return EfficientNet(arch, **kwargs)


def configured(
    arch: Architecture,
    *,
    dropout: float | None = None,
    stochastic_depth_prob: float | None = None,
    weights: None = None,
    progress: bool = True,
    **kwargs: Any,
) -> EfficientNet:
    """The module of ``arch`` with torchvision's constructor options: ``dropout`` (the head's
    rate), ``stochastic_depth_prob`` (the drop-connect rate, block ``b`` of ``n`` dropping with
    ``p * b / n`` as torchvision and Keras do), both defaulting to the architecture's (Keras's);
    ``weights`` must be None (no pretrained weights ship, nothing is downloaded: load canonical
    ones with ``load_file``), so ``progress`` (a download bar) has no effect. Other ``kwargs``
    go to ``EfficientNet``."""
    require_bool("progress", progress)  # accepted as torchvision's constructors accept it
    if weights is not None:
        raise ValueError(
            "Expected weights=None: gpconv ships no pretrained weights and downloads nothing "
            "(load canonical parameters with gpconv.backends.torch.load_file(model, path)), "
            f"received weights={weights!r}"
        )
    if stochastic_depth_prob is not None:  # checked here to be named as the caller named it
        stochastic_depth_prob = require_rate("stochastic_depth_prob", stochastic_depth_prob)
    return EfficientNet(core_arch.with_dropout(arch, dropout, stochastic_depth_prob), **kwargs)


def _efficientnet(
    variant: str, num_classes: int, skip_stride_cnt: int, **kwargs: Any
) -> EfficientNet:
    return configured(core_arch.efficientnet(variant, num_classes, skip_stride_cnt), **kwargs)


def _kefficientnet(
    variant: str, num_classes: int, min_channels_per_group: int, skip_stride_cnt: int, **kwargs: Any
) -> EfficientNet:
    arch = core_arch.kefficientnet(variant, num_classes, min_channels_per_group, skip_stride_cnt)
    return configured(arch, **kwargs)


def efficientnet_b0(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B0 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b0", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b0(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B0 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b0", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b1(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B1 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b1", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b1(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B1 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b1", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b2(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B2 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b2", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b2(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B2 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b2", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b3(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B3 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b3", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b3(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B3 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b3", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b4(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B4 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b4", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b4(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B4 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b4", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b5(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B5 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b5", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b5(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B5 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b5", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b6(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B6 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b6", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b6(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B6 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b6", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)


def efficientnet_b7(
    num_classes: int = 1000, skip_stride_cnt: int = -1, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B7 (Keras applications) returning logits; ``kwargs``: see ``configured``."""
    return _efficientnet("b7", num_classes, skip_stride_cnt, **kwargs)


def kefficientnet_b7(
    num_classes: int = 1000,
    min_channels_per_group: int = 16,
    skip_stride_cnt: int = -1,
    **kwargs: Any,
) -> EfficientNet:
    """kEffNet-B7 returning logits; ``kwargs``: see ``configured``."""
    return _kefficientnet("b7", num_classes, min_channels_per_group, skip_stride_cnt, **kwargs)
