"""The TensorFlow training framework: optimiser settings, dropout seeds, the loss, one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_predict_is_per_image_and_pure, tiny_architecture, tiny_batch

from gpconv.core.arch import without_dropout
from gpconv.train.frameworks import OptimConfig, create


def test_tensorflow_optimizers_take_the_configured_hyperparameters():
    """As test_torch_optimizers_take_keras_hyperparameters for torch: every field of
    OptimConfig reaches the Keras optimiser (values other than Keras's defaults, so that a
    field dropped on the way would show)."""
    pytest.importorskip("tensorflow")
    from gpconv.train.frameworks.tensorflow_fw import make_optimizer

    sgd = make_optimizer(OptimConfig("sgd", 0.05, momentum=0.8))
    assert (sgd.momentum, sgd.nesterov) == (0.8, False)
    assert float(sgd.learning_rate) == pytest.approx(0.05)
    adam = make_optimizer(OptimConfig("adam", 1e-3, beta1=0.8, beta2=0.99, eps=1e-5))
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.8, 0.99, 1e-5)
    assert float(adam.learning_rate) == pytest.approx(1e-3)


def _tensorflow_framework():
    return create("tensorflow", tiny_architecture(), OptimConfig("sgd", 0.1), seed=0)


def test_tensorflow_dropout_seeds_are_per_layer_and_per_epoch():
    """begin_epoch resets every dropout / drop-connect SeedGenerator from (seed, epoch, layer):
    the same epoch replays the same masks (what --resume relies on), another epoch draws
    others, and no two layers share a stream (their masks would be correlated)."""
    pytest.importorskip("tensorflow")
    import numpy as np

    fw = _tensorflow_framework()
    assert len(fw._seed_states) >= 2, "the tiny architecture has dropout and drop-connect"

    def states():
        return [tuple(s.numpy().tolist()) for s in fw._seed_states]

    x, _ = tiny_batch(2)
    fw.begin_epoch(7, 1)
    first, out = states(), fw.model(x, training=True).numpy()
    assert len(set(first)) == len(first)
    fw.begin_epoch(7, 2)
    assert all(a != b for a, b in zip(first, states(), strict=True))
    fw.begin_epoch(7, 1)
    assert states() == first
    np.testing.assert_array_equal(fw.model(x, training=True).numpy(), out)


def test_tensorflow_refuses_more_than_one_process():
    pytest.importorskip("tensorflow")
    from gpconv.train.distributed import Dist

    with pytest.raises(ValueError, match="implemented for --backend torch only"):
        create("tensorflow", tiny_architecture(), OptimConfig("sgd", 0.1), 0, Dist(0, 2, 0))


def test_tensorflow_steps_report_and_descend_the_mean_loss_as_the_reference_does():
    """The train step's loss is the batch mean of the cross-entropy, as numpy_fw's (the
    reference) and torch's: a sum would report a loss batch-size times larger and scale the
    update with it, yet a tensorflow run would still resume exactly as it ran."""
    pytest.importorskip("tensorflow")
    import numpy as np

    from gpconv.core.arch import without_dropout

    arch = without_dropout(tiny_architecture())
    x, y = tiny_batch()
    steps, params = {}, {}
    for backend in ("numpy", "tensorflow"):
        fw = create(backend, arch, OptimConfig("sgd", 0.1), seed=0)
        steps[backend] = fw.train_step(x, y)
        params[backend] = fw.export_params()
    (loss, logits), (ref_loss, ref_logits) = steps["tensorflow"], steps["numpy"]
    assert loss == pytest.approx(ref_loss, rel=1e-3)
    np.testing.assert_allclose(
        logits, ref_logits, rtol=0, atol=1e-3 * max(1.0, np.abs(ref_logits).max())
    )
    for name, value in params["numpy"].items():  # one update with the same gradient
        np.testing.assert_allclose(
            params["tensorflow"][name], value, rtol=1e-3, atol=1e-4, err_msg=name
        )


def test_tensorflow_refuses_optimizer_state_of_another_length():
    """A checkpoint's optimizer arrays must match the optimiser's variables one for one: an
    extra array (another optimiser's state) is an error, not silently dropped."""
    pytest.importorskip("tensorflow")
    fw = _tensorflow_framework()
    arrays, meta = fw.optimizer_state()
    extra = {**arrays, f"{len(arrays):04d}": next(iter(arrays.values()))}
    with pytest.raises(ValueError, match=f"optimizer state has {len(arrays) + 1} variables"):
        fw.load_optimizer_state(extra, meta)
    fw.load_optimizer_state(arrays, meta)  # its own state loads


_TF_THREADS = """
from gpconv.train.frameworks import set_threads
set_threads("tensorflow", 1)
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
tf.constant(1.0) + 1.0  # starts TensorFlow's runtime: its thread pools are fixed from here
try:
    set_threads("tensorflow", 2)
except ValueError as err:
    print("ValueError:", err)
"""


@pytest.mark.slow  # a fresh process that imports TensorFlow: 5-15 s
def test_tensorflow_threads_set_both_pools_and_refuse_once_it_runs():
    """TensorFlow's threads can be set only before its runtime starts (so in a process of its
    own): both its intra-op and inter-op pools get the limit, and a later call is a
    ValueError saying so, not silently ignored."""
    pytest.importorskip("tensorflow")
    out = subprocess.run(
        [sys.executable, "-c", _TF_THREADS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "1 1", lines
    assert lines[1].startswith("ValueError: cannot set TensorFlow threads now"), lines


@pytest.fixture(scope="module")
def trained_tensorflow():
    """A tensorflow framework after one SGD step on a small batch, and that batch."""
    pytest.importorskip("tensorflow")
    fw = create("tensorflow", without_dropout(tiny_architecture()), OptimConfig("sgd", 0.1), seed=0)
    x = np.random.default_rng(0).standard_normal((3, 9, 9, 3)).astype(np.float32)
    fw.train_step(x, np.arange(3) % 3)
    return fw, x


def test_tensorflow_refuses_optimizer_state_with_fewer_arrays(trained_tensorflow):
    """A checkpoint's optimiser arrays must match the optimiser's variables one for one: one
    missing (another optimiser's state) is the ValueError naming both counts, not a KeyError
    after some variables were already overwritten."""
    fw, _ = trained_tensorflow
    arrays, meta = fw.optimizer_state()
    n = len(arrays)
    fewer = {f"{i:04d}": arrays[f"{i:04d}"] for i in range(n - 1)}
    message = f"optimizer state has {n - 1} variables, the optimizer {n}"
    with pytest.raises(ValueError, match=message):
        fw.load_optimizer_state(fewer, meta)


def test_tensorflow_predictions_are_per_image_and_leave_the_model_unchanged(trained_tensorflow):
    """predict runs in inference mode: batch norm uses the moving statistics (an image's logits
    do not depend on the rest of the batch) and no moving statistic changes."""
    assert_predict_is_per_image_and_pure(*trained_tensorflow)
