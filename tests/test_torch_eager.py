"""Custom eager-mode gradients of the torch backend (backends/torch/eager.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from helpers import tiny_architecture, torch_devices  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpconv.backends.torch.eager import (  # noqa: E402
    _ChannelShuffle,
    channel_shuffle,
    eager_autograd,
    spatial_mean,
)
from gpconv.core.arch import without_dropout  # noqa: E402


def five_block_kefficientnet(num_classes: int) -> torch.nn.Module:
    """Five blocks of kEffNet-B0 without dropout (no random masks: the same function at every
    call), initialised from torch's RNG: every layer kind of B0, and so every custom autograd
    Function a CPU B0 runs (SE's spatial mean, the shuffle gather, the depthwise slab gradient
    of 3x3 and 5x5 convs of stride 1 and 2), at a small part of B0's cost."""
    from gpconv.backends.torch import build

    arch = tiny_architecture("kefficientnet", num_classes, skip_stride_cnt=1, blocks=5)
    return build(without_dropout(arch))


@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_mean_matches_the_plain_mean_and_its_gradient(channels_last):
    torch.manual_seed(0)
    y = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    y.requires_grad_(True)
    w = torch.randn(1, 5, 1, 1, dtype=torch.float64)

    def squeeze_excite(mean) -> torch.Tensor:  # y used twice, as in MBConv
        return (y * torch.sigmoid(w * mean(y))).square().sum()

    (g_custom,) = torch.autograd.grad(squeeze_excite(spatial_mean), y)
    (g_plain,) = torch.autograd.grad(squeeze_excite(lambda t: t.mean((2, 3), keepdim=True)), y)
    torch.testing.assert_close(spatial_mean(y), y.mean((2, 3), keepdim=True), rtol=0, atol=0)
    torch.testing.assert_close(g_custom, g_plain, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(spatial_mean, (y,))
    (g_alone,) = torch.autograd.grad(spatial_mean(y).sum(), y)
    assert g_alone.stride() == y.stride(), "the gradient must keep y's memory format"


def test_custom_gradients_only_where_autograd_records_eagerly():
    x = torch.randn(2, 2, requires_grad=True)
    assert eager_autograd(x)
    assert not eager_autograd(x.detach())
    with torch.no_grad():
        assert not eager_autograd(x)


@given(
    groups=st.integers(1, 6),
    per_group=st.integers(1, 6),
    n=st.integers(1, 3),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_channel_shuffle_equals_torchs_in_values_gradient_and_format(
    groups, per_group, n, h, w, channels_last, seed
):
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, groups * per_group, h, w).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    dy = torch.randn(n, groups * per_group, h, w).contiguous(memory_format=fmt)
    ours, theirs = channel_shuffle(x, groups), torch.channel_shuffle(x, groups)
    # A permutation: exact, and in the same memory format (strides) as torch's output.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ours.stride() == theirs.stride()
    (g_ours,) = torch.autograd.grad(ours, x, dy)
    (g_theirs,) = torch.autograd.grad(theirs, x, dy)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(channel_shuffle(x, groups), theirs, rtol=0, atol=0)


def test_channel_shuffle_gathers_only_channels_last_cpu_tensors_with_one_thread():
    x = torch.randn(2, 12, 3, 3, requires_grad=True)
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert type(channel_shuffle(cl, 3).grad_fn).__name__ == f"{_ChannelShuffle.__name__}Backward"
    assert type(channel_shuffle(x, 3).grad_fn).__name__ == "ChannelShuffleBackward0"
    torch.set_num_threads(2)  # the gather would run on one thread of two: torch's kernel
    try:
        assert type(channel_shuffle(cl, 3).grad_fn).__name__ == "ChannelShuffleBackward0"
    finally:
        torch.set_num_threads(1)
    # Its own backward is a shuffle too, so gradients of gradients are exact.
    y = torch.randn(2, 12, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradgradcheck(lambda t: channel_shuffle(t, 4), (y.requires_grad_(),))


def test_gathered_shuffle_may_be_changed_in_place_like_torchs():
    """Its output is a tensor of its own, not a view made inside the autograd Function (which
    autograd forbids changing in place): ``relu_`` on it works, with the right gradient."""
    x = torch.randn(2, 12, 3, 3).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(2, 12, 3, 3)
    grads = []
    for shuffle in (channel_shuffle, torch.channel_shuffle):
        xg = x.clone().requires_grad_(True)
        y = shuffle(xg, 4)
        torch.relu_(y)
        (g,) = torch.autograd.grad(y, xg, dy)
        grads.append(g)
    assert type(channel_shuffle(x.requires_grad_(True), 4).grad_fn).__name__.startswith(
        _ChannelShuffle.__name__
    )  # the gather ran
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_shuffle_index_is_never_kept_from_a_meta_device_or_a_fake_mode(monkeypatch):
    """The gather's index is kept for the process: one made on a default meta device, or a
    FakeTensor made under a fake mode, would break every later shuffle of that shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gpconv.backends.torch import eager

    monkeypatch.setattr(eager, "_SHUFFLE_INDEX", {})
    x = torch.arange(360.0).view(2, 20, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.device("meta"):
        eager.gather_shuffle(x, 5)
    with FakeTensorMode() as mode:
        eager.gather_shuffle(mode.from_tensor(x), 4)
        eager._shuffle_index(20, 2)  # a real x under the mode: its index is a stand-in
    assert torch.equal(eager.gather_shuffle(x, 5), torch.channel_shuffle(x, 5))
    for groups in (4, 2):
        assert torch.equal(eager.gather_shuffle(x, groups), torch.channel_shuffle(x, groups))


def test_second_order_gradients_through_the_custom_functions_equal_plain_autograds(monkeypatch):
    """A gradient penalty (``create_graph=True``, then a gradient of the input gradient's norm)
    through kEffNet (five blocks of B0) on the CPU, NHWC: every custom backward (spatial mean,
    shuffle gather, depthwise slab weight gradient) is itself differentiated. The parameter
    gradients must be those of torch's own ops, which the network runs when the custom functions
    are off (``eager.transformed``), and match a central difference along one direction."""
    from gpconv.backends.torch import conv, eager

    used = []
    for cls in (eager._SpatialMean, eager._ChannelShuffle, conv._DepthwiseSlabGrad):
        monkeypatch.setattr(
            cls, "apply", lambda *a, _c=cls, _f=cls.apply: used.append(_c) or _f(*a)
        )
    torch.manual_seed(0)
    model = five_block_kefficientnet(10).double()
    x0 = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    params = list(model.parameters())

    def penalty() -> torch.Tensor:
        x = x0.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
        return gx.square().sum()

    custom = torch.autograd.grad(penalty(), params)
    assert {cls.__name__ for cls in used} == {
        "_SpatialMean",
        "_ChannelShuffle",
        "_DepthwiseSlabGrad",
    }
    monkeypatch.setattr(eager, "transformed", lambda: True)
    plain = torch.autograd.grad(penalty(), params)
    scale = max(g.norm() for g in plain)  # gradients that are 0 under BN are compared to it
    for (name, _), a, b in zip(model.named_parameters(), custom, plain):
        assert (a - b).norm() <= 1e-9 * scale, f"{name}: {(a - b).norm():.2e} vs scale {scale:.2e}"

    direction = [torch.randn_like(p) for p in params]
    eps = 1e-5

    def shifted(step: float) -> float:  # move every parameter by step * direction
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(step * d)
        return penalty().item()

    above, below = shifted(eps), shifted(-2 * eps)
    fd = (above - below) / (2 * eps)
    analytic = sum((g * d).sum().item() for g, d in zip(custom, direction))
    # central-difference truncation error measured 3e-6 relative
    assert abs(fd - analytic) <= 1e-4 * abs(fd), f"finite difference {fd}, autograd {analytic}"


@pytest.mark.parametrize("device", torch_devices())
def test_batched_gradients_through_the_custom_functions_equal_one_at_a_time(device):
    """``torch.autograd.grad(..., is_grads_batched=True)``, which
    ``torch.autograd.functional.jacobian/hessian(vectorize=True)`` run, hands every backward a
    legacy vmap batched tensor, which has no memory format: the spatial mean's backward raised
    "NYI: querying is_contiguous inside of vmap". Batched gradients must equal the gradients
    taken one vector at a time, for the input and every parameter."""
    torch.manual_seed(0)
    model = five_block_kefficientnet(3).double().to(device)  # the jacobian runs it again
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, device=device, requires_grad=True)
    inputs = [x, *model.parameters()]
    y = model(x)
    vectors = torch.eye(6, dtype=torch.float64, device=device).reshape(6, 2, 3)  # each logit
    batched = torch.autograd.grad(y, inputs, vectors, retain_graph=True, is_grads_batched=True)
    single = [torch.autograd.grad(y, inputs, v, retain_graph=True) for v in vectors]
    names = ["x"] + [n for n, _ in model.named_parameters()]
    expected = [torch.stack([g[i] for g in single]) for i in range(len(names))]
    largest = max(e.norm() for e in expected)
    for name, got, want in zip(names, batched, expected):
        scale = max(want.norm(), 1e-3 * largest)  # conv biases before BN: gradient 0
        assert (got - want).norm() <= 1e-10 * scale, f"{name}: {(got - want).norm():.1e}"
    jacobian = torch.autograd.functional.jacobian(model, x.detach(), vectorize=True)
    expected = torch.stack([g[0] for g in single]).reshape(2, 3, *x.shape)
    torch.testing.assert_close(jacobian, expected, rtol=1e-10, atol=1e-12)
