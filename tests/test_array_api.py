"""The core is array-API pure: every op, KPointwise and a whole network run on array-api-strict
arrays (which reject any NumPy-only call) and on PyTorch tensors (through array-api-compat: a
library whose arrays are not NumPy's, with its own attribute quirks, ``Tensor.size`` a method,
and devices: CUDA tensors in the ``gpu`` run), and agree with the NumPy results; mixing array
libraries is a clear TypeError."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from helpers import (
    assert_close,
    convert,
    drop_masks,
    random_kpointwise_params,
    random_network_params,
    tiny_architecture,
    to_numpy,
)

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
    network,
)

xs = pytest.importorskip("array_api_strict")


def strict(tree):
    return convert(tree, xs.asarray)


def is_strict(a) -> bool:
    return type(a).__module__.startswith("array_api_strict")


@dataclass(frozen=True)
class Library:
    """An array library core must run on: how to move NumPy arrays in and results out, and
    whether an array is one of its own (on the right device)."""

    name: str
    asarray: Callable[[Any], Any]
    owns: Callable[[Any], bool]
    to_numpy: Callable[[Any], np.ndarray] = to_numpy

    def convert(self, tree: Any) -> Any:
        return convert(tree, self.asarray)


def _torch_library(device: str) -> Library:
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs torch with a CUDA device")
    return Library(
        f"torch[{device}]",
        lambda a: torch.asarray(a, device=device),
        lambda a: isinstance(a, torch.Tensor) and a.device.type == device,
        lambda a: a.detach().cpu().numpy(),
    )


@pytest.fixture(
    params=[
        "array_api_strict",
        "torch[cpu]",
        pytest.param("torch[cuda]", marks=pytest.mark.gpu),
    ]
)
def lib(request) -> Library:
    if request.param == "array_api_strict":
        return Library("array_api_strict", xs.asarray, is_strict)
    return _torch_library(request.param[len("torch[") : -1])


def r(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


ONES4 = np.ones(4)
BN_STATS = {
    "gamma": 1 + 0.1 * r(4, seed=1),
    "beta": 0.1 * r(4, seed=2),
    "moving_mean": 0.1 * r(4, seed=3),
    "moving_variance": 1 + 0.5 * np.abs(r(4, seed=4)),
}

# name: (forward taking the arrays as keywords, the arrays). Backward is each op's own.
OPS = {
    "Conv2D(stride=1, same)": (
        Conv2D,
        lambda x, kernel: Conv2D.forward(x, kernel, 1, "same"),
        {"x": r(2, 6, 7, 3), "kernel": r(3, 3, 3, 4, seed=1)},
    ),
    "Conv2D(stride=2, correct)": (
        Conv2D,
        lambda x, kernel: Conv2D.forward(x, kernel, 2, "correct"),
        {"x": r(2, 6, 7, 3), "kernel": r(3, 3, 3, 4, seed=1)},
    ),
    "DepthwiseConv2D(k=5, stride=2)": (
        DepthwiseConv2D,
        lambda x, kernel: DepthwiseConv2D.forward(x, kernel, 2, "correct"),
        {"x": r(2, 7, 6, 4), "kernel": r(5, 5, 4, 1, seed=1)},
    ),
    "DepthwiseConv2D(k=3, same)": (
        DepthwiseConv2D,
        lambda x, kernel: DepthwiseConv2D.forward(x, kernel, 1, "same"),
        {"x": r(2, 5, 5, 4), "kernel": r(3, 3, 4, 1, seed=1)},
    ),
    "BatchNorm(training)": (
        BatchNorm,
        lambda **a: BatchNorm.forward(**a, training=True),
        {"x": r(2, 3, 3, 4), **BN_STATS},
    ),
    "BatchNorm(inference)": (
        BatchNorm,
        lambda **a: BatchNorm.forward(**a, training=False),
        {"x": r(2, 3, 3, 4), **BN_STATS},
    ),
    "Swish": (Swish, Swish.forward, {"x": 3 * r(2, 3, 3, 4)}),
    "Sigmoid": (Sigmoid, Sigmoid.forward, {"x": 3 * r(2, 3, 3, 4)}),
    "GlobalAveragePool": (GlobalAveragePool, GlobalAveragePool.forward, {"x": r(2, 3, 3, 4)}),
    "GlobalAveragePool(keepdims)": (
        GlobalAveragePool,
        lambda x: GlobalAveragePool.forward(x, keepdims=True),
        {"x": r(2, 3, 3, 4)},
    ),
    "Dense": (
        Dense,
        Dense.forward,
        {"x": r(3, 5), "kernel": r(5, 4, seed=1), "bias": r(4, seed=2)},
    ),
    "Dropout(per-element)": (
        Dropout,
        lambda x, mask: Dropout.forward(x, mask, 0.3),
        {"x": r(2, 3, 3, 4), "mask": (r(2, 3, 3, 4, seed=1) > 0).astype(np.float64)},
    ),
    "Dropout(drop-connect)": (
        Dropout,
        lambda x, mask: Dropout.forward(x, mask, 0.3),
        {"x": r(2, 3, 3, 4), "mask": np.array([0.0, 1.0]).reshape(2, 1, 1, 1)},
    ),
    "Add": (Add, Add.forward, {"a": r(2, 3, 3, 4), "b": r(2, 3, 3, 4, seed=1)}),
    "ChannelScale": (
        ChannelScale,
        ChannelScale.forward,
        {"x": r(2, 3, 3, 4), "s": r(2, 1, 1, 4, seed=1)},
    ),
    "SoftmaxCrossEntropy": (
        SoftmaxCrossEntropy,
        SoftmaxCrossEntropy.forward,
        {"logits": r(3, 5), "labels": np.array([0, 4, 2])},
    ),
    "GroupedPointwise(G=3, bias)": (
        GroupedPointwise,
        lambda **a: GroupedPointwise.forward(**a, groups=3),
        {"x": r(2, 3, 3, 6), "kernel": r(1, 1, 2, 9, seed=1), "bias": r(9, seed=2)},
    ),
    "GroupedPointwise(G=1)": (
        GroupedPointwise,
        GroupedPointwise.forward,
        {"x": r(2, 3, 6), "kernel": r(1, 1, 6, 4)},
    ),
    "Interleave(G=3)": (Interleave, lambda x: Interleave.forward(x, 3), {"x": r(2, 3, 3, 12)}),
}


def _run(op, forward, arrays):
    y, cache = forward(**arrays)
    dy = 1.0 if op is SoftmaxCrossEntropy else y * 0.5 + 0.25  # any dy of y's namespace and shape
    dx, grads = op.backward(cache, dy)
    return {
        "y": y,
        **{f"dx{i}": d for i, d in enumerate(dx if isinstance(dx, tuple) else (dx,))},
        **{f"d{k}": v for k, v in grads.items()},
    }


@pytest.mark.parametrize("name", list(OPS))
def test_op_on_other_array_library_matches_numpy(name, lib):
    op, forward, arrays = OPS[name]
    expected = _run(op, forward, arrays)
    got = _run(op, forward, lib.convert(arrays))
    assert set(got) == set(expected), (
        f"{name}: outputs {sorted(got)} on {lib.name}, {sorted(expected)} on NumPy"
    )
    for k, v in got.items():
        assert lib.owns(v), f"{name} returned {k} of type {type(v).__name__} for {lib.name} input"
        assert_close(f"{name} [{lib.name}]", k, lib.to_numpy(v), expected[k], {"dtype": "float64"})


@pytest.mark.parametrize(
    "spec",
    [
        KPointwiseSpec(8, 4, 2, bn=True, activation="swish", bias=True),  # interleave + second conv
        KPointwiseSpec(4, 8, 2, bn=True, activation="sigmoid"),  # interleave, no second conv
        KPointwiseSpec(8, 2, 2, bn=False, activation=None, bias=True),  # Cout // G == 1
        KPointwiseSpec(6, 5, 1, bn=True, activation="swish"),
    ],  # G == 1
    ids=str,
)
def test_kpointwise_on_other_array_library_matches_numpy(spec, lib):
    params = random_kpointwise_params(spec, np.random.default_rng(0))
    x = r(2, 3, 3, spec.cin)

    def run(p, x):
        y, cache = KPointwise.forward(spec, p, x, training=True)
        dx, grads = KPointwise.backward(cache, y * 0.5 + 0.25)
        return {
            "y": y,
            "dx": dx,
            **{f"d{k}": v for k, v in grads.items()},
            **{f"stats {k}": v for k, v in cache["moving_stats"].items()},
        }

    expected, got = run(params, x), run(lib.convert(params), lib.asarray(x))
    assert set(got) == set(expected)
    scale = max(np.linalg.norm(v) for v in expected.values())  # conv bias grads are 0 under BN
    for k, v in got.items():
        assert lib.owns(v), f"KPointwise returned {k} of type {type(v).__name__} for {lib.name}"
        assert_close(
            f"KPointwise [{lib.name}]", k, lib.to_numpy(v), expected[k], {"spec": spec}, scale=scale
        )


@pytest.mark.parametrize("training", [True, False])
def test_tiny_network_on_other_array_library_matches_numpy(training, lib):
    arch = tiny_architecture()
    params = random_network_params(arch)
    x, labels = r(2, 8, 8, 3), np.array([0, 2])
    masks = drop_masks(arch, 2) if training else None
    expected = network.loss_and_grads(arch, params, x, labels, training=training, masks=masks)
    got = network.loss_and_grads(
        arch,
        lib.convert(params),
        lib.asarray(x),
        lib.asarray(labels),
        training=training,
        masks=lib.convert(masks),
    )
    config = {"arch": arch.name, "training": training}
    where = f"network.loss_and_grads [{lib.name}]"
    for key in ("loss", "logits", "dx"):
        assert lib.owns(got[key]), f"{where}: {key} is {type(got[key]).__name__}"
        assert_close(where, key, lib.to_numpy(got[key]), expected[key], config)
    for group in ("grads", "moving_stats"):
        assert set(got[group]) == set(expected[group])
        # conv bias gradients are 0 under a training-mode BN: compare them with the round-off
        # of the group's largest entry
        scale = max((np.linalg.norm(v) for v in expected[group].values()), default=0.0)
        for k, v in got[group].items():
            assert lib.owns(v), f"{where}: {group}[{k!r}] is {type(v).__name__}"
            got_k, want_k = lib.to_numpy(v), expected[group][k]
            assert_close(where, f"{group}[{k!r}]", got_k, want_k, config, scale=scale)


def test_network_rng_masks_on_other_array_library(lib):
    """Masks drawn from the seeded generator land in the input's namespace, dtype and device."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = r(2, 8, 8, 3)
    expected, _ = network.forward(arch, params, x, training=True, rng=11)
    got, _ = network.forward(arch, lib.convert(params), lib.asarray(x), training=True, rng=11)
    assert lib.owns(got), f"network.forward returned {type(got).__name__} for {lib.name}"
    assert_close(
        f"network.forward [{lib.name}]", "logits", lib.to_numpy(got), expected, {"rng": 11}
    )


