"""group_count, interleave/deinterleave, GroupedPointwise and the kPointwise composite: DESIGN.md
examples, properties, independent oracles, float64 finite-difference gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    DESIGN_GROUP_COUNTS,
    assert_close,
    batchnorm_ref,
    check_op_grads,
    fmt,
    interleave_by_formula,
    kpointwise_cases,
    kpointwise_ref,
    naive_grouped_pointwise,
    random_kpointwise_params,
    seeds,
    sigmoid_ref,
)
from hypothesis import example, given
from hypothesis import strategies as st

from gpconv.core import (
    GroupedPointwise,
    Interleave,
    KPointwise,
    KPointwiseSpec,
    deinterleave,
    group_count,
    interleave,
)

# --- group_count ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cin", "cout", "m", "expected"), DESIGN_GROUP_COUNTS)
def test_group_count_design_examples(cin, cout, m, expected):
    got = group_count(cin, cout, m)
    assert got == expected, (
        f"group_count returned {got}, but should be {expected} [cin={cin}, cout={cout}, m={m}]"
    )


@given(cin=st.integers(1, 2048), cout=st.integers(1, 2048), m=st.integers(1, 64))
def test_group_count_property(cin, cout, m):
    g = group_count(cin, cout, m)
    config = fmt(dict(cin=cin, cout=cout, m=m))
    bound = max(1, min(cin, cout, cin // m))
    assert cin % g == 0 and cout % g == 0, f"group_count={g} does not divide both {config}"
    assert 1 <= g <= bound, f"group_count={g} outside [1, {bound}] {config}"
    larger = [d for d in range(g + 1, bound + 1) if cin % d == 0 and cout % d == 0]
    assert not larger, f"group_count={g} is not maximal: {larger[-1]} also divides both {config}"


@pytest.mark.parametrize(
    ("args", "exc", "fragment"),
    [
        ((16, 16, 0), ValueError, "min_channels_per_group >= 1, received min_channels_per_group=0"),
        ((16, 16, -3), ValueError, "min_channels_per_group=-3"),
        ((0, 16, 4), ValueError, "cin >= 1, received cin=0"),
        ((16, 16, 2.0), TypeError, "min_channels_per_group to be an int"),
        ((16, True, 2), TypeError, "cout to be an int"),
    ],
)
def test_group_count_rejects_bad_arguments(args, exc, fragment):
    with pytest.raises(exc, match=fragment.replace("(", r"\(")):
        group_count(*args)


# --- interleave -------------------------------------------------------------------------------

channel_groups = st.integers(1, 8).flatmap(lambda g: st.tuples(st.just(g), st.integers(1, 8)))


@given(gs=channel_groups, seed=seeds)
def test_interleave_index_formula_and_inverse(gs, seed):
    g, s = gs
    x = np.random.default_rng(seed).standard_normal((2, 3, g * s))
    config = dict(groups=g, **{"x.shape": x.shape})
    y = interleave(x, g)
    assert np.array_equal(y, interleave_by_formula(x, g)), (
        f"interleave differs from out[..., s*G+g] = in[..., g*S+s] {fmt(config)}"
    )
    assert np.array_equal(np.sort(y, axis=-1), np.sort(x, axis=-1)), (
        f"interleave is not a permutation {fmt(config)}"
    )
    assert np.array_equal(deinterleave(y, g), x), f"deinterleave(interleave(x)) != x {fmt(config)}"
    assert np.array_equal(interleave(deinterleave(x, g), g), x), (
        f"interleave(deinterleave(x)) != x {fmt(config)}"
    )


@given(gs=channel_groups)
def test_interleave_is_a_permutation_of_channel_indices(gs):
    g, s = gs
    idx = np.arange(g * s, dtype=np.float64)
    perm = interleave(idx, g).astype(int)
    assert sorted(perm.tolist()) == list(range(g * s)), (
        f"interleave(arange) is not a permutation [groups={g}]"
    )
    # Interleaving S groups of size G undoes interleaving G groups of size S.
    assert np.array_equal(interleave(interleave(idx, g), s), idx), (
        f"interleave(., S) is not its inverse [G={g}, S={s}]"
    )


@given(gs=channel_groups, seed=seeds)
def test_interleave_matches_torch_channel_shuffle(gs, seed):
    torch = pytest.importorskip("torch")
    g, s = gs
    x = np.random.default_rng(seed).standard_normal((2, 3, 4, g * s))
    nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    expected = torch.nn.ChannelShuffle(g)(nchw).numpy().transpose(0, 2, 3, 1)
    assert np.array_equal(interleave(x, g), expected), (
        f"interleave differs from torch.nn.ChannelShuffle({g}) on NCHW-transposed data "
        f"[x.shape={x.shape}]"
    )


def test_interleave_op_gradient():
    for g, c in ((2, 6), (3, 12), (4, 4), (1, 5)):
        check_op_grads(
            "Interleave.backward",
            lambda x, g=g: Interleave.forward(x, g),
            Interleave.backward,
            {"x": np.random.default_rng(c).standard_normal((2, 3, c))},
            {"groups": g, "channels": c},
        )


# --- GroupedPointwise -------------------------------------------------------------------------


@st.composite
def grouped_cases(draw):
    g = draw(st.integers(1, 6))
    return {
        "groups": g,
        "ci": draw(st.integers(1, 4)),
        "co": draw(st.integers(1, 4)),
        "bias": draw(st.booleans()),
        "lead": draw(st.sampled_from(((2, 3, 3), (5,), (1, 2, 2)))),
        "seed": draw(seeds),
    }


def _grouped_inputs(case):
    rng = np.random.default_rng(case["seed"])
    g = case["groups"]
    inputs = {
        "x": rng.standard_normal(case["lead"] + (g * case["ci"],)),
        "kernel": rng.standard_normal((1, 1, case["ci"], g * case["co"])),
    }
    if case["bias"]:
        inputs["bias"] = rng.standard_normal(g * case["co"])
    return inputs


@given(case=grouped_cases())
def test_grouped_pointwise_matches_per_group_loop(case):
    inputs = _grouped_inputs(case)
    y, _ = GroupedPointwise.forward(**inputs, groups=case["groups"])
    expected = naive_grouped_pointwise(
        inputs["x"], inputs["kernel"], inputs.get("bias"), case["groups"]
    )
    assert_close("GroupedPointwise.forward", "y", y, expected, case)
    y_inferred, _ = GroupedPointwise.forward(**inputs)  # groups inferred from kernel.shape[2]
    assert np.array_equal(y_inferred, y), (
        f"GroupedPointwise.forward(groups=None) differs {fmt(case)}"
    )


@given(case=grouped_cases())
def test_grouped_pointwise_gradients(case):
    check_op_grads(
        "GroupedPointwise.backward",
        lambda **a: GroupedPointwise.forward(**a, groups=case["groups"]),
        GroupedPointwise.backward,
        _grouped_inputs(case),
        case,
        seed=case["seed"],
    )


@pytest.mark.parametrize(
    ("groups", "bias"), [(1, False), (1, True), (4, False), (4, True), (12, True)]
)
def test_grouped_pointwise_gradients_fixed(groups, bias):
    case = {"groups": groups, "ci": 2, "co": 3, "bias": bias, "lead": (2, 2, 3), "seed": groups}
    check_op_grads(
        "GroupedPointwise.backward",
        lambda **a: GroupedPointwise.forward(**a, groups=groups),
        GroupedPointwise.backward,
        _grouped_inputs(case),
        case,
    )


def test_grouped_pointwise_with_one_group_is_a_dense_1x1():
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((2, 3, 3, 5)), rng.standard_normal((1, 1, 5, 7))
    y, _ = GroupedPointwise.forward(x, k, groups=1)
    assert_close("GroupedPointwise.forward", "y", y, x @ k[0, 0], {"groups": 1})


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize(
    ("x_dtype", "k_dtype"), [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_grouped_pointwise_promotes_mixed_float_dtypes(groups, x_dtype, k_dtype):
    """As ``x @ kernel``: a float32/float64 mix computes in and returns float64, the float64
    operand not rounded to float32 on the way."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(x_dtype)
    kernel = rng.standard_normal((1, 1, 4 // groups, 6)).astype(k_dtype)
    y, _ = GroupedPointwise.forward(x, kernel, groups=groups)
    assert y.dtype == np.float64
    expected = naive_grouped_pointwise(x, kernel, None, groups)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_grouped_pointwise_backward_of_an_empty_batch_is_zero_in_the_promoted_dtype():
    """No rows: dx is empty and dkernel all zeros, in the dtypes of ``dy @ W^T`` and
    ``x^T @ dy`` (float64 for a float32 forward and a float64 dy) as for a non-empty batch."""
    kernel = np.ones((1, 1, 2, 6), np.float32)
    _, cache = GroupedPointwise.forward(np.zeros((0, 4), np.float32), kernel, groups=2)
    dx, grads = GroupedPointwise.backward(cache, np.zeros((0, 6)))
    assert dx.shape == (0, 4) and dx.dtype == np.float64
    assert grads["kernel"].dtype == np.float64
    np.testing.assert_array_equal(grads["kernel"], np.zeros((1, 1, 2, 6)))


# --- KPointwise -------------------------------------------------------------------------------


# Cout // G == 1 (grouped, no interleave, a second conv) with bias, and BN in training mode:
# under the ci profile the 8 drawn cases had neither.
KP_NO_INTERLEAVE = {
    "spec": KPointwiseSpec(8, 2, 2, activation="swish", bias=True),
    "m": 4,
    "x_shape": (2, 2, 2, 8),
    "training": True,
    "seed": 3,
}


@given(case=kpointwise_cases())
@example(case=KP_NO_INTERLEAVE)
def test_kpointwise_matches_design_text(case):
    spec, rng = case["spec"], np.random.default_rng(case["seed"])
    params = random_kpointwise_params(spec, rng)
    x = rng.standard_normal(case["x_shape"])
    y, _ = KPointwise.forward(spec, params, x, case["training"])
    config = dict(spec=spec, training=case["training"], **{"x.shape": x.shape})
    assert_close(
        "KPointwise.forward", "y", y, kpointwise_ref(spec, params, x, case["training"]), config
    )


@given(case=kpointwise_cases(max_channels=16))
@example(case=KP_NO_INTERLEAVE)
def test_kpointwise_gradients(case):
    """dx and every parameter gradient (conv, conv2, bias, bn, bn2) by central differences."""
    spec, rng = case["spec"], np.random.default_rng(case["seed"])
    params = random_kpointwise_params(spec, rng)
    trainable = {k: v for k, v in params.items() if spec.param_shapes()[k][1]}
    frozen = {k: v for k, v in params.items() if k not in trainable}
    names = ["x", *trainable]
    keys = {n: n.replace("/", "__") for n in names}  # keyword-safe names for check_op_grads

    def forward(**a):
        p = {n: a[keys[n]] for n in trainable} | frozen
        return KPointwise.forward(spec, p, a["x"], case["training"])

    def backward(cache, dy):
        dx, grads = KPointwise.backward(cache, dy)
        return dx, {keys[k]: v for k, v in grads.items()}

    inputs = {
        keys[n]: (rng.standard_normal(case["x_shape"]) if n == "x" else params[n]) for n in names
    }
    check_op_grads(
        "KPointwise.backward",
        forward,
        backward,
        inputs,
        dict(spec=spec, training=case["training"], **{"x.shape": case["x_shape"]}),
        seed=case["seed"],
    )


KP_STRUCTURE = [
    # cin, cout, m, groups, interleaves, second conv — each DESIGN.md case
    (32, 16, 16, 2, True, True),  # grouped, interleave, cin >= cout
    (16, 96, 16, 1, False, False),  # G == 1: plain conv
    (96, 4, 16, 4, False, True),  # Cout // G == 1: no interleave, but second conv
    (192, 320, 16, 8, True, False),  # cin < cout: no second conv
    (8, 8, 2, 4, True, True),
]


@pytest.mark.parametrize(("cin", "cout", "m", "groups", "interleaves", "second"), KP_STRUCTURE)
def test_kpointwise_structure(cin, cout, m, groups, interleaves, second):
    spec = KPointwiseSpec.from_min_channels(cin, cout, m, activation="swish")
    config = fmt(dict(cin=cin, cout=cout, m=m))
    assert (spec.groups, spec.interleaves, spec.has_second_conv) == (groups, interleaves, second), (
        f"KPointwiseSpec (groups, interleaves, second conv) = "
        f"{(spec.groups, spec.interleaves, spec.has_second_conv)}, "
        f"but should be {(groups, interleaves, second)} {config}"
    )
    shapes = spec.param_shapes()
    assert shapes["conv/kernel"][0] == (1, 1, cin // groups, cout), (
        f"conv/kernel shape {shapes['conv/kernel']} {config}"
    )
    assert ("conv2/kernel" in shapes) == second, (
        f"conv2/kernel presence should be {second} {config}"
    )
    if second:
        assert shapes["conv2/kernel"][0] == (1, 1, cout // groups, cout), (
            f"conv2/kernel {shapes['conv2/kernel']} {config}"
        )
    assert spec.macs(10) == 10 * (cin // groups) * cout + (
        10 * (cout // groups) * cout if second else 0
    )


def test_kpointwise_residual_adds_the_non_interleaved_y1():
    """With identity-like BN and no activation, out = gconv2(interleave(y1)) + y1: zeroing conv2
    must leave exactly y1 (not its interleaved version)."""
    spec = KPointwiseSpec(8, 8, 4, bn=False, activation=None)
    rng = np.random.default_rng(0)
    params = {
        "conv/kernel": rng.standard_normal((1, 1, 2, 8)),
        "conv2/kernel": np.zeros((1, 1, 2, 8)),
    }
    x = rng.standard_normal((2, 8))
    y, _ = KPointwise.forward(spec, params, x)
    y1 = naive_grouped_pointwise(x, params["conv/kernel"], None, 4)
    assert_close("KPointwise.forward", "y", y, y1, {"spec": spec, "conv2/kernel": "zeros"})


def test_kpointwise_training_returns_keras_moving_stats():
    spec = KPointwiseSpec(8, 8, 2, bn=True, activation="swish")
    rng = np.random.default_rng(1)
    params = random_kpointwise_params(spec, rng)
    x = rng.standard_normal((3, 2, 2, 8))
    _, cache = KPointwise.forward(spec, params, x, training=True)
    stats = cache["moving_stats"]
    assert set(stats) == {
        "bn/moving_mean",
        "bn/moving_variance",
        "bn2/moving_mean",
        "bn2/moving_variance",
    }
    # The inputs of both BNs, from DESIGN.md §1: bn sees gconv(x); bn2 sees
    # gconv2(interleave(y1)) with y1 = swish(BN(gconv(x))) normalised by the *batch* statistics.
    z = naive_grouped_pointwise(x, params["conv/kernel"], None, 2)
    y1 = batchnorm_ref(
        z, params["bn/gamma"], params["bn/beta"], z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    )
    y1 = y1 * sigmoid_ref(y1)
    z2 = naive_grouped_pointwise(interleave_by_formula(y1, 2), params["conv2/kernel"], None, 2)
    for bn, pre in (("bn", z), ("bn2", z2)):
        for stat, batch in (
            ("moving_mean", pre.mean(axis=(0, 1, 2))),
            ("moving_variance", pre.var(axis=(0, 1, 2))),
        ):
            assert_close(
                "KPointwise.forward",
                f"moving_stats['{bn}/{stat}']",
                stats[f"{bn}/{stat}"],
                0.99 * params[f"{bn}/{stat}"] + 0.01 * batch,
                {"spec": spec, "training": True},
            )
    _, cache = KPointwise.forward(spec, params, x, training=False)
    assert cache["moving_stats"] == {}, "KPointwise.forward(training=False) returned moving stats"


def test_kpointwise_defaults_to_inference():
    """Without ``training``, every BN uses its moving statistics (the Keras layer default)."""
    spec = KPointwiseSpec(8, 8, 2, bn=True, activation="swish")
    rng = np.random.default_rng(2)
    params = random_kpointwise_params(spec, rng)
    x = rng.standard_normal((3, 2, 2, 8))
    y, cache = KPointwise.forward(spec, params, x)
    assert cache["moving_stats"] == {}, "KPointwise.forward(spec, params, x) is in training mode"
    expected = kpointwise_ref(spec, params, x, training=False)
    assert_close("KPointwise.forward", "y", y, expected, {"spec": spec, "training": "default"})


# --- bad input --------------------------------------------------------------------------------

X = np.random.default_rng(0).standard_normal((2, 3, 3, 8))
BAD = [
    (
        "GroupedPointwise.forward(0 output channels)",  # its backward had no rows to reshape
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 0))),
        ValueError,
        ["Expected kernel.shape[-1] >= 1 (channels)", "kernel.shape[-1]=0"],
    ),
    (
        "interleave(groups=3, C=8)",
        lambda: interleave(X, 3),
        ValueError,
        ["groups=3 to divide", "=8"],
    ),
    ("interleave(groups=0)", lambda: interleave(X, 0), ValueError, ["groups >= 1", "groups=0"]),
    (
        "deinterleave(groups=5, C=8)",
        lambda: deinterleave(X, 5),
        ValueError,
        ["groups=5 to divide", "=8"],
    ),
    (
        "interleave(list)",
        lambda: interleave([1.0, 2.0], 2),
        TypeError,
        ["x to be an array", "list"],
    ),
    ("deinterleave(0-d)", lambda: deinterleave(np.ones(()), 1), ValueError, ["x.shape=()"]),
    (
        "Interleave.backward(dy shape)",
        lambda: Interleave.backward(Interleave.forward(X, 2)[1], X[:1]),
        ValueError,
        ["dy.shape=(2, 3, 3, 8)", "received dy.shape=(1, 3, 3, 8)"],
    ),
    (
        "GroupedPointwise.forward(kernel Cin/G mismatch)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 3, 4)), groups=4),
        ValueError,
        ["kernel.shape[2] == 2", "Cin/G = 8/4", "kernel.shape=(1, 1, 3, 4)"],
    ),
    (
        "GroupedPointwise.forward(groups=3 on 8 channels)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 2, 6)), groups=3),
        ValueError,
        ["groups=3 to divide", "x.shape[-1]=8"],
    ),
    (
        "GroupedPointwise.forward(groups=4, Cout=6)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 2, 6)), groups=4),
        ValueError,
        ["groups=4 to divide", "kernel.shape[3]=6"],
    ),
    (
        "GroupedPointwise.forward(inferred groups)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 3, 6))),
        ValueError,
        ["kernel.shape[2] to divide x.shape[-1]=8", "kernel.shape=(1, 1, 3, 6)"],
    ),
    (
        "GroupedPointwise.forward(3x3 kernel)",
        lambda: GroupedPointwise.forward(X, np.ones((3, 3, 8, 4))),
        ValueError,
        ["1x1 kernel", "kernel.shape=(3, 3, 8, 4)"],
    ),
    (
        "GroupedPointwise.forward(kernel rank 2)",
        lambda: GroupedPointwise.forward(X, np.ones((8, 4))),
        ValueError,
        ["kernel of rank 4", "kernel.shape=(8, 4)"],
    ),
    (
        "GroupedPointwise.forward(bias size)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 4)), np.ones(5)),
        ValueError,
        ["bias.shape[0] == 4", "bias.shape=(5,)"],
    ),
    (
        "GroupedPointwise.forward(int x)",
        lambda: GroupedPointwise.forward(X.astype(int), np.ones((1, 1, 8, 4))),
        TypeError,
        ["x.dtype=int64"],
    ),
    (
        "GroupedPointwise.forward(bool kernel)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 4), bool)),
        TypeError,
        ["kernel.dtype=bool"],
    ),
    (
        "GroupedPointwise.backward(dy batch)",
        lambda: GroupedPointwise.backward(
            GroupedPointwise.forward(X, np.ones((1, 1, 8, 4)))[1], np.ones((3, 3, 3, 4))
        ),
        ValueError,
        ["dy.shape=(2, 3, 3, 4)", "received dy.shape=(3, 3, 3, 4)"],
    ),
    (
        "KPointwiseSpec(groups=3, cin=8)",
        lambda: KPointwiseSpec(8, 6, 3),
        ValueError,
        ["groups=3 to divide", "cin=8"],
    ),
    (
        "KPointwiseSpec(groups=4, cout=6)",
        lambda: KPointwiseSpec(8, 6, 4),
        ValueError,
        ["groups=4 to divide", "cout=6"],
    ),
    (
        "KPointwiseSpec(activation='relu')",
        lambda: KPointwiseSpec(8, 8, activation="relu"),
        ValueError,
        ["activation in", "'relu'"],
    ),
    (
        "KPointwiseSpec.from_min_channels(m=0)",
        lambda: KPointwiseSpec.from_min_channels(8, 8, 0),
        ValueError,
        ["min_channels_per_group >= 1", "min_channels_per_group=0"],
    ),
    (
        "KPointwise.forward(x C=6 for cin=8)",
        lambda: KPointwise.forward(
            KPointwiseSpec(8, 8, 2),
            random_kpointwise_params(KPointwiseSpec(8, 8, 2), np.random.default_rng(0)),
            X[..., :6],
        ),
        ValueError,
        ["x.shape[-1] == 8", "x.shape=(2, 3, 3, 6)"],
    ),
    (
        "KPointwise.forward(missing conv2)",
        lambda: KPointwise.forward(
            KPointwiseSpec(8, 8, 2, bn=False), {"conv/kernel": np.ones((1, 1, 4, 8))}, X
        ),
        ValueError,
        ["missing conv2/kernel", "(1, 1, 4, 8)"],
    ),
    (
        "KPointwise.forward(wrong kernel shape)",
        lambda: KPointwise.forward(
            KPointwiseSpec(8, 8, 1, bn=False), {"conv/kernel": np.ones((1, 1, 4, 8))}, X
        ),
        ValueError,
        ["conv/kernel", "expected shape (1, 1, 8, 8)", "received shape (1, 1, 4, 8)"],
    ),
    (
        "KPointwise.forward(list x)",
        lambda: KPointwise.forward(
            KPointwiseSpec(2, 2, 1, bn=False), {"conv/kernel": np.ones((1, 1, 2, 2))}, [[1.0, 2.0]]
        ),
        TypeError,
        ["x to be an array", "list"],
    ),
    (
        "KPointwiseSpec(bn='no')",
        lambda: KPointwiseSpec(8, 8, 2, bn="no"),
        TypeError,
        ["bn to be True or False", "'no'"],
    ),
    (
        "KPointwiseSpec(bias=1)",
        lambda: KPointwiseSpec(8, 8, 2, bias=1),
        TypeError,
        ["bias to be True or False", "int 1"],
    ),
    (
        "GroupedPointwise.forward(kernel with 0 input channels)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 0, 8))),
        ValueError,
        ["kernel.shape[2] >= 1", "kernel.shape=(1, 1, 0, 8)"],
    ),
    (
        "KPointwise.forward(spec a dict)",
        lambda: KPointwise.forward({"cin": 8, "cout": 8}, {}, X),
        TypeError,
        ["spec to be a KPointwiseSpec", "received dict"],
    ),
    (
        "KPointwise.forward(params a list)",
        lambda: KPointwise.forward(KPointwiseSpec(8, 8, 1, bn=False), [np.ones((1, 1, 8, 8))], X),
        TypeError,
        ["params to be a dict", "received list"],
    ),
    (
        "KPointwise.forward(int bn2/gamma)",
        lambda: KPointwise.forward(
            KPointwiseSpec(8, 8, 2),
            {
                **random_kpointwise_params(KPointwiseSpec(8, 8, 2), np.random.default_rng(0)),
                "bn2/gamma": np.ones(8, int),
            },
            X,
        ),
        TypeError,
        ["params['bn2/gamma'] to have a real floating dtype", "dtype=int64"],
    ),
    (
        "KPointwise.forward(training='no')",
        lambda: KPointwise.forward(
            KPointwiseSpec(8, 8, 1, bn=False), {"conv/kernel": np.ones((1, 1, 8, 8))}, X, "no"
        ),
        TypeError,
        ["training to be True or False", "str 'no'"],
    ),
    (
        "Interleave.backward(bool dy)",
        lambda: Interleave.backward(Interleave.forward(X, 2)[1], np.ones(X.shape, bool)),
        TypeError,
        ["dy to have a real floating dtype", "bool"],
    ),
    (
        "GroupedPointwise.backward(list dy)",
        lambda: GroupedPointwise.backward(
            GroupedPointwise.forward(X, np.ones((1, 1, 4, 2)))[1], np.zeros((2, 3, 3, 2)).tolist()
        ),
        TypeError,
        ["dy to be an array", "list"],
    ),
    (
        "GroupedPointwise.forward(0-d x)",  # was an IndexError reading x.shape[-1]
        lambda: GroupedPointwise.forward(np.array(1.0), np.ones((1, 1, 1, 2))),
        ValueError,
        ["x of shape (..., Cin)", "received x.shape=()"],
    ),
    (
        "GroupedPointwise.forward(groups=0)",  # was a ZeroDivisionError
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 8)), groups=0),
        ValueError,
        ["groups >= 1", "received groups=0"],
    ),
    (
        "GroupedPointwise.forward(groups=-2)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 8)), groups=-2),
        ValueError,
        ["groups >= 1", "received groups=-2"],
    ),
    (
        "GroupedPointwise.forward(groups=2.0)",
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 4, 8)), groups=2.0),
        TypeError,
        ["groups"],
    ),
    (
        "GroupedPointwise.forward(groups=True)",  # not read as 1
        lambda: GroupedPointwise.forward(X, np.ones((1, 1, 8, 8)), groups=True),
        TypeError,
        ["groups"],
    ),
]


