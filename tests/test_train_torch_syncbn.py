"""The synchronised batch norm of DDP training (``train.frameworks.torch_syncbn``) in one
process, its group faked: when it synchronises, what it computes, what converting replaces.
Its compiled graph and a real two-process run are in test_train.py."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as td  # noqa: E402

from gpconv.backends.torch.batchnorm import KerasBatchNorm2d  # noqa: E402
from gpconv.train.frameworks import torch_syncbn  # noqa: E402
from gpconv.train.frameworks.torch_syncbn import (  # noqa: E402
    SyncKerasBatchNorm2d,
    convert_sync_batchnorm,
)


def _group_of(monkeypatch, world: int | None) -> None:
    """Make torch.distributed report a group of ``world`` processes (None: no group)."""
    monkeypatch.setattr(td, "is_initialized", lambda: world is not None)
    monkeypatch.setattr(td, "get_world_size", lambda *a, **k: world)


def test_batch_norm_synchronises_only_in_training_in_a_group_of_several(monkeypatch):
    """No group, or a group of one: nothing to reduce over (the plain, fused BN runs); inference
    normalises with the moving statistics, never reducing."""
    bn = SyncKerasBatchNorm2d(3).train()
    for world, training, expected in [
        (None, True, False),
        (1, True, False),
        (2, True, True),
        (2, False, False),
    ]:
        _group_of(monkeypatch, world)
        assert bn.train(training).synchronises() is expected, (world, training)


def test_synchronised_batch_norm_of_two_equal_shards_is_the_batch_norm_of_the_whole_batch(
    monkeypatch,
):
    """Two processes holding the same shard ``x`` (all-reduce: twice the local sums, its
    backward twice the local gradient) form the global batch ``[x; x]``, whose mean and biased
    variance are ``x``'s own: output, input and parameter gradients and the moving statistics
    equal ``KerasBatchNorm2d`` on ``x`` (eps 1e-3 matters: the variance is ~1e-3 here)."""
    _group_of(monkeypatch, 2)
    monkeypatch.setattr(torch_syncbn, "all_reduce", lambda t: 2 * t)
    g = torch.Generator().manual_seed(0)
    x = (0.03 * torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    weights = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    results = []
    for cls in (KerasBatchNorm2d, SyncKerasBatchNorm2d):
        bn = cls(3).double().train()
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        x.grad = None
        out = bn(x)
        (out * weights).sum().backward()
        results.append(
            (out.detach(), x.grad.clone(), bn.weight.grad, bn.running_mean, bn.running_var)
        )
    for ref, got in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_converting_refuses_other_batch_norms_and_keeps_torchs_synchronised_one():
    """A ``torch.nn.BatchNorm2d`` would stay per-process silently (TypeError instead); a
    ``torch.nn.SyncBatchNorm`` already synchronises (kept, not counted); a second conversion
    converts nothing more."""
    with pytest.raises(TypeError, match="cannot synchronise BatchNorm2d"):
        convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    model = torch.nn.Sequential(torch.nn.SyncBatchNorm(3), KerasBatchNorm2d(3), KerasBatchNorm2d(4))
    assert convert_sync_batchnorm(model) == 2
    assert type(model[0]) is torch.nn.SyncBatchNorm and type(model[2]) is SyncKerasBatchNorm2d
    assert convert_sync_batchnorm(model) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_synchronised_batch_norm_of_a_half_precision_model_keeps_float32_statistics(
    monkeypatch, dtype
):
    """A float16 model converted for DDP (or one under autocast) summed each channel
    in float16: 65,536 values near 1 (a batch of 16 at 64x64) overflow its 65,504, and every
    output and moving statistic became NaN, where the per-process ``KerasBatchNorm2d`` (whose
    ``F.batch_norm`` keeps float32 statistics) gives the normalised batch. Two equal shards,
    as above: the output equals the plain BN's to half-precision rounding, in ``dtype``."""
    _group_of(monkeypatch, 2)
    monkeypatch.setattr(torch_syncbn, "all_reduce", lambda t: 2 * t)
    g = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(16, 3, 64, 64, generator=g) + 1.0).to(dtype)
    ref = KerasBatchNorm2d(3).to(dtype).train()(x)
    bn = SyncKerasBatchNorm2d(3).to(dtype).train()
    out = bn(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=0.05)
    torch.testing.assert_close(bn.running_mean.float(), torch.full((3,), 0.01), rtol=0, atol=1e-3)
    torch.testing.assert_close(bn.running_var.float(), torch.full((3,), 0.9901), rtol=0, atol=2e-3)