def test_float32_preserved_on_other_array_library(lib):
    x = lib.asarray(r(2, 5, 5, 3).astype(np.float32))
    k = lib.asarray(r(1, 1, 1, 6).astype(np.float32))
    y, cache = GroupedPointwise.forward(x, k, groups=3)
    dx, grads = GroupedPointwise.backward(cache, y)
    for what, a in (("y", y), ("dx", dx), ("dkernel", grads["kernel"])):
        assert lib.owns(a) and lib.to_numpy(a).dtype == np.float32, (
            f"GroupedPointwise {what}.dtype={a.dtype}, but should be float32 [{lib.name}]"
        )


# --- mixed libraries --------------------------------------------------------------------------

S = xs.asarray
MIXED = [
    (
        "Conv2D.forward(numpy x, strict kernel)",
        lambda: Conv2D.forward(r(1, 4, 4, 2), S(r(3, 3, 2, 2))),
        ["x:", "kernel:"],
    ),
    (
        "DepthwiseConv2D.forward(strict x, numpy kernel)",
        lambda: DepthwiseConv2D.forward(S(r(1, 4, 4, 2)), r(3, 3, 2, 1)),
        ["x:", "kernel:"],
    ),
    (
        "BatchNorm.forward(strict gamma)",
        lambda: BatchNorm.forward(r(2, 4), S(ONES4), ONES4, ONES4, ONES4),
        ["x:", "gamma:"],
    ),
    (
        "Dense.forward(strict bias)",
        lambda: Dense.forward(r(2, 3), r(3, 4), S(ONES4)),
        ["x:", "bias:"],
    ),
    (
        "GroupedPointwise.forward(strict kernel)",
        lambda: GroupedPointwise.forward(r(2, 4), S(r(1, 1, 2, 4)), groups=2),
        ["x:", "kernel:"],
    ),
    ("Add.forward(numpy, strict)", lambda: Add.forward(r(2, 3), S(r(2, 3))), ["a:", "b:"]),
    (
        "ChannelScale.forward(strict s)",
        lambda: ChannelScale.forward(r(2, 3, 3, 4), S(r(2, 1, 1, 4))),
        ["x:", "s:"],
    ),
    (
        "Dropout.forward(strict mask)",
        lambda: Dropout.forward(r(2, 3), S(np.ones((2, 3))), 0.5),
        ["x:", "mask:"],
    ),
    (
        "SoftmaxCrossEntropy.forward(numpy labels)",
        lambda: SoftmaxCrossEntropy.forward(S(r(2, 3)), np.array([0, 1])),
        ["logits:", "labels:"],
    ),
    (
        "KPointwise.forward(numpy params, strict x)",
        lambda: KPointwise.forward(
            KPointwiseSpec(4, 4, 2),
            random_kpointwise_params(KPointwiseSpec(4, 4, 2), np.random.default_rng(0)),
            S(r(2, 4)),
        ),
        ["x:", "params['conv/kernel']:"],
    ),
    (
        "KPointwise.forward(one strict parameter)",
        lambda: KPointwise.forward(
            KPointwiseSpec(4, 4, 2),
            {
                **random_kpointwise_params(KPointwiseSpec(4, 4, 2), np.random.default_rng(0)),
                "bn2/gamma": S(ONES4),
            },
            r(2, 4),
        ),
        ["x:", "params['bn2/gamma']:"],
    ),
    (
        "GroupedPointwise.forward(strict bias)",
        lambda: GroupedPointwise.forward(r(2, 4), r(1, 1, 2, 4), S(ONES4), groups=2),
        ["bias:"],
    ),
    (
        "BatchNorm.updated_moving_stats(strict stats, numpy forward)",
        lambda: BatchNorm.updated_moving_stats(
            S(ONES4), S(ONES4), BatchNorm.forward(r(2, 4), ONES4, ONES4, ONES4, ONES4, True)[1]
        ),
        ["BatchNorm.forward's arrays"],
    ),
    (
        "Conv2D.backward(numpy cache, strict dy)",
        lambda: Conv2D.backward(Conv2D.forward(r(1, 4, 4, 2), r(3, 3, 2, 2))[1], S(r(1, 4, 4, 2))),
        [],
    ),
    (
        "network.forward(numpy params, strict x)",
        lambda: network.forward(
            tiny_architecture(), random_network_params(tiny_architecture()), S(r(2, 8, 8, 3))
        ),
        [],
    ),
]


