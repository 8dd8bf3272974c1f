"""Grouped pointwise convolution, channel interleave and kPointwise (DESIGN.md §1) as nn.Modules.

Tensors are NCHW in shape; the memory format may be contiguous NCHW or ``channels_last``
(physically NHWC). ``Interleave`` and the ``"conv"`` and ``"matmul"`` convs keep the format they
are given; ``"channels_last"`` (so ``"auto"`` on CPU) returns ``channels_last``; ``"einsum"``
returns whatever strides ``torch.einsum`` picks (neither format, for these shapes).

The grouped 1×1 conv can be computed several ways with very different CPU speed (DESIGN.md §5;
``benchmarks/bench_torch_pointwise.py`` measures them). ``GroupedPointwise2d(impl=...)`` selects:

* ``"conv"``: ``F.conv2d(groups=G)`` on the input as given (slow backward in NCHW on CPU);
* ``"channels_last"``: the same conv on a ``channels_last`` input (converted if needed);
* ``"matmul"``: one batched matmul over groups, written for the input's memory format;
* ``"einsum"``: the same product as ``torch.einsum``, letting torch pick the contraction;
* ``"auto"`` (the default): per call, ``"channels_last"`` on CPU and ``"matmul"`` on other
  devices (see ``auto_impl``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...core._validate import require_bool, require_choice, require_divides, require_positive_int
from ...core.pointwise import KPointwiseSpec
from .batchnorm import KerasBatchNorm2d
from .eager import channel_shuffle
from .inputs import require_dtype_of, require_nonempty_image, require_tensor
from .layout import is_channels_last, to_channels_last

Impl = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", int], torch.Tensor]

DEFAULT_IMPL = "auto"


def auto_impl(device: torch.device) -> str:
    """What ``impl="auto"`` runs on ``device``, chosen by whole-network train-step measurements.

    CPU (benchmarks/bench_torch_train.py): in the channels_last network oneDNN's grouped conv
    beats the batched matmul/einsum formulations, which need NHWC<->group copies. CUDA
    (benchmarks/bench_cupy_pointwise.py, H200, kEffNet-B0 16ch): one batched matmul over groups
    on NCHW tensors beats cuDNN's grouped conv 1.8x (32x32 batch 256: 83 vs 151 ms per step)."""
    return "channels_last" if device.type == "cpu" else "matmul"


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
    return F.conv2d(x, w, b, groups=groups)


def _channels_last(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int
) -> torch.Tensor:
    return F.conv2d(to_channels_last(x), w, b, groups=groups)


def _exports_as_conv(impl: Impl) -> Impl:
    """``impl`` that runs as ``_conv`` while ``torch.export`` traces it: the same function, as the
    grouped conv every export consumer knows. The matmul/einsum products merge H and W (and N)
    into one axis, and torch.export's reshape then tests ``H % (H*W)``, which it cannot decide
    for a dynamic image size ("Constraints violated")."""

    @functools.wraps(impl)
    def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
        return (_conv if torch.compiler.is_exporting() else impl)(x, w, b, groups)

    return run


@_exports_as_conv
def _matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
    n, cin, h, wd = x.shape
    cout = w.shape[0]
    ci, co = cin // groups, cout // groups
    wg = w.view(groups, co, ci)
    if is_channels_last(x):
        # Rows are pixels: (G, M, Ci) @ (G, Ci, Co) -> (G, M, Co), back to (M, G*Co) = NHWC.
        xg = x.permute(0, 2, 3, 1).reshape(-1, groups, ci).transpose(0, 1)
        y = (
            torch.bmm(xg, wg.transpose(1, 2))
            .transpose(0, 1)
            .reshape(n, h, wd, cout)
            .permute(0, 3, 1, 2)
        )
    else:
        # Columns are pixels: (G, Co, Ci) @ (N, G, Ci, HW) -> (N, G, Co, HW) = NCHW, no copies.
        y = torch.matmul(wg, x.reshape(n, groups, ci, h * wd)).view(n, cout, h, wd)
    return y if b is None else y + b.view(1, -1, 1, 1)


