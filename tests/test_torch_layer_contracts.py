"""torch layers where no other test looks: Keras's epsilon after
``replace_all_batch_norm_modules_``, unbatched ``(C, H, W)`` inputs to ``KerasConv2d`` (as
``nn.Conv2d`` takes them), the memory-format test on ambiguous tensors, a whole model under CPU
autocast, the slab weight gradient of a depthwise conv whose input needs no gradient, what
``impl="auto"`` runs on CPU, and ``Interleave`` on rank-2 input or an indivisible channel count.

Expectations come from PyTorch's own semantics (``nn.Conv2d``, ``torch.autocast``, the
``suggest_memory_format`` convention for ambiguous strides) and DESIGN.md's Keras batch norm,
computed here by hand or with plain torch ops, never by the path under test.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import torch.nn.functional as F  # noqa: E402
from helpers import tiny_architecture  # noqa: E402

from gpconv.backends.torch import (  # noqa: E402
    EfficientNet,
    GroupedPointwise2d,
    Interleave,
    KerasBatchNorm2d,
    KerasConv2d,
    replace_all_batch_norm_modules_,
)
from gpconv.backends.torch.layout import is_channels_last  # noqa: E402
from gpconv.core import arch as core_arch  # noqa: E402
from gpconv.core.pointwise import deinterleave, interleave  # noqa: E402

TINY_ARCH = core_arch.without_dropout(tiny_architecture("kefficientnet", num_classes=3, blocks=2))


def test_batch_norms_without_running_statistics_keep_keras_epsilon() -> None:
    """After ``replace_all_batch_norm_modules_`` a ``KerasBatchNorm2d`` normalises with the batch
    mean and *biased* variance in every mode, still with Keras's ``eps = 1e-3`` (DESIGN.md §1),
    not torch's 1e-5. A small batch variance (0.05² here) makes the two epsilons differ by ~20%."""
    gen = torch.Generator().manual_seed(0)
    x = (0.05 * torch.randn(4, 3, 2, 3, generator=gen, dtype=torch.float64)) + 1.0
    bn = KerasBatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    root = torch.nn.Sequential(bn)
    replace_all_batch_norm_modules_(root)
    xs = x.numpy()
    mean = xs.mean(axis=(0, 2, 3), keepdims=True)
    var = xs.var(axis=(0, 2, 3), keepdims=True)  # biased (ddof=0), as Keras
    gamma, beta = np.array([0.5, 1.0, 2.0]), np.array([0.1, -0.2, 0.3])
    expected = gamma.reshape(1, 3, 1, 1) * (xs - mean) / np.sqrt(var + 1e-3) + beta.reshape(
        1, 3, 1, 1
    )
    for mode in (True, False):
        with torch.no_grad():
            y = root.train(mode)(x).numpy()
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-8, err_msg=f"{mode=}")


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "groups"),
    [
        (3, 8, 3, 2, "correct", 1),  # the stem
        (4, 4, 5, 1, "same", 4),  # a wide stride-1 depthwise conv: the slab weight gradient
        (4, 4, 3, 2, "correct", 4),
    ],
    ids=["stem", "depthwise-5x5", "depthwise-3x3-s2"],
)
@pytest.mark.parametrize("height", ["7", "C"])
def test_keras_conv_takes_an_unbatched_image_like_nn_conv2d(
    cin: int, cout: int, kernel: int, stride: int, padding: str, groups: int, height: str
) -> None:
    """``nn.Conv2d`` takes an unbatched ``(C, H, W)`` image and so does ``KerasConv2d`` (its shape
    check accepts rank 3 "as nn.Conv2d"): the result and both gradients are those of the batch of
    one, ``x[None]``, whether H differs from C (so a channel count read from ``x.shape[1]``
    shows) or equals it (the wide depthwise conv took its 4-d-only slab backward then, and the
    backward failed)."""
    gen = torch.Generator().manual_seed(1)
    conv = KerasConv2d(cin, cout, kernel, stride, padding, groups=groups)
    x = torch.randn(cin, cin if height == "C" else 7, 6, generator=gen, requires_grad=True)
    xb = x.detach()[None].requires_grad_(True)
    y = conv(x)
    dy = torch.randn(y.shape, generator=gen)
    (wg,) = torch.autograd.grad(y, conv.weight, dy, retain_graph=True)
    (xg,) = torch.autograd.grad(y, x, dy)
    yb = conv(xb)
    (wgb,) = torch.autograd.grad(yb, conv.weight, dy[None], retain_graph=True)
    (xgb,) = torch.autograd.grad(yb, xb, dy[None])
    assert y.shape == yb.shape[1:]
    torch.testing.assert_close(y, yb[0])
    torch.testing.assert_close(xg, xgb[0])
    torch.testing.assert_close(wg, wgb)


