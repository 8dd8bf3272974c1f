"""Core ops: forwards against independent oracles, float64 finite-difference gradients of every
op (dx and every grads entry), bad input, and NaN/Inf propagation."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from helpers import (
    assert_close,
    batchnorm_ref,
    check_op_grads,
    conv_cases,
    fmt,
    naive_conv2d,
    random_kpointwise_params,
    seeds,
)
from hypothesis import given

from gpconv.core import (
    Add,
    BatchNorm,
    ChannelScale,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    GlobalAveragePool,
    GroupedPointwise,
    Interleave,
    KPointwise,
    KPointwiseSpec,
    Sigmoid,
    SoftmaxCrossEntropy,
    Swish,
)
from gpconv.core.ops import output_size, pad_amounts


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --- padding (TF correct_pad), against hand-derived amounts ----------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [
        (32, 3, 2, "correct", (0, 1)),  # even: one less on top/left
        (32, 5, 2, "correct", (1, 2)),
        (224, 3, 2, "correct", (0, 1)),
        (31, 3, 2, "correct", (1, 1)),  # odd: symmetric
        (31, 5, 2, "correct", (2, 2)),
        (7, 5, 2, "correct", (2, 2)),
        (32, 3, 1, "correct", (0, 1)),  # skip_stride stem: stride 1 keeps correct_pad
        (32, 3, 1, "same", (1, 1)),
        (32, 5, 1, "same", (2, 2)),
        (31, 5, 1, "same", (2, 2)),
        (8, 2, 1, "same", (0, 1)),  # even kernel: TF puts the odd pixel bottom/right
        (8, 4, 1, "same", (1, 2)),
        (32, 3, 2, "valid", (0, 0)),
        # even kernels: correct_pad takes k // 2 (not (k - 1) // 2) before the parity shift
        (8, 2, 2, "correct", (0, 1)),
        (7, 2, 2, "correct", (1, 1)),
        (8, 4, 2, "correct", (1, 2)),
        (9, 4, 2, "correct", (2, 2)),
        (6, 6, 2, "correct", (2, 3)),
    ],
)
def test_pad_amounts_hand_derived(size, kernel, stride, padding, expected):
    got = pad_amounts(size, kernel, stride, padding)
    assert got == expected, f"pad_amounts returned {got}, but should be {expected} " + fmt(
        dict(size=size, kernel=kernel, stride=stride, padding=padding)
    )


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [
        (224, 3, 2, "correct", 112),
        (32, 3, 1, "correct", 31),
        (31, 3, 2, "correct", 16),
        (16, 5, 2, "correct", 8),
        (16, 5, 1, "same", 16),
        (15, 3, 2, "correct", 8),
        (7, 3, 1, "valid", 5),
    ],
)
def test_output_size(size, kernel, stride, padding, expected):
    got = output_size(size, kernel, stride, padding)
    assert got == expected, f"output_size returned {got}, but should be {expected} " + fmt(
        dict(size=size, kernel=kernel, stride=stride, padding=padding)
    )


@pytest.mark.parametrize(
    ("args", "exc", "fragment"),
    [
        # Each used to return a length (2.5 -> a float, a wider kernel -> 0 or less) or divide
        # by zero.
        ((2.5, 3, 1, "same"), TypeError, "size to be an int, received float 2.5"),
        ((-5, 3, 1, "valid"), ValueError, "size >= 0, received size=-5"),
        ((8, 0, 1, "same"), ValueError, "kernel >= 1, received kernel=0"),
        ((8, "3", 1, "valid"), TypeError, "kernel to be an int, received str '3'"),
        ((8, 3, 0, "valid"), ValueError, "stride >= 1, received stride=0"),
        ((8, 3, 1.5, "valid"), TypeError, "stride to be an int, received float 1.5"),
        (
            (2, 3, 1, "valid"),
            ValueError,
            "fit a 3-wide kernel once padded (padding='valid'), received size=2, padded to 2",
        ),  # fmt: skip
        ((0, 3, 1, "same"), ValueError, "received size=0, padded to 2"),
    ],
)
def test_output_size_refuses_what_has_no_output_length(args, exc, fragment):
    with pytest.raises(exc) as info:
        output_size(*args)
    assert fragment in str(info.value), f"output_size{args} raised {info.value!r}"


@pytest.mark.parametrize(
    ("args", "exc", "fragment"),
    [
        ((8, 0, 1, "same"), ValueError, "kernel >= 1, received kernel=0"),  # was (-1, 0)
        ((8, 3.0, 1, "same"), TypeError, "kernel to be an int, received float 3.0"),
        ((8, 3, 0, "valid"), ValueError, "stride >= 1, received stride=0"),
        ((8, 3, True, "correct"), TypeError, "stride to be an int, received bool True"),
    ],
)
def test_pad_amounts_refuses_a_bad_kernel_or_stride(args, exc, fragment):
    with pytest.raises(exc) as info:
        pad_amounts(*args)
    assert fragment in str(info.value), f"pad_amounts{args} raised {info.value!r}"


def test_pad_amounts_rejects_same_with_stride_2_and_unknown_padding():
    with pytest.raises(ValueError, match=r"stride=1 with padding='same'.*received stride=2"):
        pad_amounts(32, 3, 2, "same")
    with pytest.raises(ValueError, match=r"padding in .*received padding='full'"):
        pad_amounts(32, 3, 1, "full")
    # Keras's correct_pad would pad -1 pixels here (and the conv then failed inside NumPy).
    with pytest.raises(ValueError, match=r"padding='correct', received kernel=1, size=8"):
        pad_amounts(8, 1, 2, "correct")
    assert pad_amounts(9, 1, 2, "correct") == (0, 0)


# --- convolutions: forward oracle and gradients -----------------------------------------------


@given(case=conv_cases(), seed=seeds)
def test_conv2d_forward_matches_naive_loop(case, seed):
    x = normal(*case["x_shape"], seed=seed)
    kernel = normal(case["k"], case["k"], x.shape[-1], case["cout"], seed=seed + 1)
    y, _ = Conv2D.forward(x, kernel, case["stride"], case["padding"])
    pads = tuple(pad_amounts(s, case["k"], case["stride"], case["padding"]) for s in x.shape[1:3])
    assert_close("Conv2D.forward", "y", y, naive_conv2d(x, kernel, case["stride"], pads), case)


@given(case=conv_cases(depthwise=True), seed=seeds)
def test_depthwise_forward_matches_naive_loop(case, seed):
    x = normal(*case["x_shape"], seed=seed)
    kernel = normal(case["k"], case["k"], x.shape[-1], 1, seed=seed + 1)
    y, _ = DepthwiseConv2D.forward(x, kernel, case["stride"], case["padding"])
    pads = tuple(pad_amounts(s, case["k"], case["stride"], case["padding"]) for s in x.shape[1:3])
    assert_close(
        "DepthwiseConv2D.forward",
        "y",
        y,
        naive_conv2d(x, kernel, case["stride"], pads, depthwise=True),
        case,
    )


CONV_CONFIGS = [
    (s, p) for s, p in [(1, "same"), (1, "correct"), (1, "valid"), (2, "correct"), (2, "valid")]
]


@pytest.mark.parametrize(("stride", "padding"), CONV_CONFIGS)
@pytest.mark.parametrize("x_shape", [(2, 5, 6, 3), (1, 6, 7, 2)], ids=["odd-even", "even-odd"])
def test_conv2d_gradients(stride, padding, x_shape):
    config = dict(stride=stride, padding=padding, k=3, **{"x.shape": x_shape})
    check_op_grads(
        "Conv2D.backward",
        lambda x, kernel: Conv2D.forward(x, kernel, stride, padding),
        Conv2D.backward,
        {"x": normal(*x_shape), "kernel": normal(3, 3, x_shape[-1], 4, seed=1)},
        config,
    )


@given(case=conv_cases(), seed=seeds)
def test_conv2d_gradients_drawn(case, seed):
    x_shape, k = case["x_shape"], case["k"]
    check_op_grads(
        "Conv2D.backward",
        lambda x, kernel: Conv2D.forward(x, kernel, case["stride"], case["padding"]),
        Conv2D.backward,
        {
            "x": normal(*x_shape, seed=seed),
            "kernel": normal(k, k, x_shape[-1], case["cout"], seed=seed + 1),
        },
        case,
        seed=seed,
    )


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize(
    ("stride", "padding"), [(1, "same"), (2, "correct"), (1, "correct"), (2, "valid")]
)
@pytest.mark.parametrize("hw", [(6, 7), (7, 6)])
def test_depthwise_gradients(k, stride, padding, hw):
    x_shape = (2, *hw, 3)
    config = dict(stride=stride, padding=padding, k=k, **{"x.shape": x_shape})
    check_op_grads(
        "DepthwiseConv2D.backward",
        lambda x, kernel: DepthwiseConv2D.forward(x, kernel, stride, padding),
        DepthwiseConv2D.backward,
        {"x": normal(*x_shape), "kernel": normal(k, k, 3, 1, seed=1)},
        config,
    )


@pytest.mark.parametrize("op", [Conv2D, DepthwiseConv2D], ids=["Conv2D", "DepthwiseConv2D"])
def test_convolutions_default_to_stride_1_same_padding(op):
    """DESIGN.md §1: stride-1 convs use "same": the output keeps the input's size."""
    x = normal(1, 6, 5, 2)
    kernel = normal(3, 3, 2, 3 if op is Conv2D else 1, seed=1)
    y, _ = op.forward(x, kernel)
    expected, _ = op.forward(x, kernel, 1, "same")
    assert y.shape[1:3] == (6, 5) and np.array_equal(y, expected), (
        f"{op.__name__}.forward(x, kernel) differs from stride=1, padding='same' "
        f"[x.shape={x.shape}, y.shape={y.shape}]"
    )