@_exports_as_conv
def _einsum(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
    n, cin, h, wd = x.shape
    cout = w.shape[0]
    y = torch.einsum(
        "goi,ngip->ngop",
        w.view(groups, cout // groups, cin // groups),
        x.reshape(n, groups, cin // groups, h * wd),
    )
    y = y.reshape(n, cout, h, wd)
    return y if b is None else y + b.view(1, -1, 1, 1)


def _auto(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
    return IMPLS[auto_impl(x.device)](x, w, b, groups)


IMPLS: dict[str, Impl] = {
    "conv": _conv,
    "channels_last": _channels_last,
    "matmul": _matmul,
    "einsum": _einsum,
    "auto": _auto,
}


def _check_impl(impl: str) -> str:
    return require_choice("impl", impl, sorted(IMPLS))


class GroupedPointwise2d(nn.Conv2d):
    """Grouped 1×1 convolution: output block ``g`` sees only input block ``g`` (contiguous
    blocks, as ``groups=`` in Keras and PyTorch).

    Shapes: x ``(N, Cin, H, W)`` -> ``(N, Cout, H, W)``; ``weight (Cout, Cin/G, 1, 1)`` (the
    ``nn.Conv2d`` layout whatever ``impl`` computes the product), ``bias (Cout,)`` or None.
    """

    def __init__(
        self, cin: int, cout: int, groups: int = 1, bias: bool = False, impl: str = DEFAULT_IMPL
    ) -> None:
        cin, cout = require_positive_int("cin", cin), require_positive_int("cout", cout)
        groups = require_positive_int("groups", groups)
        require_divides(groups, cin, "cin")  # nn.Conv2d's own message names neither number
        require_divides(groups, cout, "cout")
        # nn.Conv2d takes any truthy value: bias="false" would add a bias.
        super().__init__(cin, cout, 1, groups=groups, bias=require_bool("bias", bias))
        self.impl = _check_impl(impl)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, f"(N, {self.in_channels}, H, W)")
        # The matmul/einsum products would fail inside a reshape, or compute as another G.
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected x of shape (N, {self.in_channels}, H, W), "
                f"received x.shape={tuple(x.shape)}"
            )
        require_dtype_of(x, self.weight, "the layer")
        require_nonempty_image(x)
        return IMPLS[self.impl](x, self.weight, self.bias, self.groups)


class Interleave(nn.Module):
    """Channel interleave ``out[:, s*G + g] = x[:, g*S + s]`` with ``S = C // G``: the order of
    ``nn.ChannelShuffle(G)`` and of ``core.interleave`` (there on the last axis).

    Shapes: ``(N, C, ...) -> (N, C, ...)``, memory format kept. Runs ``eager.channel_shuffle``
    (torch's native shuffle, or a gather on CPU channels_last tensors, both faster than
    reshape-transpose-copy). Inputs of rank < 3, the ONNX exporter (no symbolic for
    ``channel_shuffle``) and compiled graphs get the reshape-transpose formulation: torch's fake
    tensors take ``channel_shuffle`` of a CPU channels_last tensor as contiguous, its kernel
    keeps channels_last, and a graph traced for the wrong layout fails at run time (a
    ``"matmul"`` conv after it, run by ``torch.compile(backend="aot_eager")``).
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = require_positive_int("groups", groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, "(N, C, ...)")
        if x.dim() < 2:
            raise ValueError(f"Expected x of shape (N, C, ...), received x.shape={tuple(x.shape)}")
        c, g = x.shape[1], self.groups
        if c % g:
            raise ValueError(f"Expected groups={g} to divide the channels x.shape[1]={c}")
        traced = torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
        if x.dim() >= 3 and not traced:
            return channel_shuffle(x, g)
        return interleave_by_reshape(x, g)


def interleave_by_reshape(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``Interleave`` as view ``(G, S)`` -> transpose -> flatten, for ``(N, C, ...)`` tensors;
    a channels_last input is shuffled on its physical last axis (no NCHW copy)."""
    c = x.shape[1]
    # Under torch.compile, the NCHW form: Inductor (torch 2.13) cannot lower the NHWC one once H
    # and W are symbolic, as they become on a model's second image size ("ValueRangeError:
    # Invalid ranges" after a stride-2 conv). Inductor picks the layout itself; a compiled
    # kEffNet-B0 train step took the same time with either form.
    if is_channels_last(x) and not torch.compiler.is_compiling():
        nhwc = x.permute(0, 2, 3, 1)
        lead = nhwc.shape[:-1]
        out = nhwc.reshape(*lead, groups, c // groups).transpose(-1, -2).reshape(*lead, c)
        return out.permute(0, 3, 1, 2)
    n, rest = x.shape[0], x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


ACTIVATIONS: dict[str | None, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    None: nn.Identity,
}


class KPointwise(nn.Module):
    """kPointwise (DESIGN.md §1) from a ``core.pointwise.KPointwiseSpec``: ``(N, Cin, H, W) ->
    (N, Cout, H, W)``.

    ``y1 = act(bn(conv(x)))``; ``z = interleave(y1)`` if ``Cout // G > 1``; and if ``Cin >= Cout``
    ``out = act(bn2(conv2(z))) + y1`` (the residual adds the *non-interleaved* ``y1``), else
    ``out = z``. With ``G == 1`` only ``conv`` [+ ``bn``] [+ act] exist: a plain 1×1 conv.
    Submodules ``conv``, ``bn``, ``conv2``, ``bn2`` mirror the canonical names ``conv/kernel``, ...
    """

    def __init__(self, spec: KPointwiseSpec, impl: str = DEFAULT_IMPL) -> None:
        super().__init__()
        if not isinstance(spec, KPointwiseSpec):
            raise TypeError(
                "Expected spec to be a gpconv.core.pointwise.KPointwiseSpec (e.g. "
                f"KPointwiseSpec(cin, cout, groups)), received {type(spec).__name__} {spec!r}"
            )
        self.spec = spec
        self.conv = GroupedPointwise2d(spec.cin, spec.cout, spec.groups, spec.bias, impl)
        self.bn = KerasBatchNorm2d(spec.cout) if spec.bn else None
        self.act = ACTIVATIONS[spec.activation]()
        self.interleave = Interleave(spec.groups) if spec.interleaves else None
        if spec.has_second_conv:
            self.conv2 = GroupedPointwise2d(spec.cout, spec.cout, spec.groups, spec.bias, impl)
            self.bn2 = KerasBatchNorm2d(spec.cout) if spec.bn else None

    def _conv_bn_act(self, conv: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        y = conv(x)
        return self.act(y if bn is None else bn(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_tensor(x, f"(N, {self.spec.cin}, H, W)")  # dtype and size: checked by self.conv
        if x.dim() != 4 or x.shape[1] != self.spec.cin:
            raise ValueError(
                f"Expected x of shape (N, {self.spec.cin}, H, W) (the layer's Cin), "
                f"received x.shape={tuple(x.shape)}"
            )
        y1 = self._conv_bn_act(self.conv, self.bn, x)
        z = y1 if self.interleave is None else self.interleave(y1)
        if not self.spec.has_second_conv:
            return z
        return self._conv_bn_act(self.conv2, self.bn2, z) + y1