def test_ambiguous_contiguous_tensors_are_not_taken_for_channels_last() -> None:
    """A ``(N, 1, H, W)`` or ``(N, C, 1, 1)`` tensor is contiguous in both formats; torch
    (``suggest_memory_format``) then treats it as NCHW, and ``is_channels_last`` says so in its
    docstring. A grouped 1x1 conv with ``impl="matmul"`` keeps the input's format, so on such an
    NCHW-contiguous input its output is contiguous NCHW, as ``F.conv2d``'s is."""
    assert not is_channels_last(torch.zeros(2, 1, 4, 5))
    assert not is_channels_last(torch.zeros(2, 3, 1, 1))
    assert is_channels_last(torch.zeros(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))
    layer = GroupedPointwise2d(1, 4, impl="matmul")
    x = torch.randn(2, 1, 3, 5)
    y = layer(x)
    ref = F.conv2d(x, layer.weight)
    assert ref.is_contiguous()
    assert y.is_contiguous(), "matmul impl turned an NCHW input into a channels_last output"
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("channels_last", [None, False], ids=["default", "nchw"])
def test_a_model_runs_under_cpu_autocast(channels_last: bool | None) -> None:
    """``torch.autocast`` is how PyTorch users run a float32 model in mixed precision: the ops it
    covers return bfloat16 activations that the next layer (a float32 batch norm) must accept.
    The logits stay close to the float32 model's and every parameter gets a gradient."""
    model = EfficientNet(TINY_ARCH, seed=0, channels_last=channels_last).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wide_depthwise_conv_takes_the_slab_gradient_when_only_its_weight_needs_one() -> None:
    """The slab backward exists for the depthwise *weight* gradient (backends/depthwise_grad.py):
    a conv whose input needs no gradient (the layers before it frozen) still needs the weight's,
    so it takes the slab path, and its weight gradient is the plain op's."""
    gen = torch.Generator().manual_seed(3)
    conv = KerasConv2d(4, 4, 5, 1, "same", groups=4)
    x = torch.randn(2, 4, 7, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    y = conv(x)
    assert type(y.grad_fn).__name__ == "_DepthwiseSlabGradBackward"
    dy = torch.randn(y.shape, generator=gen)
    (wg,) = torch.autograd.grad(y, conv.weight, dy)
    w = conv.weight.detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 2, 1, 4), w, dy)
    torch.testing.assert_close(wg, ref)


def test_auto_impl_runs_the_channels_last_conv_on_cpu() -> None:
    """pointwise.py: ``"auto"`` (the default) is ``"channels_last"`` on CPU, which "returns
    ``channels_last``" whatever the input's format (the grouped conv on a channels_last copy);
    ``"matmul"`` would keep an NCHW input NCHW. So a CPU ``impl="auto"`` layer given an NCHW
    input returns a channels_last output with the grouped conv's values."""
    layer = GroupedPointwise2d(8, 12, 4, impl="auto")
    x = torch.randn(2, 8, 3, 5, generator=torch.Generator().manual_seed(4))
    y = layer(x)
    assert is_channels_last(y), "impl='auto' on CPU must run the channels_last grouped conv"
    torch.testing.assert_close(y, F.conv2d(x, layer.weight, None, groups=4))


def test_interleave_of_a_rank_two_batch_equals_core() -> None:
    """``Interleave`` takes ``(N, C, ...)``, so ``(N, C)`` too (its docstring: rank < 3 takes the
    reshape-transpose formulation, since ``torch.channel_shuffle`` wants more than two dims):
    ``out[:, s*G + g] = x[:, g*S + s]`` (DESIGN.md §1), which ``core.interleave`` computes on the
    last axis; the gradient is the inverse permutation."""
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(5), requires_grad=True)
    y = Interleave(4)(x)
    np.testing.assert_array_equal(y.detach().numpy(), interleave(x.detach().numpy(), 4))
    dy = torch.randn(3, 12, generator=torch.Generator().manual_seed(6))
    y.backward(dy)
    np.testing.assert_array_equal(x.grad.numpy(), deinterleave(dy.numpy(), 4))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_interleave_refuses_a_channel_count_its_groups_do_not_divide(channels_last: bool) -> None:
    """``S = C // G`` must be whole (DESIGN.md §1); a layer given such an input raises the
    ``ValueError`` every layer here raises for a bad shape, naming both numbers, not torch's
    ``RuntimeError`` from inside a reshape or an index."""
    x = torch.zeros(2, 4, 3, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"groups=3 to divide the channels x.shape\[1\]=4"):
        Interleave(3)(x)


def test_channels_last_false_runs_nchw_whatever_the_inputs_format() -> None:
    """``EfficientNet(channels_last=False)`` runs the network NCHW (``uses_channels_last`` is
    False; the module docstring: the input is converted once to the network's memory format and
    every layer keeps it), so a channels_last input is converted too, as ``channels_last=True``
    converts an NCHW one. It kept the input's format before, running NHWC against its setting."""
    seen = []
    for channels_last in (False, True):
        model = EfficientNet(TINY_ARCH, seed=0, channels_last=channels_last).eval()
        model.stem.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
        if not channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            model(x)
        assert is_channels_last(seen[-1]) is channels_last
        assert seen[-1].is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
