"""``SlabGradDepthwiseConv2D`` is a drop-in ``keras.layers.DepthwiseConv2D``: in every
configuration Keras accepts, its output and gradients are the parent's.

The existing reference test (test_tensorflow_backend.py) covers only the models' configuration
(odd square kernels, ``"same"``, no bias, multiplier 1, linear). The layer's own docstring says
that every other configuration runs the parent's ``call`` and that the column-slab filter
gradient is the same function, so ``keras.layers.DepthwiseConv2D`` with the same weights is the
independent ground truth here (an even kernel width still takes the slab route, with TF's
``"same"`` rule: the extra padding column after).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from gpconv.backends.tensorflow import SlabGradDepthwiseConv2D  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "even-kernel-4": {"kernel_size": 4, "use_bias": False, "padding": "same"},
    "kernel-6x4": {"kernel_size": (6, 4), "use_bias": False, "padding": "same"},
    "bias": {"kernel_size": 5, "padding": "same", "use_bias": True},  # Keras's default
    "multiplier-2": {"kernel_size": 5, "use_bias": False, "padding": "same", "depth_multiplier": 2},
    "relu": {"kernel_size": 5, "use_bias": False, "padding": "same", "activation": "relu"},
    "valid": {"kernel_size": 5, "use_bias": False, "padding": "valid"},
    "dilation-2": {"kernel_size": 5, "use_bias": False, "padding": "same", "dilation_rate": 2},
    "stride-2": {"kernel_size": 5, "use_bias": False, "padding": "same", "strides": 2},
    "models": {"kernel_size": 5, "use_bias": False, "padding": "same"},  # the slab route
}


def _run(layer: keras.layers.Layer, x: np.ndarray, weights: list[np.ndarray], seed: int):
    """Output, input gradient and weight gradients of ``layer`` for a fixed output gradient."""
    if not layer.built:
        layer.build(x.shape)
    for var, value in zip(layer.weights, weights, strict=True):
        var.assign(value)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    dy = tf.constant(np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32))
    grads = tape.gradient(y, [xt, *layer.weights], output_gradients=dy)
    return [y.numpy()] + [g.numpy() for g in grads]


# Keras's variable assignment calls np.array on a tensor (a NumPy 2 deprecation inside Keras).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_slab_grad_depthwise_equals_keras_depthwise_in_every_configuration(
    config: dict[str, Any],
) -> None:
    """Forward, dx, dkernel (and dbias) equal keras.layers.DepthwiseConv2D with the same
    weights: the subclass may change how the filter gradient is computed, never what it is."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 10, 3)).astype(np.float32)
    ours = SlabGradDepthwiseConv2D(**config)
    keras_layer = keras.layers.DepthwiseConv2D(**config)
    keras_layer.build(x.shape)
    weights = [rng.standard_normal(tuple(v.shape)).astype(np.float32) for v in keras_layer.weights]
    names = ["y", "dx", *(f"d{v.name}" for v in keras_layer.weights)]
    expected = _run(keras_layer, x, weights, seed=1)
    actual = _run(ours, x, weights, seed=1)
    for name, a, e in zip(names, actual, expected, strict=True):
        assert a.shape == e.shape, f"{name}: shape {a.shape} != Keras's {e.shape} ({config})"
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, err_msg=f"{name} {config}")