@pytest.mark.parametrize(("call", "thunk", "names"), MIXED, ids=[m[0] for m in MIXED])
def test_mixed_array_libraries_are_a_type_error(call, thunk, names):
    with pytest.raises(TypeError) as info:
        thunk()
    msg = str(info.value)
    assert "different libraries" in msg, (
        f"{call} raised {msg!r}, which does not say the libraries differ"
    )
    for name in names:
        assert name in msg, f"{call} raised {msg!r}, which does not name argument {name!r}"
    assert "numpy" in msg and "array_api_strict" in msg, (
        f"{call} raised {msg!r}, not naming both libraries"
    )


@pytest.mark.parametrize("dtype", ["uint8", "uint64", "int32"])
def test_loss_takes_labels_of_any_integer_dtype_on_array_api_strict(dtype):
    """The class range is int64, and the array API gives int64 and uint64 no common type:
    without the cast array_api_strict refuses the comparison (torch has no uint64 min on the
    CPU at all, so only strict runs this)."""
    logits, labels = r(3, 5), np.array([0, 4, 2])
    expected, _ = SoftmaxCrossEntropy.forward(logits, labels)
    strict_labels = xs.asarray(labels, dtype=getattr(xs, dtype))
    got, _ = SoftmaxCrossEntropy.forward(xs.asarray(logits), strict_labels)
    assert float(got) == pytest.approx(float(expected), rel=1e-15)