@pytest.mark.parametrize(("call", "thunk", "exc", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_a_clear_message(call, thunk, exc, fragments):
    with pytest.raises(exc) as info:
        thunk()
    for fragment in fragments:
        assert fragment in str(info.value), (
            f"{call} raised {info.value!r}, which does not mention {fragment!r}"
        )


def test_kpointwise_backward_rejects_mismatched_dy():
    spec = KPointwiseSpec(8, 8, 2)
    _, cache = KPointwise.forward(
        spec, random_kpointwise_params(spec, np.random.default_rng(0)), X, True
    )
    with pytest.raises(
        ValueError, match=r"dy.shape=\(2, 3, 3, 8\).*received dy.shape=\(1, 3, 3, 8\)"
    ):
        KPointwise.backward(cache, X[:1])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_kpointwise_propagates_nan_and_inf(value):
    spec = KPointwiseSpec(8, 8, 2, bn=True, activation=None)
    params = random_kpointwise_params(spec, np.random.default_rng(0))
    x = X.copy()
    x[0, 1, 1, 3] = value
    with np.errstate(all="ignore"):
        y, _ = KPointwise.forward(spec, params, x, training=False)
    assert not np.isfinite(y).all(), f"KPointwise.forward replaced x[0,1,1,3]={value} [spec={spec}]"
    with np.errstate(all="ignore"):
        gy, _ = GroupedPointwise.forward(x, np.ones((1, 1, 4, 8)))
    assert not np.isfinite(gy).all(), f"GroupedPointwise.forward replaced x[0,1,1,3]={value}"


@pytest.mark.parametrize("block_bytes", [1, 100, 1000])
def test_grouped_pointwise_row_blocks_give_the_same_result(monkeypatch, block_bytes):
    """NumPy grouped convs work through blocks of rows (``ROW_BLOCK_BYTES``); any block size,
    including a ragged last block, must give the all-rows result and gradients."""
    import gpconv.core.pointwise as pointwise

    case = {"groups": 4, "ci": 3, "co": 2, "bias": True, "lead": (3, 5, 7), "seed": 5}
    inputs = _grouped_inputs(case)
    y_ref, cache = GroupedPointwise.forward(**inputs, groups=4)
    dy = np.random.default_rng(1).standard_normal(y_ref.shape)
    dx_ref, g_ref = GroupedPointwise.backward(cache, dy)
    monkeypatch.setattr(pointwise, "ROW_BLOCK_BYTES", block_bytes)
    rows = pointwise._row_blocks(inputs["x"].reshape(-1, 12), 12, 4)
    assert len(rows) > 1, f"ROW_BLOCK_BYTES={block_bytes} should give several blocks"
    y, cache = GroupedPointwise.forward(**inputs, groups=4)
    dx, g = GroupedPointwise.backward(cache, dy)
    config = {"ROW_BLOCK_BYTES": block_bytes, "blocks": len(rows), **case}
    assert_close("GroupedPointwise.forward", "y", y, y_ref, config)
    assert_close("GroupedPointwise.backward", "dx", dx, dx_ref, config)
    for k in g_ref:
        assert_close("GroupedPointwise.backward", f"d{k}", g[k], g_ref[k], config)
    assert_close(
        "GroupedPointwise.forward",
        "y",
        y,
        naive_grouped_pointwise(inputs["x"], inputs["kernel"], inputs["bias"], 4),
        config,
    )


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_shuffles_of_zero_channels_are_empty_both_ways(groups):
    # An empty channel axis is divisible by any G; deinterleave once divided by S = 0.
    x = np.ones((2, 3, 0))
    assert interleave(x, groups).shape == x.shape
    assert deinterleave(x, groups).shape == x.shape
