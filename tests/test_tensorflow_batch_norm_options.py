"""``FusedBatchNormalization`` keeps ``keras.layers.BatchNormalization``'s semantics for every
constructor option, not only the defaults the models use.

The module promises "the semantics are Keras's, unchanged: eps/momentum from the layer", and
that inputs the fused kernel cannot take (another axis) go to the parent. The existing test
(test_tensorflow_backend.py) runs the defaults only: epsilon 1e-3, momentum 0.99, scale and
center on, axis -1, where a dropped ``epsilon=`` argument is invisible because TensorFlow's
fused kernel defaults to the same 1e-3. Keras's own layer with the same options and weights is
the independent ground truth.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from gpconv.backends.tensorflow import FusedBatchNormalization  # noqa: E402

OPTIONS: dict[str, dict[str, Any]] = {
    "epsilon-0.5": {"epsilon": 0.5},
    "momentum-0.5": {"momentum": 0.5},
    "no-scale-no-center": {"scale": False, "center": False},
    "axis-1": {"axis": 1},  # channels-first use: not fusable, the parent's path
    "axis-3": {"axis": 3},  # the same axis as -1 on 4-d inputs
}


def _outputs(layer: keras.layers.Layer, x: tf.Tensor, dy: tf.Tensor, training: bool):
    """``{name: array}``: output, gradients wrt x and each trainable weight, moving stats."""
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    for var in layer.weights:  # gamma/beta and moving stats, all positive
        var.assign(rng.uniform(0.5, 1.5, tuple(var.shape)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
    grads = tape.gradient(y, [x, *layer.trainable_weights], output_gradients=dy)
    out = {"y": y.numpy(), "dx": grads[0].numpy()}
    out.update({f"d{v.name}": g.numpy() for v, g in zip(layer.trainable_weights, grads[1:])})
    out.update({v.name: v.numpy() for v in layer.non_trainable_weights})
    return out


# Keras's variable assignment calls np.array on a tensor (a NumPy 2 deprecation inside Keras).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_fused_batch_norm_equals_keras_for_every_option(
    options: dict[str, Any], training: bool
) -> None:
    """Output, gradients and updated moving statistics equal Keras's BatchNormalization built
    with the same options and weights (epsilon enters both modes; momentum the update)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((3, 4, 5, 6)) * 2 + 1, tf.float32)
    dy = tf.constant(rng.standard_normal(x.shape), tf.float32)
    actual = _outputs(FusedBatchNormalization(**options), x, dy, training)
    expected = _outputs(keras.layers.BatchNormalization(**options), x, dy, training)
    assert actual.keys() == expected.keys()
    for name, e in expected.items():
        a = actual[name]
        assert a.shape == e.shape, f"{name}: shape {a.shape} != Keras's {e.shape} ({options})"
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} {options}")