def test_strict_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"x.dtype=.*int64"):
        Swish.forward(xs.asarray([1, 2, 3]))


BACKWARD_MIXED = [
    ("Sigmoid", lambda: Sigmoid.forward(r(2, 4)), Sigmoid.backward),
    ("Swish", lambda: Swish.forward(r(2, 4)), Swish.backward),
    ("Dropout", lambda: Dropout.forward(r(2, 4), np.ones((2, 1)), 0.5), Dropout.backward),
    (
        "BatchNorm",
        lambda: BatchNorm.forward(r(2, 4), ONES4, ONES4, ONES4, ONES4, True),
        BatchNorm.backward,
    ),
    (
        "ChannelScale",
        lambda: ChannelScale.forward(r(2, 3, 3, 4), r(2, 1, 1, 4)),
        ChannelScale.backward,
    ),
    ("Dense", lambda: Dense.forward(r(2, 3), r(3, 4)), Dense.backward),
    (
        "GroupedPointwise",
        lambda: GroupedPointwise.forward(r(2, 4), r(1, 1, 2, 4), groups=2),
        GroupedPointwise.backward,
    ),
    ("Conv2D", lambda: Conv2D.forward(r(1, 4, 4, 2), r(3, 3, 2, 2)), Conv2D.backward),
]


@pytest.mark.parametrize(
    ("op", "forward", "backward"), BACKWARD_MIXED, ids=[b[0] for b in BACKWARD_MIXED]
)
def test_backward_names_dy_of_another_library(op, forward, backward):
    # Sigmoid/Swish/Dropout used to fail inside the multiply with array-api-strict's
    # "Expected Array or Python scalar"; the others named dy "arg1".
    y, cache = forward()
    with pytest.raises(TypeError) as info:
        backward(cache, S(np.ones(y.shape)))
    msg = str(info.value)
    for fragment in ("different libraries", f"{op}.forward's arrays: numpy", "dy: array_api"):
        assert fragment in msg, f"{op}.backward(strict dy) raised {msg!r}, missing {fragment!r}"
