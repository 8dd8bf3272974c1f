"""``train.frameworks``: which framework ``create`` builds, the thread limits, and the NumPy
framework's training contract (dropout streams, learning rate, optimiser state, parameters).
TensorFlow's and torch's frameworks are in test_train_{tensorflow,torch}_fw.py."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_architecture, tiny_batch

from gpconv.core.arch import without_dropout
from gpconv.train import distributed, frameworks
from gpconv.train.frameworks import OptimConfig, create, numpy_fw
from gpconv.train.sampling import STREAM_DROPOUT


def test_create_refuses_an_unknown_backend_and_numpy_under_several_processes():
    arch = tiny_architecture()
    with pytest.raises(ValueError, match=r"Expected backend in .*received backend='jax'"):
        create("jax", arch, OptimConfig())
    with pytest.raises(ValueError, match="numpy backend trains in one process"):
        create("numpy", arch, OptimConfig(), 0, distributed.Dist(0, 2, 0))


def test_threads_up_to_the_cpu_count_are_accepted(monkeypatch):
    monkeypatch.setattr(frameworks, "cpu_count", lambda: 4)
    frameworks.check_threads(4)
    with pytest.raises(ValueError, match="Expected --threads <= 4 .*received 5"):
        frameworks.check_threads(5)


def test_set_threads_limits_torchs_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    try:
        frameworks.set_threads("torch", wanted)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["numpy", "cupy"])
def test_set_threads_limits_the_blas_of_numpy_and_cupys_host_side(backend):
    """From 2 BLAS threads: ``test_numpy_threads_limit_blas`` starts from the process's limit,
    which under OMP_NUM_THREADS=1 is 1 already, so it passed without any limit set."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # restores the limits afterwards
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 2 for p in blas), blas
        frameworks.set_threads(backend, 1)
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in blas), blas


def test_numpy_dropout_masks_come_from_seed_epoch_and_step(monkeypatch):
    """Each step of an epoch draws its dropout from ``epoch_rng(seed, epoch, STREAM_DROPOUT,
    step)``: a new stream per step (not one mask for the whole epoch), restarted by each
    ``begin_epoch`` (so a resumed epoch replays its masks); before any, the seed given."""
    drawn = []

    def recording(*args):
        drawn.append(args)
        return np.random.default_rng(list(args))

    monkeypatch.setattr(numpy_fw, "epoch_rng", recording)
    fw = create("numpy", tiny_architecture(), OptimConfig("sgd", 0.01), seed=5)
    x, y = tiny_batch(2)
    fw.train_step(x, y)
    fw.train_step(x, y)
    fw.begin_epoch(7, 2)
    fw.train_step(x, y)
    assert drawn == [
        (5, 0, STREAM_DROPOUT, 0),
        (5, 0, STREAM_DROPOUT, 1),
        (7, 2, STREAM_DROPOUT, 0),
    ]


def test_a_numpy_step_at_learning_rate_0_moves_only_the_moving_statistics():
    """``set_lr(0)`` stops the weights; the BN moving statistics still take the batch's
    (``r = 0.99 r + 0.01 batch``: every moving mean leaves its initial 0), so inference changes."""
    fw = create("numpy", without_dropout(tiny_architecture()), OptimConfig("sgd", 0.5))
    x, y = tiny_batch(2)
    before, logits = fw.export_params(), fw.predict(x)
    fw.set_lr(0.0)
    fw.train_step(x, y)
    after = fw.export_params()
    moving = [k for k in before if "/moving_" in k]
    assert moving and all(np.array_equal(after[k], before[k]) for k in before if k not in moving)
    means = [k for k in moving if k.endswith("moving_mean")]
    assert all(np.any(after[k] != 0) for k in means), [k for k in means if not after[k].any()]
    assert not np.allclose(fw.predict(x), logits)


def test_numpy_predictions_are_per_image_and_leave_the_model_unchanged():
    """Inference normalises with the moving statistics: an image's logits do not depend on the
    other images of its batch (batch statistics would), and the statistics stay as they were."""
    fw = create("numpy", tiny_architecture(), OptimConfig())
    x, _ = tiny_batch(3)
    before = fw.export_params()
    together = fw.predict(x)
    alone = np.concatenate([fw.predict(x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-12, atol=1e-12)
    assert all(np.array_equal(v, before[k]) for k, v in fw.export_params().items())


def test_numpy_adam_state_restored_into_a_fresh_framework_continues_the_same_steps():
    """Parameters and optimiser state (slots and Adam's step count ``t``, which sets the bias
    correction) copied into a new framework: its next step equals the original's."""
    arch, optim = without_dropout(tiny_architecture()), OptimConfig("adam", 0.01)
    x, y = tiny_batch(2)
    a = create("numpy", arch, optim)
    for _ in range(2):
        a.train_step(x, y)
    slots, meta = a.optimizer_state()
    assert meta["t"] == 2
    b = create("numpy", arch, optim, seed=1)
    b.load_params(a.export_params())
    b.load_optimizer_state(slots, meta)
    a.train_step(x, y)
    b.train_step(x, y)
    pa, pb = a.export_params(), b.export_params()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_numpy_load_params_refuses_a_missing_or_misshapen_parameter():
    fw = create("numpy", tiny_architecture(), OptimConfig())
    params = fw.export_params()
    name = "block1a_dwconv/kernel"
    with pytest.raises(ValueError, match=name):
        fw.load_params({k: v for k, v in params.items() if k != name})
    with pytest.raises(ValueError, match=name):
        fw.load_params({**params, name: params[name][:1]})