# --- batch norm -------------------------------------------------------------------------------


def _bn_params(c: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "gamma": 1 + 0.3 * rng.standard_normal(c),
        "beta": 0.3 * rng.standard_normal(c),
        "moving_mean": 0.5 * rng.standard_normal(c),
        "moving_variance": rng.uniform(0.5, 2.0, c),
    }


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("x_shape", [(2, 3, 3, 4), (6, 5)])
def test_batchnorm_forward_matches_formula(training, x_shape):
    x = 2.0 + 3.0 * normal(*x_shape)
    p = _bn_params(x_shape[-1])
    y, cache = BatchNorm.forward(x, **p, training=training)
    axes = tuple(range(x.ndim - 1))
    mean, var = (
        (x.mean(axis=axes), x.var(axis=axes))
        if training
        else (p["moving_mean"], p["moving_variance"])
    )
    config = dict(training=training, **{"x.shape": x_shape})
    assert_close(
        "BatchNorm.forward",
        "y",
        y,
        batchnorm_ref(x, p["gamma"], p["beta"], mean, var, eps=1e-3),
        config,
    )


def test_batchnorm_moving_stats_follow_keras():
    """Keras: r <- 0.99 r + 0.01 batch, with the *biased* batch variance (PyTorch would use the
    unbiased one and momentum 0.1)."""
    x = 1.5 + 2.0 * normal(4, 3, 3, 5)
    p = _bn_params(5)
    _, cache = BatchNorm.forward(x, **p, training=True)
    mean, var = BatchNorm.updated_moving_stats(p["moving_mean"], p["moving_variance"], cache)
    config = {"x.shape": x.shape, "training": True}
    assert_close(
        "BatchNorm.updated_moving_stats",
        "moving_mean",
        mean,
        0.99 * p["moving_mean"] + 0.01 * x.mean(axis=(0, 1, 2)),
        config,
    )
    assert_close(
        "BatchNorm.updated_moving_stats",
        "moving_variance",
        var,
        0.99 * p["moving_variance"] + 0.01 * x.var(axis=(0, 1, 2), ddof=0),
        config,
    )
    _, cache = BatchNorm.forward(x, **p, training=False)
    same = BatchNorm.updated_moving_stats(p["moving_mean"], p["moving_variance"], cache)
    assert same[0] is p["moving_mean"] and same[1] is p["moving_variance"], (
        "BatchNorm.updated_moving_stats changed the statistics after an inference forward "
        "[training=False]"
    )


