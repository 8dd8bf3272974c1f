"""Every route of the grouped product and of the interleave, on fixed cases that exercise it.

The hypothesis tests of test_tensorflow_backend.py draw the implementation and the shapes
together; under the CI profile (8 derandomized examples) no draw may reach a given route with
more than one group *and* more than one output channel per group, the only shapes on which a
wrong axis order in a route shows. These cases pin each route against the float64 reference
(core), whatever hypothesis draws.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from gpconv.backends.tensorflow import GroupedPointwise, InterleaveChannels  # noqa: E402
from gpconv.backends.tensorflow.grouped import IMPLS  # noqa: E402
from gpconv.core import GroupedPointwise as RefGroupedPointwise  # noqa: E402
from gpconv.core import interleave as ref_interleave  # noqa: E402


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("groups", "ci", "co"), [(3, 2, 4), (2, 5, 3), (1, 4, 6)])
def test_each_grouped_impl_matches_the_reference(impl: str, groups: int, ci: int, co: int) -> None:
    """``y``, ``dx`` and ``dkernel`` of ``GroupedPointwise`` equal core's float64 grouped 1×1
    convolution (output channel ``g*Co + o`` reads input block ``g`` only) for every ``impl``:
    the implementations are interchangeable ways of computing one function (grouped.py)."""
    rng = np.random.default_rng(groups * 100 + ci * 10 + co)
    x = rng.standard_normal((2, 3, 2, groups * ci))
    layer = GroupedPointwise(groups * co, groups, impl=impl)
    layer.build(x.shape)
    kernel = rng.standard_normal(tuple(layer.kernel.shape))
    layer.kernel.assign(kernel.astype(np.float32))
    y_ref, cache = RefGroupedPointwise.forward(x, kernel, None, groups)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, g_ref = RefGroupedPointwise.backward(cache, dy)
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    dx, dk = tape.gradient(y, [xt, layer.kernel], output_gradients=tf.constant(dy, tf.float32))
    for name, a, e in (("y", y, y_ref), ("dx", dx, dx_ref), ("dkernel", dk, g_ref["kernel"])):
        atol = 1e-5 * max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a.numpy(), e, rtol=1e-4, atol=atol, err_msg=f"{name} {impl}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("groups", [2, 3, 4, 6])
def test_training_mode_interleave_matches_the_reference(groups: int, dtype: str) -> None:
    """A permutation, so exact: ``InterleaveChannels(G)(x, training=True)`` (the mode that can
    take the faster two-group route) equals core's interleave for any ``G``, and its gradient
    is the inverse permutation. The existing property test calls the layer in inference mode."""
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, 3, 1, 12)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = InterleaveChannels(groups, dtype=dtype)(xt, training=True)
    dx = tape.gradient(y, xt, output_gradients=tf.constant(dy)).numpy()
    np.testing.assert_array_equal(y.numpy(), ref_interleave(x, groups))
    np.testing.assert_array_equal(ref_interleave(dx, groups), dy)
