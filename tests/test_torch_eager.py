"""Custom eager-mode gradients of the torch backend (backends/torch/eager.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gpconv.backends.torch.eager import eager_autograd, spatial_mean  # noqa: E402


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
