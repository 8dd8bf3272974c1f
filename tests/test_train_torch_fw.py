"""The PyTorch training framework: device choice, dropout seeds and optimiser state copies."""

from __future__ import annotations

import types

import numpy as np
import pytest
from helpers import assert_predict_is_per_image_and_pure, tiny_architecture, tiny_batch

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


def test_torch_optimizers_take_the_configured_hyperparameters():
    """Every field of OptimConfig reaches torch.optim (values other than the defaults, so that
    a field dropped on the way, or a constant in its place, would show)."""
    torch = pytest.importorskip("torch")
    from gpconv.train.frameworks.torch_fw import make_optimizer

    w = [torch.zeros(2, requires_grad=True)]
    sgd = make_optimizer(w, OptimConfig("sgd", 0.05, momentum=0.8)).defaults
    assert (sgd["momentum"], sgd["lr"], sgd["nesterov"]) == (0.8, 0.05, False)
    adam = make_optimizer(w, OptimConfig("adam", 1e-3, beta1=0.8, beta2=0.99, eps=1e-5)).defaults
    assert (adam["betas"], adam["eps"], adam["lr"]) == ((0.8, 0.99), 1e-5, 1e-3)


def test_torch_predictions_are_per_image_and_leave_the_model_unchanged():
    """predict runs in inference mode: batch norm uses the moving statistics (so an image's
    logits do not depend on the rest of the batch) and nothing, moving statistics included,
    changes; as test_numpy_predictions_are_per_image_and_leave_the_model_unchanged."""
    pytest.importorskip("torch")
    fw = create(
        "torch", without_dropout(tiny_architecture()), OptimConfig("sgd", 0.1), seed=0, device="cpu"
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9, 9, 3)).astype(np.float32)
    fw.train_step(x, np.arange(3) % 3)  # moving statistics away from their initial values
    assert_predict_is_per_image_and_pure(fw, x)


def test_torch_predictions_equal_the_numpy_references_on_channels_last_images():
    """Batches arrive channels-last (B, H, W, 3): the torch framework must read rows as rows
    (permute(0, 3, 1, 2)), giving the numpy reference's logits for the same parameters on
    images that are not symmetric in H and W (a transposed read of square images would still
    train, and resume exactly, yet learn mirrored kernels)."""
    pytest.importorskip("torch")
    arch = without_dropout(tiny_architecture())
    torch_fw = create("torch", arch, OptimConfig("sgd", 0.1), seed=0, device="cpu")
    numpy_fw = create("numpy", arch, OptimConfig("sgd", 0.1), seed=0)
    numpy_fw.load_params(torch_fw.export_params())
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 3)).astype(np.float32)
    assert not np.allclose(x, x.transpose(0, 2, 1, 3))
    expected = numpy_fw.predict(x)
    # logits at initialisation are ~1e-5: the tolerance scales with them
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(torch_fw.predict(x), expected, rtol=1e-3, atol=1e-3 * scale)
