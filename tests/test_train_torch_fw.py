"""The PyTorch training framework: device choice, dropout seeds and optimiser state copies."""

from __future__ import annotations

import types

import numpy as np
import pytest
from helpers import tiny_architecture, tiny_batch

from gpconv.core.arch import without_dropout
from gpconv.train.distributed import Dist
from gpconv.train.frameworks import OptimConfig, create


def _torch_framework(arch=None):
    arch = arch or without_dropout(tiny_architecture())
    return create("torch", arch, OptimConfig("sgd", 0.1), seed=0, device="cpu")


def test_the_process_groups_device_wins_over_the_device_option():
    """Under torchrun train.distributed placed each process on its device (cuda:<local
    rank>); a --device given as well must not move the process elsewhere."""
    torch = pytest.importorskip("torch")
    from gpconv.train.frameworks.torch_fw import default_device

    group = types.SimpleNamespace(device=torch.device("meta"))
    assert default_device(group, "cpu") == torch.device("meta")
    assert default_device(Dist(0, 1, 0), "cpu") == torch.device("cpu")


def test_torch_dropout_rng_is_seeded_from_seed_epoch_and_rank():
    """begin_epoch seeds torch's global RNG with derived_seed(seed, epoch, STREAM_DROPOUT,
    rank): resume replays the same masks, and under DDP each replica draws its own masks for
    its own shard (the same masks on every rank would correlate them)."""
    torch = pytest.importorskip("torch")
    from gpconv.train.sampling import STREAM_DROPOUT, derived_seed

    fw = _torch_framework()
    fw.begin_epoch(3, 4)
    drawn = torch.rand(8)
    torch.manual_seed(derived_seed(3, 4, STREAM_DROPOUT, 0))
    assert torch.equal(drawn, torch.rand(8))
    fw.dist = Dist(1, 2, 0)  # what rank 1 of 2 seeds (begin_epoch only reads the rank)
    fw.begin_epoch(3, 4)
    assert not torch.equal(drawn, torch.rand(8))


def test_torch_optimizer_state_is_a_snapshot_both_ways():
    """optimizer_state's arrays are copies (later steps must not change a checkpoint being
    written), and load_optimizer_state does not train on the caller's arrays in place."""
    pytest.importorskip("torch")
    fw = _torch_framework()
    x, y = tiny_batch()
    fw.train_step(x, y)
    arrays, meta = fw.optimizer_state()
    assert arrays, "SGD with momentum has momentum buffers after a step"
    before = {k: v.copy() for k, v in arrays.items()}
    fw.train_step(x, y)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k], err_msg=k)
    other = _torch_framework()
    other.load_optimizer_state(arrays, meta)
    other.train_step(x, y)
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], before[k], err_msg=k)