@pytest.mark.parametrize("shape", [(0, 3, 3, 5), (2, 0, 3, 5), (3, 2, 0, 5), (0, 5)])
def test_batchnorm_on_an_empty_training_batch_keeps_the_moving_stats(shape):
    """No values per channel (no samples, or samples without pixels), no statistics: the mean
    of nothing used to turn both into NaN, with a warning."""
    p = _bn_params(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = BatchNorm.forward(np.zeros(shape), **p, training=True)
        mean, var = BatchNorm.updated_moving_stats(p["moving_mean"], p["moving_variance"], cache)
    assert y.shape == shape
    np.testing.assert_array_equal(mean, p["moving_mean"])
    np.testing.assert_array_equal(var, p["moving_variance"])
    dx, grads = BatchNorm.backward(cache, np.zeros(shape))
    assert dx.shape == shape
    np.testing.assert_array_equal(grads["gamma"], np.zeros(5))
    np.testing.assert_array_equal(grads["beta"], np.zeros(5))


def test_batchnorm_statistics_of_float32_activations_far_from_zero():
    """float32 activations around 1000 (unnormalised 0..255 pixels through the stem reach that):
    the variance must be the mean of squared deviations. E[x^2] - E[x]^2 cancels catastrophically
    there (error ~0.2 here; around 1e4 it goes negative and BN returns NaN)."""
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.standard_normal((8, 4, 4, 3))).astype(np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    y, cache = BatchNorm.forward(x, ones, zeros, zeros, ones, training=True)
    x64 = x.astype(np.float64)
    config = {"x": "1000 + N(0, 1), float32", "training": True}
    # Measured: the two-pass float32 result is within 2e-4 of the float64 one.
    expected = (x64 - x64.mean(axis=(0, 1, 2))) / np.sqrt(x64.var(axis=(0, 1, 2)) + 1e-3)
    assert_close("BatchNorm.forward", "y", y, expected, config, tol=2e-3)
    _, var = BatchNorm.updated_moving_stats(zeros, ones, cache)
    assert_close(
        "BatchNorm.updated_moving_stats",
        "moving_variance",
        var,
        0.99 + 0.01 * x64.var(axis=(0, 1, 2)),
        config,
        tol=1e-5,
    )


def test_batchnorm_defaults_to_inference():
    """Like a Keras layer called without ``training``: the moving statistics, not the batch's."""
    x = 2.0 + normal(2, 3, 3, 4)
    p = _bn_params(4)
    y, _ = BatchNorm.forward(x, **p)
    expected = batchnorm_ref(x, p["gamma"], p["beta"], p["moving_mean"], p["moving_variance"])
    assert_close("BatchNorm.forward", "y", y, expected, {"training": "default"})


def test_batchnorm_updated_moving_stats_names_bad_arguments():
    """These used to fail as "'NoneType' object is not subscriptable", a KeyError, "'list'
    object has no attribute 'shape'", or return integer statistics as floats silently."""
    p = _bn_params(3)
    _, cache = BatchNorm.forward(normal(4, 2, 2, 3), **p, training=True)
    mean, var = p["moving_mean"], p["moving_variance"]
    cases = [
        ((mean, var, None), TypeError, "cache to be the cache BatchNorm.forward returned"),
        ((mean, var, {}), TypeError, "received dict with keys []"),
        ((mean.tolist(), var, cache), TypeError, "moving_mean to be an array, received list"),
        ((mean.astype(int), var, cache), TypeError, "moving_mean.dtype=int64"),
    ]
    for args, exc, fragment in cases:
        with pytest.raises(exc) as info:
            BatchNorm.updated_moving_stats(*args)
        assert fragment in str(info.value), f"{fragment!r} not in {info.value!r}"


@pytest.mark.parametrize("momentum", [np.float64(0.9), np.float32(0.9)], ids=["f64", "f32"])
def test_batchnorm_moving_stats_keep_their_dtype_for_a_numpy_momentum(momentum):
    """A NumPy scalar momentum (read from a config array, say) is not "weak" under NEP 50:
    ``np.float64(0.9) * float32`` is float64, which ``sgd_step`` then refuses to write back."""
    x = normal(4, 2, 2, 3).astype(np.float32)
    p = {k: v.astype(np.float32) for k, v in _bn_params(3).items()}
    _, cache = BatchNorm.forward(x, **p, training=True)
    mean, var = BatchNorm.updated_moving_stats(
        p["moving_mean"], p["moving_variance"], cache, momentum=momentum
    )
    assert mean.dtype == var.dtype == np.float32, (
        f"BatchNorm.updated_moving_stats(momentum={momentum!r}) gave dtypes "
        f"{mean.dtype}, {var.dtype}, but should keep float32"
    )
    x64 = x.astype(np.float64)
    assert_close(
        "BatchNorm.updated_moving_stats",
        "moving_variance",
        var,
        0.9 * p["moving_variance"] + 0.1 * x64.var(axis=(0, 1, 2)),
        {"momentum": momentum},
        tol=1e-6,
    )


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("x_shape", [(2, 3, 3, 4), (5, 3)])
def test_batchnorm_gradients(training, x_shape):
    p = _bn_params(x_shape[-1])
    check_op_grads(
        "BatchNorm.backward",
        lambda x, gamma, beta: BatchNorm.forward(
            x, gamma, beta, p["moving_mean"], p["moving_variance"], training=training
        ),
        BatchNorm.backward,
        {"x": 1.0 + 2.0 * normal(*x_shape), "gamma": p["gamma"], "beta": p["beta"]},
        dict(training=training, **{"x.shape": x_shape}),
    )


# --- activations ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [Sigmoid, Swish], ids=["Sigmoid", "Swish"])
def test_activation_forward_and_extremes(op):
    x = np.concatenate([normal(50) * 5, [-1000.0, -40.0, 0.0, 40.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings from exp at +-1000
        y, _ = op.forward(x)
    s = 1.0 / (1.0 + np.exp(-np.clip(x, -700, 700)))
    assert_close(
        f"{op.__name__}.forward",
        "y",
        y,
        s if op is Sigmoid else x * s,
        {"x": "normal*5 and +-1000"},
    )


@pytest.mark.parametrize("op", [Sigmoid, Swish], ids=["Sigmoid", "Swish"])
def test_activation_gradients(op):
    check_op_grads(
        f"{op.__name__}.backward",
        op.forward,
        op.backward,
        {"x": 3.0 * normal(2, 3, 3, 4)},
        {"x.shape": (2, 3, 3, 4)},
    )


# --- pooling, dense, element-wise, loss -------------------------------------------------------


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pool(keepdims):
    x = normal(2, 3, 5, 4)
    y, _ = GlobalAveragePool.forward(x, keepdims=keepdims)
    config = {"keepdims": keepdims, "x.shape": x.shape}
    assert_close(
        "GlobalAveragePool.forward", "y", y, x.mean(axis=(1, 2), keepdims=keepdims), config
    )
    check_op_grads(
        "GlobalAveragePool.backward",
        lambda x: GlobalAveragePool.forward(x, keepdims=keepdims),
        GlobalAveragePool.backward,
        {"x": x},
        config,
    )


def test_global_average_pool_takes_numpy_bools_for_keepdims():
    """``keepdims`` is checked as a flag that may be a NumPy bool (``require_bool``); NumPy's
    ``mean`` then refused ``np.True_`` with "cannot be interpreted as an integer"."""
    x = normal(2, 3, 5, 4)
    for flag in (np.True_, np.False_):
        y, _ = GlobalAveragePool.forward(x, keepdims=flag)
        expected, _ = GlobalAveragePool.forward(x, keepdims=bool(flag))
        assert y.shape == expected.shape and np.array_equal(y, expected), (
            f"GlobalAveragePool.forward(keepdims={flag!r}) differs from keepdims={bool(flag)}"
        )


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_average_pool_backward_is_a_writable_array_of_its_own(keepdims):
    # Users accumulate gradients in place (dx += ...); a broadcast view is read-only and would
    # alias every position to one value.
    x = normal(2, 3, 5, 4)
    y, cache = GlobalAveragePool.forward(x, keepdims=keepdims)
    dy = normal(*y.shape, seed=1)
    dx, _ = GlobalAveragePool.backward(cache, dy)
    assert dx.flags.writeable, f"GlobalAveragePool.backward dx is read-only [keepdims={keepdims}]"
    assert not np.shares_memory(dx, dy), "GlobalAveragePool.backward dx is a view of dy"
    expected = np.broadcast_to(dy.reshape(2, 1, 1, 4) / 15, x.shape).copy()
    dx[0, 0, 0, 0] += 1.0
    expected[0, 0, 0, 0] += 1.0
    assert np.array_equal(dx, expected), "an in-place update of dx changed more than one entry"


@pytest.mark.parametrize("bias", [True, False])
def test_dense(bias):
    x, kernel, b = normal(3, 5), normal(5, 4, seed=1), normal(4, seed=2)
    inputs = {"x": x, "kernel": kernel, **({"bias": b} if bias else {})}
    y, _ = Dense.forward(**inputs)
    assert_close("Dense.forward", "y", y, x @ kernel + (b if bias else 0.0), {"bias": bias})
    check_op_grads("Dense.backward", Dense.forward, Dense.backward, inputs, {"bias": bias})


@pytest.mark.parametrize(
    "mask_shape", [(2, 3, 3, 4), (2, 1, 1, 1)], ids=["per-element", "drop-connect"]
)
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_with_explicit_mask(mask_shape, rate):
    x = normal(2, 3, 3, 4)
    mask = np.random.default_rng(7).random(mask_shape) >= rate
    mask.reshape(-1)[:2] = (True, False)  # at least one kept and one dropped entry
    config = {"rate": rate, "mask.shape": mask_shape}
    y, _ = Dropout.forward(x, mask, rate)
    assert_close("Dropout.forward", "y", y, x * mask / (1 - rate), config)
    check_op_grads(
        "Dropout.backward",
        lambda x: Dropout.forward(x, mask, rate),
        Dropout.backward,
        {"x": x},
        config,
    )


def test_dropout_identity_without_mask_or_rate():
    x = normal(2, 4)
    for mask, rate in ((None, 0.3), (np.zeros((2, 4), dtype=bool), 0.0)):
        # the docstring's promise: x and dy are returned as they are, not copied
        y, cache = Dropout.forward(x, mask, rate)
        assert y is x, f"Dropout.forward did not return x itself [mask={mask}, rate={rate}]"
        dy = normal(2, 4, seed=1)
        dx, grads = Dropout.backward(cache, dy)
        assert dx is dy and grads == {}, (
            f"Dropout.backward did not return dy itself [mask={mask}, rate={rate}]"
        )


def test_add():
    a, b = normal(2, 3, 3, 4), normal(2, 3, 3, 4, seed=1)
    y, cache = Add.forward(a, b)
    assert_close("Add.forward", "y", y, a + b, {"shape": a.shape})
    dy = normal(2, 3, 3, 4, seed=2)
    (da, db), grads = Add.backward(cache, dy)
    assert da is dy and db is dy and grads == {}, "Add.backward should hand back dy itself, twice"
    check_op_grads(
        "Add.backward",
        Add.forward,
        Add.backward,
        {"a": a, "b": b},
        {"shape": a.shape},
        dx_names=("a", "b"),
    )


def test_channel_scale():
    x, s = normal(2, 3, 4, 5), normal(2, 1, 1, 5, seed=1)
    y, _ = ChannelScale.forward(x, s)
    expected = np.einsum("nhwc,nc->nhwc", x, s[:, 0, 0, :])
    assert_close("ChannelScale.forward", "y", y, expected, {"x.shape": x.shape})
    check_op_grads(
        "ChannelScale.backward",
        ChannelScale.forward,
        ChannelScale.backward,
        {"x": x, "s": s},
        {"x.shape": x.shape, "s.shape": s.shape},
        dx_names=("x", "s"),
    )


def test_softmax_cross_entropy():
    logits, labels = 3.0 * normal(4, 5), np.array([0, 4, 2, 2])
    loss, _ = SoftmaxCrossEntropy.forward(logits, labels)
    expected = np.mean([np.log(np.sum(np.exp(row))) - row[k] for row, k in zip(logits, labels)])
    assert_close("SoftmaxCrossEntropy.forward", "loss", loss, expected, {"labels": labels.tolist()})
    check_op_grads(
        "SoftmaxCrossEntropy.backward",
        lambda logits: SoftmaxCrossEntropy.forward(logits, labels),
        SoftmaxCrossEntropy.backward,
        {"logits": logits},
        {"labels": labels.tolist()},
        dx_names=("logits",),
    )


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, _ = SoftmaxCrossEntropy.forward(logits, np.array([0, 2]))
    assert_close("SoftmaxCrossEntropy.forward", "loss", loss, np.log(2.0) / 2, {"logits": "+-1000"})


def test_softmax_cross_entropy_shifts_each_row_by_its_own_max():
    """Two samples whose logits lie 2000 apart: a log-sum-exp shifted by the batch's max (not
    each row's) underflows the low row to log(0) = -inf. Row by row both are [0, -1] shifted:
    -log softmax([0, -1]) = [log1p(e^-1), 1 + log1p(e^-1)]."""
    logits = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    labels = np.array([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, cache = SoftmaxCrossEntropy.forward(logits, labels)
    dlogits, _ = SoftmaxCrossEntropy.backward(cache)
    nll = np.log1p(np.exp(-1.0))
    p0 = 1.0 / (1.0 + np.exp(-1.0))  # softmax([0, -1])[0]
    config = {"logits": logits.tolist(), "labels": labels.tolist()}
    assert_close("SoftmaxCrossEntropy.forward", "loss", loss, (nll + 1.0 + nll) / 2, config)
    expected = np.array([[p0 - 1.0, 1.0 - p0], [p0, -p0]]) / 2
    assert_close("SoftmaxCrossEntropy.backward", "dlogits", dlogits, expected, config)


def test_softmax_cross_entropy_of_a_class_with_probability_zero():
    # softmax([0, -inf]) = [1, 0] exactly, so label 0 costs -log 1 = 0 and the gradient is
    # [1, 0] - [1, 0] = 0 (torch.nn.functional.cross_entropy gives 0 too). The same -inf
    # log-probability arises from finite float16 logits whose spread overflows (1.2e5 > 65504).
    for logits in (
        np.array([[0.0, -np.inf]]),
        np.array([[0.0, -np.inf]], np.float32),
        np.array([[6e4, 0.0, -6e4]], np.float16),
    ):
        with np.errstate(over="ignore"):
            loss, cache = SoftmaxCrossEntropy.forward(logits, np.array([0]))
        dlogits, _ = SoftmaxCrossEntropy.backward(cache)
        assert loss == 0.0 and loss.dtype == logits.dtype, (
            f"SoftmaxCrossEntropy.forward(logits={logits.tolist()}, labels=[0]) = {loss!r}, "
            f"but should be 0 of dtype {logits.dtype}"
        )
        assert np.array_equal(dlogits, np.zeros_like(logits)), (
            f"SoftmaxCrossEntropy.backward dlogits={dlogits.tolist()}, but should be zeros "
            f"[logits={logits.tolist()}, labels=[0]]"
        )


@pytest.mark.parametrize(
    "dloss", [np.float64(2.0), np.int64(2), np.array(2.0), np.array(2.0, np.float16), 2]
)
def test_softmax_cross_entropy_backward_keeps_the_logits_dtype(dloss):
    # NumPy scalars and 0-d arrays are not "weak" under NEP 50: multiplying float32 gradients by
    # np.float64(2) used to make them float64 and so every gradient of the network behind it.
    logits = normal(3, 4).astype(np.float32)
    labels = np.array([0, 3, 1])
    _, cache = SoftmaxCrossEntropy.forward(logits, labels)
    dlogits, _ = SoftmaxCrossEntropy.backward(cache, dloss)
    z = logits.astype(np.float64)
    softmax = np.exp(z - z.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    expected = 2.0 * (softmax - np.eye(4)[labels]) / 3
    assert dlogits.dtype == np.float32, (
        f"SoftmaxCrossEntropy.backward(dloss={dloss!r}).dtype={dlogits.dtype}, "
        "but should be float32 (the logits' dtype)"
    )
    assert_close(
        "SoftmaxCrossEntropy.backward", "dlogits", dlogits, expected, {"dloss": dloss}, tol=1e-6
    )


def test_ops_preserve_float32():
    x = normal(2, 5, 5, 3).astype(np.float32)
    k = normal(3, 3, 3, 4).astype(np.float32)
    y, cache = Conv2D.forward(x, k, 2, "correct")
    dx, grads = Conv2D.backward(cache, y)
    for what, a in (("y", y), ("dx", dx), ("dkernel", grads["kernel"])):
        assert a.dtype == np.float32, (
            f"Conv2D {what}.dtype={a.dtype}, but should be float32 [stride=2]"
        )
    ones = np.ones(4, dtype=np.float32)
    y, cache = BatchNorm.forward(y, ones, ones * 0, ones * 0, ones, training=True)
    assert y.dtype == np.float32, (
        f"BatchNorm.forward y.dtype={y.dtype}, but should be float32 [training=True]"
    )
    y, _ = Swish.forward(y)
    assert y.dtype == np.float32, f"Swish.forward y.dtype={y.dtype}, but should be float32"


def _forwards_in(dtype):
    """(op name, backward, cache, y) for one forward of each op, inputs and parameters of
    ``dtype``: ops whose backward allocates its gradients (the convolutions) and ops whose
    arithmetic yields them (Dense, BatchNorm, Swish)."""
    x = normal(2, 5, 6, 3).astype(dtype)
    ones = np.ones(3, dtype)
    runs = [
        ("Conv2D", Conv2D, Conv2D.forward(x, K33.astype(dtype), 2, "correct")),
        ("DepthwiseConv2D", DepthwiseConv2D, DepthwiseConv2D.forward(x, x[0, :3, :3, :, None])),
        ("Dense", Dense, Dense.forward(x[:, 0, 0, :], normal(3, 3).astype(dtype), ones)),
        ("BatchNorm", BatchNorm, BatchNorm.forward(x, ones, ones, ones, ones, True)),
        ("Swish", Swish, Swish.forward(x)),
        (
            "GroupedPointwise",
            GroupedPointwise,
            GroupedPointwise.forward(
                x, normal(1, 1, 1, 6).astype(dtype), np.zeros(6, dtype), groups=3
            ),
        ),
    ]
    return [(name, op.backward, cache, y) for name, op, (y, cache) in runs]


def test_backward_promotes_a_float64_dy_of_a_float32_forward():
    """A float64 ``dy`` makes float64 gradients in every op, the array API's promotion of the
    formulas (``dy @ kernel^T``, ``x^T @ dy``, ``sum(dy)``...): the convolutions returned
    float32 (their buffers were ``zeros_like`` the forward's arrays, and ``+=`` cast the float64
    taps down) while Dense, BatchNorm and the rest returned float64."""
    for name, backward, cache, y in _forwards_in(np.float32):
        dx, grads = backward(cache, normal(*y.shape, seed=1))
        got = {"dx": dx.dtype, **{k: g.dtype for k, g in grads.items()}}
        assert got == {k: np.float64 for k in got}, (
            f"{name}.backward dtypes {got}, but should all be float64 "
            "[float32 forward, dy.dtype=float64]"
        )


# --- bad input: clear ValueError/TypeError naming the argument and the values ----------------

X4 = normal(2, 5, 6, 3)
K33 = normal(3, 3, 3, 4)
ONES3 = np.ones(3)
BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")
BAD_INPUT = [
    (
        "Conv2D.forward(x rank 3)",
        lambda: Conv2D.forward(X4[0], K33),
        ValueError,
        ["x of rank 4", "x.shape=(5, 6, 3)"],
    ),
    (
        "Conv2D.forward(kernel Cin != x C)",
        lambda: Conv2D.forward(X4, normal(3, 3, 2, 4)),
        ValueError,
        ["kernel.shape[2] == 3", "kernel.shape=(3, 3, 2, 4)"],
    ),
    (
        "Conv2D.forward(int x)",
        lambda: Conv2D.forward(X4.astype(np.int64), K33),
        TypeError,
        ["x to have a real floating dtype", "x.dtype=int64"],
    ),
    (
        "Conv2D.forward(bool kernel)",
        lambda: Conv2D.forward(X4, K33 > 0),
        TypeError,
        ["kernel to have a real floating dtype", "kernel.dtype=bool"],
    ),
    (
        "Conv2D.forward(stride=0)",
        lambda: Conv2D.forward(X4, K33, 0),
        ValueError,
        ["stride >= 1", "stride=0"],
    ),
    (
        "Conv2D.forward(non-square)",
        lambda: Conv2D.forward(X4, normal(3, 1, 3, 4)),
        ValueError,
        ["square kernel", "kernel.shape=(3, 1, 3, 4)"],
    ),
    (
        "Conv2D.forward(too small)",
        lambda: Conv2D.forward(normal(1, 2, 2, 3), K33, 1, "valid"),
        ValueError,
        ["x.shape=(1, 2, 2, 3)", "too small"],
    ),
    (
        "Conv2D.forward(list x)",
        lambda: Conv2D.forward(X4.tolist(), K33),
        TypeError,
        ["x to be an array", "list"],
    ),
    (
        "DepthwiseConv2D.forward(multiplier 2)",
        lambda: DepthwiseConv2D.forward(X4, normal(3, 3, 3, 2)),
        ValueError,
        ["kernel.shape[3] == 1", "depth multiplier"],
    ),
    (
        "DepthwiseConv2D.forward(kernel C != x C)",
        lambda: DepthwiseConv2D.forward(X4, normal(3, 3, 4, 1)),
        ValueError,
        ["kernel.shape[2] == 3", "kernel.shape=(3, 3, 4, 1)"],
    ),
    (
        "BatchNorm.forward(gamma size)",
        lambda: BatchNorm.forward(X4, np.ones(4), ONES3, ONES3, ONES3),
        ValueError,
        ["gamma.shape[0] == 3", "gamma.shape=(4,)"],
    ),
    (
        "BatchNorm.forward(gamma rank 2)",
        lambda: BatchNorm.forward(X4, np.ones((1, 3)), ONES3, ONES3, ONES3),
        ValueError,
        ["gamma of shape (3,)", "gamma.shape=(1, 3)"],
    ),
    (
        "BatchNorm.forward(int x)",
        lambda: BatchNorm.forward(X4.astype(np.int32), ONES3, ONES3, ONES3, ONES3),
        TypeError,
        ["x.dtype=int32"],
    ),
    (
        "BatchNorm.forward(int gamma)",
        lambda: BatchNorm.forward(X4, np.ones(3, int), ONES3, ONES3, ONES3),
        TypeError,
        ["gamma.dtype=int64"],
    ),
    ("Swish.forward(bool x)", lambda: Swish.forward(X4 > 0), TypeError, ["x.dtype=bool"]),
    ("Sigmoid.forward(int x)", lambda: Sigmoid.forward(np.arange(3)), TypeError, ["x.dtype=int64"]),
    (
        "GlobalAveragePool.forward(x rank 2)",
        lambda: GlobalAveragePool.forward(X4[0, 0]),
        ValueError,
        ["x of rank 4", "x.shape=(6, 3)"],
    ),
    (
        "Dense.forward(x rank 4)",
        lambda: Dense.forward(X4, normal(3, 2)),
        ValueError,
        ["x of rank 2", "x.shape=(2, 5, 6, 3)"],
    ),
    (
        "Dense.forward(kernel rows)",
        lambda: Dense.forward(normal(2, 3), normal(4, 2)),
        ValueError,
        ["kernel.shape[0] == 3", "kernel.shape=(4, 2)"],
    ),
    (
        "Dense.forward(bias size)",
        lambda: Dense.forward(normal(2, 3), normal(3, 2), np.ones(3)),
        ValueError,
        ["bias.shape[0] == 2", "bias.shape=(3,)"],
    ),
    (
        "Dense.forward(int bias)",
        lambda: Dense.forward(normal(2, 3), normal(3, 2), np.ones(2, int)),
        TypeError,
        ["bias.dtype=int64"],
    ),
    (
        "Dropout.forward(rate=1)",
        lambda: Dropout.forward(X4, np.ones_like(X4), 1.0),
        ValueError,
        ["0 <= rate < 1", "rate=1.0"],
    ),
    (
        "Dropout.forward(mask shape)",
        lambda: Dropout.forward(X4, np.ones((2, 5, 1)), 0.5),
        ValueError,
        ["mask broadcastable to x.shape=(2, 5, 6, 3)", "mask.shape=(2, 5, 1)"],
    ),
    (
        # NumPy would broadcast a (1, 1, 3) mask, so the message must say why it is refused
        "Dropout.forward(mask of lower rank)",
        lambda: Dropout.forward(X4, np.ones((1, 1, 3)), 0.5),
        ValueError,
        ["of the same rank, each axis 1 or x's size", "mask.shape=(1, 1, 3)"],
    ),
    (
        "Dropout.forward(int x)",
        lambda: Dropout.forward(X4.astype(int), np.ones((2, 1, 1, 1)), 0.5),
        TypeError,
        ["x.dtype=int64"],
    ),
    (
        "Dropout.forward(rate='0.5')",
        lambda: Dropout.forward(X4, None, "0.5"),
        TypeError,
        ["rate to be a real number", "str '0.5'"],
    ),
    (
        "Dropout.forward(rate=True)",
        lambda: Dropout.forward(X4, None, True),
        TypeError,
        ["rate to be a real number", "bool True"],
    ),
    (
        "Dropout.forward(rate=nan)",
        lambda: Dropout.forward(X4, None, float("nan")),
        ValueError,
        ["0 <= rate < 1", "rate=nan"],
    ),
    (
        "Dropout.forward(mask of 2s)",
        lambda: Dropout.forward(X4, np.full((2, 1, 1, 1), 2.0), 0.5),
        ValueError,
        ["mask of 0s and 1s", "2.0"],
    ),
    (
        "Dropout.forward(mask of 0.5s)",
        lambda: Dropout.forward(X4, np.full(X4.shape, 0.5), 0.5),
        ValueError,
        ["mask of 0s and 1s", "0.5"],
    ),
    (
        "BatchNorm.forward(0-d x)",
        lambda: BatchNorm.forward(np.float32(1), ONES3, ONES3, ONES3, ONES3),
        ValueError,
        ["x.ndim >= 2", "x.shape=()"],
    ),
    (
        "BatchNorm.forward(x rank 1)",
        lambda: BatchNorm.forward(ONES3, ONES3, ONES3, ONES3, ONES3, True),
        ValueError,
        ["x.ndim >= 2", "x.shape=(3,)"],
    ),
    (
        "Add.forward(shapes)",
        lambda: Add.forward(X4, X4[:1]),
        ValueError,
        ["b.shape=(2, 5, 6, 3)", "received b.shape=(1, 5, 6, 3)"],
    ),
    (
        "ChannelScale.forward(s shape)",
        lambda: ChannelScale.forward(X4, normal(2, 3)),
        ValueError,
        ["s.shape=(2, 1, 1, 3)", "received s.shape=(2, 3)"],
    ),
    (
        "ChannelScale.forward(x rank 2)",
        lambda: ChannelScale.forward(X4[0, 0], normal(6, 1, 1, 3)),
        ValueError,
        ["x of rank 4", "x.shape=(6, 3)"],
    ),
    (
        "ChannelScale.forward(int s)",
        lambda: ChannelScale.forward(X4, np.ones((2, 1, 1, 3), int)),
        TypeError,
        ["s.dtype=int64"],
    ),
    (
        "SoftmaxCrossEntropy.forward(float labels)",
        lambda: SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0.0, 1.0])),
        TypeError,
        ["integer labels", "labels.dtype=float64"],
    ),
    (
        "SoftmaxCrossEntropy.forward(labels shape)",
        lambda: SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0, 1, 2])),
        ValueError,
        ["labels.shape=(2,)", "labels.shape=(3,)"],
    ),
    (
        "SoftmaxCrossEntropy.forward(label 3 of K=3)",
        lambda: SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0, 3])),
        ValueError,
        ["labels in [0, 3)", "received values in [0, 3]"],
    ),
    (
        "SoftmaxCrossEntropy.forward(int logits)",
        lambda: SoftmaxCrossEntropy.forward(np.ones((2, 3), int), np.array([0, 1])),
        TypeError,
        ["logits.dtype=int64"],
    ),
    (
        "SoftmaxCrossEntropy.forward(K=0)",
        lambda: SoftmaxCrossEntropy.forward(np.ones((2, 0)), np.array([0, 0])),
        ValueError,
        ["logits.shape[1] >= 1", "logits.shape=(2, 0)"],
    ),
    (
        "SoftmaxCrossEntropy.backward(dloss vector)",
        lambda: SoftmaxCrossEntropy.backward(
            SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0, 1]))[1], np.ones(2)
        ),
        TypeError,
        ["dloss to be a real number or 0-d floating array", "shape (2,)"],
    ),
    (
        "SoftmaxCrossEntropy.backward(dloss bool)",
        lambda: SoftmaxCrossEntropy.backward(
            SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0, 1]))[1], True
        ),
        TypeError,
        ["dloss to be a real number", "bool"],
    ),
    (
        "Add.forward(int a, b)",
        lambda: Add.forward(np.ones((2, 3), int), np.ones((2, 3), int)),
        TypeError,
        ["a to have a real floating dtype", "int64"],
    ),
    (
        "GlobalAveragePool.forward(H=W=0)",
        lambda: GlobalAveragePool.forward(np.ones((2, 0, 0, 3))),
        ValueError,
        ["H, W >= 1", "x.shape=(2, 0, 0, 3)"],
    ),
    (
        "GlobalAveragePool.forward(keepdims='no')",
        lambda: GlobalAveragePool.forward(X4, keepdims="no"),
        TypeError,
        ["keepdims to be True or False", "'no'"],
    ),
    (
        "Conv2D.forward(0x0 kernel)",
        lambda: Conv2D.forward(X4, np.ones((0, 0, 3, 4)), 1, "same"),
        ValueError,
        ["square kernel of size >= 1", "kernel.shape=(0, 0, 3, 4)"],
    ),
    (
        "DepthwiseConv2D.forward(0x0 kernel)",
        lambda: DepthwiseConv2D.forward(X4, np.ones((0, 0, 3, 1))),
        ValueError,
        ["square kernel of size >= 1", "kernel.shape=(0, 0, 3, 1)"],
    ),
    (
        "BatchNorm.forward(eps=-1)",
        lambda: BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, eps=-1.0),
        ValueError,
        ["eps >= 0", "eps=-1.0"],
    ),
    (
        "BatchNorm.forward(eps='1e-3')",
        lambda: BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, eps="1e-3"),
        TypeError,
        ["eps to be a real number", "'1e-3'"],
    ),
    (
        "BatchNorm.forward(training='False')",
        lambda: BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, training="False"),
        TypeError,
        ["training to be True or False", "str 'False'"],
    ),
    (
        "BatchNorm.updated_moving_stats(momentum=1.5)",
        lambda: BatchNorm.updated_moving_stats(
            ONES3, ONES3, BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, True)[1], 1.5
        ),
        ValueError,
        ["0 <= momentum <= 1", "momentum=1.5"],
    ),
    (
        "BatchNorm.updated_moving_stats(moving_mean of 2 channels)",
        lambda: BatchNorm.updated_moving_stats(
            ONES3[:2], ONES3, BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, True)[1]
        ),
        ValueError,
        ["moving_mean.shape=(3,)", "received moving_mean.shape=(2,)"],
    ),
    (
        "Conv2D.forward(0 output channels)",  # its backward had no rows to reshape
        lambda: Conv2D.forward(X4, np.ones((3, 3, 3, 0))),
        ValueError,
        ["Expected kernel.shape[-1] >= 1 (channels)", "kernel.shape[-1]=0"],
    ),
    (
        "DepthwiseConv2D.forward(0 channels)",
        lambda: DepthwiseConv2D.forward(X4[..., :0], np.ones((3, 3, 0, 1))),
        ValueError,
        ["Expected x.shape[-1] >= 1 (channels)", "x.shape[-1]=0"],
    ),
    (
        "BatchNorm.forward(masked x)",  # numpy.ma would skip the masked values, silently
        lambda: BatchNorm.forward(np.ma.masked_array(X4, X4 > 0), ONES3, ONES3, ONES3, ONES3, True),
        TypeError,
        ["Expected x to be a plain array", "numpy.ma.MaskedArray"],
    ),
    (
        "Conv2D.forward(kernel rank 3)",  # read as one output channel, y lost its channel axis
        lambda: Conv2D.forward(X4, np.ones((3, 3, 3))),
        ValueError,
        ["kernel of rank 4 (kh, kw, Cin, Cout)", "kernel.shape=(3, 3, 3)"],
    ),
    (
        "Conv2D.forward(kernel rank 5)",
        lambda: Conv2D.forward(X4, np.ones((3, 3, 3, 4, 1))),
        ValueError,
        ["kernel of rank 4 (kh, kw, Cin, Cout)", "kernel.shape=(3, 3, 3, 4, 1)"],
    ),
    (
        "DepthwiseConv2D.forward(kernel rank 3)",
        lambda: DepthwiseConv2D.forward(X4, np.ones((3, 3, 3))),
        ValueError,
        ["kernel of rank 4 (kh, kw, C, 1)", "kernel.shape=(3, 3, 3)"],
    ),
    (
        "Dense.forward(bias (Cout, 1))",  # would broadcast y (N, Cout) to (Cout, Cout)
        lambda: Dense.forward(normal(2, 3), normal(3, 4), np.zeros((4, 1))),
        ValueError,
        ["bias of rank 1", "bias.shape=(4, 1)"],
    ),
    (
        "Dense.forward(int kernel)",  # would promote a float32 x to float64
        lambda: Dense.forward(normal(2, 3).astype(np.float32), np.ones((3, 4), np.int64)),
        TypeError,
        ["kernel to have a real floating dtype", "int64"],
    ),
    (
        "Dense.forward(bool kernel)",
        lambda: Dense.forward(normal(2, 3), np.ones((3, 4), bool)),
        TypeError,
        ["kernel to have a real floating dtype", "bool"],
    ),
    (
        "Add.forward(int b)",
        lambda: Add.forward(X4.astype(np.float32), np.ones(X4.shape, np.int64)),
        TypeError,
        ["b to have a real floating dtype", "int64"],
    ),
    (
        "Dropout.forward(mask with more samples)",  # would broadcast y to 2 samples
        lambda: Dropout.forward(np.ones((1, 4)), np.ones((2, 4), bool), 0.5),
        ValueError,
        ["x.shape=(1, 4)", "received mask.shape=(2, 4)"],
    ),
    (
        "SoftmaxCrossEntropy.forward(label 3 of 3 classes, N=1)",  # a silent loss of 0
        lambda: SoftmaxCrossEntropy.forward(np.zeros((1, 3)), np.array([3])),
        ValueError,
        ["labels in [0, 3)", "received values in [3, 3]"],
    ),
    (
        "SoftmaxCrossEntropy.forward(label -1, N=1)",
        lambda: SoftmaxCrossEntropy.forward(np.zeros((1, 3)), np.array([-1])),
        ValueError,
        ["labels in [0, 3)", "received values in [-1, -1]"],
    ),
    (
        "SoftmaxCrossEntropy.forward(a negative label among valid ones)",
        lambda: SoftmaxCrossEntropy.forward(np.zeros((3, 4)), np.array([0, -1, 2])),
        ValueError,
        ["labels in [0, 4)", "received values in [-1, 2]"],
    ),
    (
        "SoftmaxCrossEntropy.forward(labels (N, 1))",  # an (N, N, K) one-hot, a wrong loss
        lambda: SoftmaxCrossEntropy.forward(np.zeros((3, 4)), np.zeros((3, 1), np.int64)),
        ValueError,
        ["labels.shape=(3,)", "received labels.shape=(3, 1)"],
    ),
    (
        "SoftmaxCrossEntropy.forward(logits rank 3)",
        lambda: SoftmaxCrossEntropy.forward(np.zeros((2, 3, 4)), np.zeros(2, np.int64)),
        ValueError,
        ["logits of rank 2 (N, K)", "received logits.shape=(2, 3, 4)"],
    ),
    (
        "SoftmaxCrossEntropy.forward(logits rank 1)",
        lambda: SoftmaxCrossEntropy.forward(np.zeros(3), np.zeros(3, np.int64)),
        ValueError,
        ["logits of rank 2 (N, K)", "received logits.shape=(3,)"],
    ),
    *(
        (
            f"BatchNorm.forward(0-d {name})",  # would broadcast silently
            lambda name=name: BatchNorm.forward(
                X4, **{**dict.fromkeys(BN_NAMES, ONES3), name: np.array(1.0)}, training=True
            ),
            ValueError,
            [f"Expected {name} of shape (3,)", f"received {name}.shape=()"],
        )
        for name in BN_NAMES
    ),
    (
        "GlobalAveragePool.forward(W = 0)",  # the mean over no pixels is NaN
        lambda: GlobalAveragePool.forward(np.zeros((2, 3, 0, 4))),
        ValueError,
        ["H, W >= 1", "received x.shape=(2, 3, 0, 4)"],
    ),
    (
        "GlobalAveragePool.forward(H = 0)",
        lambda: GlobalAveragePool.forward(np.zeros((2, 0, 3, 4))),
        ValueError,
        ["H, W >= 1", "received x.shape=(2, 0, 3, 4)"],
    ),
    (
        "GlobalAveragePool.forward(int x)",
        lambda: GlobalAveragePool.forward(np.ones((1, 2, 2, 3), np.int32)),
        TypeError,
        ["x to have a real floating dtype", "int32"],
    ),
    (
        "GlobalAveragePool.forward(bool x)",
        lambda: GlobalAveragePool.forward(np.ones((1, 2, 2, 3), bool)),
        TypeError,
        ["x to have a real floating dtype", "bool"],
    ),
]


@pytest.mark.parametrize(
    ("call", "thunk", "exc", "fragments"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_is_rejected_with_a_clear_message(call, thunk, exc, fragments):
    with pytest.raises(exc) as info:
        thunk()
    for fragment in fragments:
        assert fragment in str(info.value), (
            f"{call} raised {info.value!r}, which does not mention {fragment!r}"
        )


def _forward_caches():
    """(op name, backward, cache, y) for one forward of each op."""
    x = normal(2, 5, 6, 3)
    spec, rng = KPointwiseSpec(3, 6, 3), np.random.default_rng(0)
    out = [
        ("Conv2D", Conv2D.backward, *Conv2D.forward(x, K33, 2, "correct")[::-1]),
        (
            "DepthwiseConv2D",
            DepthwiseConv2D.backward,
            *DepthwiseConv2D.forward(x, normal(3, 3, 3, 1))[::-1],
        ),
        (
            "BatchNorm",
            BatchNorm.backward,
            *BatchNorm.forward(x, ONES3, ONES3, ONES3, ONES3, True)[::-1],
        ),
        ("Swish", Swish.backward, *Swish.forward(x)[::-1]),
        ("Sigmoid", Sigmoid.backward, *Sigmoid.forward(x)[::-1]),
        ("GlobalAveragePool", GlobalAveragePool.backward, *GlobalAveragePool.forward(x)[::-1]),
        ("Dense", Dense.backward, *Dense.forward(normal(2, 3), normal(3, 4))[::-1]),
        ("Dropout", Dropout.backward, *Dropout.forward(x, np.ones((2, 1, 1, 1)), 0.5)[::-1]),
        ("Add", Add.backward, *Add.forward(x, x)[::-1]),
        ("ChannelScale", ChannelScale.backward, *ChannelScale.forward(x, normal(2, 1, 1, 3))[::-1]),
        (
            "GroupedPointwise",
            GroupedPointwise.backward,
            *GroupedPointwise.forward(x, normal(1, 1, 1, 6), groups=3)[::-1],
        ),
        ("Interleave", Interleave.backward, *Interleave.forward(x, 3)[::-1]),
        (
            "KPointwise",  # interleaves (6 // 3 > 1): a backward of several inner ops
            KPointwise.backward,
            *KPointwise.forward(spec, random_kpointwise_params(spec, rng), x, True)[::-1],
        ),
    ]
    return [(name, bwd, cache, y) for name, bwd, cache, y in out]


@pytest.mark.parametrize(
    ("name", "backward", "cache", "y"), _forward_caches(), ids=[c[0] for c in _forward_caches()]
)
def test_backward_rejects_dy_of_another_dtype_or_type(name, backward, cache, y):
    for dy, fragment in (
        (np.ones(y.shape, bool), "dy.dtype=bool"),
        (np.ones(y.shape, np.int64), "dy.dtype=int64"),
        (np.ones(y.shape, complex), "dy.dtype=complex128"),
        (np.ones(y.shape).tolist(), "received list"),
    ):
        with pytest.raises(TypeError, match=re.escape(fragment)):
            backward(cache, dy)


@pytest.mark.parametrize(
    ("name", "backward", "cache", "y"), _forward_caches(), ids=[c[0] for c in _forward_caches()]
)
def test_backward_refuses_another_ops_cache_by_name(name, backward, cache, y):
    """Keys can match across ops (Add's backward read a Dropout cache and returned (dy, dy),
    not dy * scale): every backward checks its cache's tag first."""
    for other, _, other_cache, _ in _forward_caches():
        if other == name:
            continue
        with pytest.raises(
            TypeError,
            match=rf"cache {name}.forward returned, received the cache of {other}.forward",
        ):
            backward(other_cache, np.ones(y.shape))
    for bad, fragment in (
        (None, "received NoneType"),
        ({"y_shape": y.shape}, "received dict with keys ['y_shape']"),
    ):
        with pytest.raises(TypeError, match=re.escape(fragment)):
            backward(bad, np.ones(y.shape))


@pytest.mark.parametrize(
    ("name", "backward", "cache", "y"), _forward_caches(), ids=[c[0] for c in _forward_caches()]
)
def test_backward_rejects_dy_of_another_shape(name, backward, cache, y):
    dy = np.ones((y.shape[0] + 1,) + y.shape[1:])  # a mismatched batch size
    with pytest.raises(ValueError) as info:
        backward(cache, dy)
    msg = str(info.value)
    for fragment in (f"dy.shape={y.shape}", f"received dy.shape={dy.shape}", name):
        assert fragment in msg, (
            f"{name}.backward(dy.shape={dy.shape}) raised {msg!r}, missing {fragment!r}"
        )


def test_softmax_cross_entropy_backward_refuses_a_cache_it_did_not_make():
    """Its backward takes a scalar dloss, so it is not in ``_forward_caches``; it checks its
    cache's tag too: an untagged dict holding "probs" and "onehot" would give a gradient."""
    dense_cache = Dense.forward(normal(2, 3), normal(3, 4))[1]
    untagged = {"probs": np.full((2, 3), 1 / 3), "onehot": np.eye(3)[:2]}
    for cache, got in ((dense_cache, "the cache of Dense.forward"), (untagged, "dict with keys")):
        with pytest.raises(
            TypeError, match=rf"SoftmaxCrossEntropy\.forward returned, received {got}"
        ):
            SoftmaxCrossEntropy.backward(cache, 1.0)


# --- NaN / Inf propagate, never replaced ------------------------------------------------------


def _poisoned(value: float) -> np.ndarray:
    x = normal(2, 5, 6, 3)
    x[0, 2, 3, 1] = value
    return x


PROPAGATION = [
    ("Conv2D", lambda x: Conv2D.forward(x, K33, 2, "correct")[0]),
    ("DepthwiseConv2D", lambda x: DepthwiseConv2D.forward(x, normal(5, 5, 3, 1), 1, "same")[0]),
    ("BatchNorm(training)", lambda x: BatchNorm.forward(x, ONES3, ONES3, ONES3, ONES3, True)[0]),
    ("BatchNorm(inference)", lambda x: BatchNorm.forward(x, ONES3, ONES3, ONES3, ONES3, False)[0]),
    ("Swish", lambda x: Swish.forward(x)[0]),
    ("Sigmoid", lambda x: Sigmoid.forward(x)[0]),
    ("GlobalAveragePool", lambda x: GlobalAveragePool.forward(x)[0]),
    ("Dense", lambda x: Dense.forward(x.reshape(2, -1), normal(90, 4))[0]),
    (
        "Dropout(dropped sample)",
        lambda x: Dropout.forward(x, np.array([0.0, 1.0])[:, None, None, None], 0.5)[0],
    ),
    ("ChannelScale", lambda x: ChannelScale.forward(x, normal(2, 1, 1, 3))[0]),
    (
        "SoftmaxCrossEntropy",
        lambda x: SoftmaxCrossEntropy.forward(x.reshape(2, -1), np.array([0, 1]))[0],
    ),
]


@pytest.mark.parametrize(("name", "run"), PROPAGATION, ids=[p[0] for p in PROPAGATION])
def test_nan_propagates(name, run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.asarray(run(_poisoned(np.nan)))
    assert np.isnan(y).any(), (
        f"{name}.forward replaced a NaN input: no NaN in the output [x[0,2,3,1]=nan]"
    )
    assert not np.isnan(np.asarray(run(_poisoned(0.5)))).any(), (
        f"{name}.forward makes NaN from finite input"
    )


@pytest.mark.parametrize(
    ("name", "run"),
    [p for p in PROPAGATION if p[0] != "Sigmoid"],
    ids=[p[0] for p in PROPAGATION if p[0] != "Sigmoid"],
)
def test_inf_propagates(name, run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.asarray(run(_poisoned(np.inf)))
    assert not np.isfinite(y).all(), (
        f"{name}.forward replaced an Inf input: output all finite [x[0,2,3,1]=inf]"
    )


def test_sigmoid_of_infinities_is_its_limit():
    y, _ = Sigmoid.forward(np.array([-np.inf, np.inf, np.nan]))
    assert y[0] == 0.0 and y[1] == 1.0 and np.isnan(y[2]), (
        f"Sigmoid.forward([-inf, inf, nan]) = {y}"
    )


def test_nan_in_dy_propagates_through_backward():
    for name, backward, cache, y in _forward_caches():
        dy = np.ones(y.shape)
        dy.reshape(-1)[0] = np.nan
        dx, grads = backward(cache, dy)
        flat = [np.asarray(a) for a in (dx if isinstance(dx, tuple) else (dx,))] + [
            np.asarray(g) for g in grads.values()
        ]
        assert any(np.isnan(a).any() for a in flat), (
            f"{name}.backward dropped a NaN in dy [dy[0,...]=nan]"
        )


def test_gradient_checker_catches_a_wrong_backward():
    """The checker itself: a backward with a deliberate error (Swish's forward paired with
    Sigmoid's backward, or a kernel gradient scaled by 1.001) must fail."""
    x = normal(2, 3)
    with pytest.raises(AssertionError, match=r"Swish.backward dx rel err"):
        check_op_grads(
            "Swish.backward",
            Swish.forward,
            lambda c, dy: Sigmoid.backward({"op": "Sigmoid", "y": c["s"]}, dy),
            {"x": x},
            {"x.shape": x.shape},
        )

    def off_backward(cache, dy):
        dx, grads = Conv2D.backward(cache, dy)
        return dx, {"kernel": grads["kernel"] * 1.001}

    with pytest.raises(AssertionError, match=r"Conv2D.backward dkernel rel err"):
        check_op_grads(
            "Conv2D.backward",
            Conv2D.forward,
            off_backward,
            {"x": normal(1, 4, 4, 2), "kernel": normal(3, 3, 2, 2)},
            {"stride": 1},
        )


def test_batchnorm_momentum_one_freezes_the_moving_stats() -> None:
    """momentum=1 is allowed (``0 <= momentum <= 1``) and keeps the moving statistics as they
    were, whatever the batch."""
    mean, var = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, 3.0])
    _, cache = BatchNorm.forward(X4, ONES3, ONES3, mean, var, True)
    new_mean, new_var = BatchNorm.updated_moving_stats(mean, var, cache, momentum=1.0)
    np.testing.assert_array_equal(new_mean, [0.5, -1.0, 2.0])
    np.testing.assert_array_equal(new_var, [1.5, 0.25, 3.0])


@pytest.mark.parametrize("momentum", [math.nan, -1e-12, 1.0 + 1e-12])
def test_batchnorm_momentum_nan_or_outside_0_1_is_refused(momentum: float) -> None:
    _, cache = BatchNorm.forward(X4, ONES3, ONES3, ONES3, ONES3, True)
    with pytest.raises(ValueError, match=r"Expected 0 <= momentum <= 1, received momentum="):
        BatchNorm.updated_moving_stats(ONES3, ONES3, cache, momentum=momentum)


@pytest.mark.parametrize("dloss", [np.array(1), np.array(True)], ids=["int64", "bool"])
def test_softmax_backward_refuses_a_0d_dloss_that_is_not_floating(dloss: np.ndarray) -> None:
    """A 0-d array dloss must be real floating, as a Python dloss must be a real number."""
    _, cache = SoftmaxCrossEntropy.forward(normal(2, 3), np.array([0, 1]))
    with pytest.raises(TypeError, match=r"dloss to be a real number or 0-d floating array"):
        SoftmaxCrossEntropy.backward(cache, dloss)
