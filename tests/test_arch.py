"""Architecture as data (issue 4): the published parameter and MAC counts to the unit, Keras's
EfficientNet-B1..B7 as an independent oracle, any min_channels_per_group, the summary table."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import fmt
from hypothesis import given
from hypothesis import strategies as st

from gpconv.core import group_count
from gpconv.core.arch import (
    COEFFICIENTS,
    DROP_CONNECT_RATE,
    VARIANTS,
    MBConvSpec,
    by_name,
    efficientnet,
    kefficientnet,
    require_arch,
    round_filters,
    round_repeats,
    with_dropout,
    without_dropout,
)

MODELS = {
    "EfficientNet-B0": lambda classes, skip=-1: efficientnet("b0", classes, skip),
    "kEffNet-B0 16ch": lambda classes, skip=-1: kefficientnet("b0", classes, 16, skip),
    "kEffNet-B0 32ch": lambda classes, skip=-1: kefficientnet("b0", classes, 32, skip),
}

# model: (trainable 10, non-trainable 10, trainable 100, MACs 224, MACs 32 skip 3) — DESIGN.md §1.
PUBLISHED = {
    "EfficientNet-B0": (4_020_358, 42_016, 4_135_648, 384_547_552, 403_436_272),
    "kEffNet-B0 16ch": (639_702, 45_632, 754_992, 123_613_524, 81_153_588),
    "kEffNet-B0 32ch": (1_059_202, 45_600, 1_174_492, 169_104_392, 134_729_912),
}


@pytest.mark.parametrize("model", list(PUBLISHED))
def test_published_parameter_counts(model):
    trainable10, non_trainable10, trainable100, _, _ = PUBLISHED[model]
    got = MODELS[model](10).param_count()
    assert got == (trainable10, non_trainable10), (
        f"{model}.param_count() = {got}, but should be {(trainable10, non_trainable10)} "
        "[num_classes=10]"
    )
    got = MODELS[model](100).param_count()
    assert got[0] == trainable100, (
        f"{model} trainable = {got[0]:,}, but should be {trainable100:,} [num_classes=100]"
    )
    assert got[1] == non_trainable10, (
        f"{model} non-trainable changed with num_classes=100: {got[1]:,}"
    )


@pytest.mark.parametrize("model", list(PUBLISHED))
def test_published_macs_and_feature_maps(model):
    *_, macs224, macs32 = PUBLISHED[model]
    arch = MODELS[model](10)
    assert arch.macs(224) == macs224, (
        f"{model}.macs(224) = {arch.macs(224):,}, but should be {macs224:,}"
    )
    assert arch.feature_size(224) == 7, (
        f"{model} final feature map {arch.feature_size(224)} at 224, should be 7"
    )
    small = MODELS[model](10, 3)
    assert small.macs(32) == macs32, (
        f"{model}.macs(32) = {small.macs(32):,}, but should be {macs32:,} [skip_stride_cnt=3]"
    )
    assert small.feature_size(32) == 8, (
        f"{model} final feature map {small.feature_size(32)}, should be 8 [32px, skip 3]"
    )
    # 32 -> 31 (stride-1 stem keeps correct_pad) -> 16 -> 8, as the paper's CIFAR runs.
    sizes = [r.output_shape[0] for r in small.layers(32)]
    assert sizes[0] == 31 and 16 in sizes, (
        f"{model} feature maps at 32px (skip 3): {sorted(set(sizes))}"
    )


def test_paper_table_agrees():
    from gpconv.core.paper import paper_rows

    bad = [r for r in paper_rows() if not r["match"]]
    assert not bad, f"core.paper.paper_rows() mismatches: {bad}"


# --- Keras applications as the oracle for B1..B7 ----------------------------------------------

# keras.applications.EfficientNetBx(weights=None) starts with Rescaling + Normalization layers; the
# Normalization layer holds non-trainable mean (3), variance (3) and count (1). Our architecture
# takes already-normalised images, so trainable counts must be equal and non-trainable differ by 7.
KERAS_NORMALIZATION_NON_TRAINABLE = 7


def _keras_counts(variant: str) -> tuple[int, int]:
    keras = pytest.importorskip("keras")
    model = getattr(keras.applications, f"EfficientNet{variant.upper()}")(weights=None, classes=10)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    non_trainable = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    del model
    keras.backend.clear_session()
    return trainable, non_trainable


@pytest.mark.parametrize(
    "variant",
    # Building a keras.applications model takes 2-6 s from B1 up (B0: ~1.5 s); B0 runs always.
    ["b0"] + [pytest.param(f"b{i}", marks=pytest.mark.slow) for i in range(1, 8)],
)
def test_efficientnet_counts_equal_keras_applications(variant):
    k_trainable, k_non_trainable = _keras_counts(variant)
    trainable, non_trainable = efficientnet(variant, 10).param_count()
    assert trainable == k_trainable, (
        f"efficientnet({variant!r}, 10) trainable = {trainable:,}, "
        f"but keras.applications says {k_trainable:,}"
    )
    assert non_trainable + KERAS_NORMALIZATION_NON_TRAINABLE == k_non_trainable, (
        f"efficientnet({variant!r}, 10) non-trainable = {non_trainable:,}, "
        f"keras.applications {k_non_trainable:,}; expected a difference of exactly "
        f"{KERAS_NORMALIZATION_NON_TRAINABLE} (Keras's input Normalization layer)"
    )


# --- structure and any min_channels_per_group -------------------------------------------------


@given(
    m=st.integers(1, 512),
    variant=st.sampled_from(("b0", "b1", "b2")),
    classes=st.integers(1, 1000),
    skip=st.integers(-1, 7),
)
def test_any_min_channels_per_group_builds_a_consistent_kefficientnet(m, variant, classes, skip):
    arch = kefficientnet(variant, classes, m, skip)
    base = efficientnet(variant, classes, skip)
    config = fmt(dict(variant=variant, num_classes=classes, m=m, skip_stride_cnt=skip))
    assert [b.name for b in arch.blocks] == [b.name for b in base.blocks], (
        f"block lists differ {config}"
    )
    for block in arch.blocks:
        for layer, spec in block.pointwise().items():
            expected = group_count(spec.cin, spec.cout, m)
            assert spec.groups == expected, (
                f"{layer}.groups = {spec.groups}, but should be {expected} {config}"
            )
    assert arch.head.top.groups == group_count(arch.head.top.cin, arch.head.top.cout, m)
    rows = arch.layers(64)
    trainable, non_trainable = arch.param_count()
    assert sum(r.params for r in rows) == trainable + non_trainable, (
        f"layer params do not sum to the total {config}"
    )
    assert sum(r.macs for r in rows) == arch.macs(64), f"layer MACs do not sum to macs() {config}"
    for block, base_block in zip(arch.blocks, base.blocks):
        for (name, spec), base_spec in zip(
            block.pointwise().items(), base_block.pointwise().values()
        ):
            first = math.prod(spec.param_shapes()["conv/kernel"][0])
            assert first <= math.prod(base_spec.param_shapes()["conv/kernel"][0]), (
                f"{name} grew {config}"
            )


@given(m=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_any_min_channels_per_group_runs_forward(m, seed):
    import numpy as np

    from gpconv.core import network

    arch = kefficientnet("b0", 3, m, skip_stride_cnt=3)
    params = network.init_params(arch, seed)
    x = np.random.default_rng(seed).standard_normal((2, 8, 8, 3)).astype(np.float32)
    logits, _ = network.forward(arch, params, x, training=True, rng=seed)
    assert logits.shape == (2, 3) and np.isfinite(logits).all(), (
        f"network.forward(kefficientnet('b0', 3, {m}, skip_stride_cnt=3)) gave {logits}"
    )


def test_huge_min_channels_means_every_pointwise_conv_is_ungrouped():
    arch, base = kefficientnet("b0", 10, 10_000), efficientnet("b0", 10)
    groups = {spec.groups for spec in arch.pointwise().values()}
    assert groups == {1}, f"kefficientnet(m=10000) has groups {groups}, but should be ungrouped"
    # Same weights as EfficientNet; only the top conv's activation differs (no parameters).
    assert arch.param_count() == base.param_count(), (
        f"{arch.param_count()} != {base.param_count()} [m=10000]"
    )


def test_block_table_facts():
    arch, k = efficientnet("b0", 10), kefficientnet("b0", 10, 16)
    assert len(arch.blocks) == 16, f"EfficientNet-B0 has {len(arch.blocks)} blocks, should be 16"
    assert arch.head.top.activation == "swish" and k.head.top.activation is None, (
        "top conv activation: EfficientNet swish, kEffNet none"
    )
    for b in arch.blocks:
        se = b.se_reduce.cout
        assert se == max(1, int(b.cin * 0.25)), (
            f"{b.name} SE filters {se}, should be max(1, int({b.cin}*0.25))"
        )
        assert (
            b.se_reduce.bias
            and b.se_expand.bias
            and not b.project.bias
            and b.project.activation is None
        )
        assert b.se_expand.activation == "sigmoid" and b.se_reduce.activation == "swish"
    rates = [b.drop_rate for b in arch.blocks]
    assert rates == [0.2 * i / 16 for i in range(16)], f"drop-connect rates {rates}"
    assert arch.stem.stride == 2 and efficientnet("b0", 10, 0).stem.stride == 1, (
        "stem stride with skip_stride_cnt"
    )
    strides3 = [b.stride for b in efficientnet("b0", 10, 3).blocks if b.name.endswith("a")]
    assert strides3 == [1, 1, 1, 2, 1, 2, 1], (
        f"first-block strides with skip_stride_cnt=3: {strides3}"
    )
    assert [b.residual for b in arch.blocks[:3]] == [False, False, True]


def test_round_filters_follows_keras():
    assert [round_filters(f, 1.1) for f in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == [
        32,
        16,
        24,
        48,
        88,
        120,
        208,
        352,
        1408,
    ]
    assert round_filters(32, 2.0) == 64 and round_filters(1280, 2.0) == 2560
    assert round_filters(4, 1.0) == 8, "round_filters never goes below 8"


def _keras_round_filters(filters: int, width: float, divisor: int) -> int:
    """keras.applications.efficientnet's round_filters, transcribed from its source
    (``depth_divisor`` generalised from 8): ``max(d, int(f*w + d/2) // d * d)``, plus ``d`` when
    that loses more than 10% of ``f*w``."""
    filters *= width
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:
        new_filters += divisor
    return int(new_filters)


@given(
    filters=st.integers(1, 4096),
    width=st.floats(0.05, 4.0, allow_nan=False),
    divisor=st.integers(1, 32),
)
def test_round_filters_equals_keras_rule_for_any_divisor(filters, width, divisor):
    """Any divisor, not only 8: the half-divisor offset is ``divisor / 2`` (a true division)."""
    assert round_filters(filters, width, divisor) == _keras_round_filters(filters, width, divisor)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # 33 * 0.5 = 16.5; int(16.5 + 1.5) = 18 -> 18 // 3 * 3 = 18 (int(16.5 + 1) = 17 gives 15).
        ((33, 0.5, 3), 18),
        # 10 * 1.0 = 10; int(10 + 4.5) = 14 -> 9; 9 < 0.9 * 10 = 9.0 is false: no +9 (the rule is
        # a strict "<", so losing exactly 10% keeps the rounded-down count).
        ((10, 1.0, 9), 9),
        # 20 * 1.0 with divisor 12: int(26) // 12 * 12 = 24 (>= 18): unchanged.
        ((20, 1.0, 12), 24),
        # 3 * 1.0 = 3 rounds to 0, floored at the divisor: 8 (not 1, nor 1 + 8 by the 90% rule).
        ((3, 1.0, 8), 8),
        # 52 + 4 = 56 -> 56: Keras rounds half up (int(x + d/2)), not half to even (6.5 -> 6).
        ((52, 1.0, 8), 56),
    ],
)
def test_round_filters_worked_by_hand(args, expected):
    assert round_filters(*args) == expected, f"round_filters{args} = {round_filters(*args)}"


@pytest.mark.parametrize(
    ("args", "exc", "fragment"),
    [
        ((-1, 1.0), ValueError, "Expected filters >= 1, received filters=-1"),
        ((0, 1.0), ValueError, "Expected filters >= 1, received filters=0"),
        ((32.5, 1.0), TypeError, "Expected filters to be an int, received float 32.5"),
        (("32", 1.0), TypeError, "Expected filters to be an int, received str '32'"),
        ((32, 0.0), ValueError, "Expected width > 0 and finite, received width=0.0"),
        ((32, float("nan")), ValueError, "received width=nan"),
        ((32, math.inf), ValueError, "received width=inf"),  # not int()'s OverflowError
        ((32, "1.1"), TypeError, "Expected width to be a real number, received str"),
        ((32, 1.0, 0), ValueError, "Expected divisor >= 1, received divisor=0"),
    ],
    ids=repr,
)
def test_round_filters_refuses_what_is_no_filter_count(args, exc, fragment):
    """round_filters(-1, 1.0) and round_filters(32, 0.0) returned 8 (the rule's floor), and a
    float count was rounded as if it were one."""
    with pytest.raises(exc) as info:
        round_filters(*args)
    assert fragment in str(info.value), f"round_filters{args} raised {info.value!r}"


@pytest.mark.parametrize(
    ("args", "exc", "fragment"),
    [
        ((0, 1.0), ValueError, "Expected repeats >= 1, received repeats=0"),
        ((-2, 1.0), ValueError, "Expected repeats >= 1, received repeats=-2"),
        ((2.5, 1.0), TypeError, "Expected repeats to be an int, received float 2.5"),
        ((True, 1.1), TypeError, "Expected repeats to be an int, received bool True"),
        ((2, 0.0), ValueError, "Expected depth > 0 and finite, received depth=0.0"),
        ((2, -1.0), ValueError, "received depth=-1.0"),
        ((2, float("nan")), ValueError, "received depth=nan"),
        ((2, math.inf), ValueError, "received depth=inf"),
        ((2, "1.1"), TypeError, "Expected depth to be a real number, received str"),
    ],
    ids=repr,
)
def test_round_repeats_refuses_what_is_no_repeat_count(args, exc, fragment):
    """round_repeats(0, 1.0) and round_repeats(2, 0.0) returned 0 (a stage with no blocks),
    round_repeats(2, -1.0) returned -2 and round_repeats(True, 1.1) 2, silently; NaN and inf
    failed with int()'s messages, which name no argument. round_filters checks the same."""
    with pytest.raises(exc) as info:
        round_repeats(*args)
    assert fragment in str(info.value), f"round_repeats{args} raised {info.value!r}"


def _keras_coefficients() -> dict[str, tuple]:
    """(width, depth, resolution, dropout) of each ``EfficientNetB<i>`` function in the installed
    Keras' keras/src/applications/efficientnet.py: the first four arguments of its
    ``EfficientNet(...)`` call, read from the source (importing Keras would take seconds)."""
    spec = importlib.util.find_spec("keras")
    if spec is None:
        pytest.skip("needs Keras' source (the tensorflow extra)")
    source = Path(spec.submodule_search_locations[0], "src", "applications", "efficientnet.py")
    table = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("EfficientNetB"):
            (call,) = (
                n
                for n in ast.walk(node)
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "EfficientNet"
            )
            table[f"b{node.name[-1]}"] = tuple(ast.literal_eval(a) for a in call.args[:4])
    return table


def test_coefficients_are_keras_applications_table():
    """``COEFFICIENTS`` is public (width, depth, resolution, dropout) and must be Keras' table.
    Some depth changes build identical stages (ceil(1.1 * r) == ceil(1.2 * r) for r <= 4, so B1
    with depth 1.2 has B1's blocks), so only the table itself can pin them."""
    keras = _keras_coefficients()
    assert sorted(keras) == [f"b{i}" for i in range(8)]
    assert COEFFICIENTS == keras


def test_summary_lists_every_layer_and_the_totals():
    arch = kefficientnet("b0", 10, 16, 3)
    text = arch.summary(32)
    trainable, non_trainable = arch.param_count()
    for row in arch.layers(32):
        assert row.name in text, f"summary(32) is missing layer {row.name!r}"
        assert str(row.output_shape) in text, (
            f"summary(32) is missing {row.name}'s shape {row.output_shape}"
        )
    for line in (
        f"Total params: {trainable + non_trainable:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {non_trainable:,}",
        f"MACs (conv + dense): {arch.macs(32):,}",
    ):
        assert line in text, f"summary(32) is missing {line!r}"
    names = [r.name for r in arch.layers(32)]
    assert len(names) == len(set(names)), "layer names are not unique"
    assert names[0] == "stem" and names[-1] == "predictions"


# (m, layer): (Cin, Cout, G) worked out by hand from DESIGN.md §1, G = the largest d <=
# max(1, min(Cin, Cout, Cin // m)) dividing both; the comment gives the bound and why d stops.
HAND_GROUPS = {
    (16, "block1a_se_reduce"): (32, 8, 2),  # bound min(32, 8, 2) = 2, divides both
    (16, "block1a_se_expand"): (8, 32, 1),  # 8 // 16 = 0 -> bound 1
    (16, "block2a_se_reduce"): (96, 4, 4),  # bound min(96, 4, 6) = 4, divides both
    (16, "block2b_project"): (144, 24, 8),  # bound 9; 9 does not divide 24
    (16, "block3a_project"): (144, 40, 8),  # bound 9; 9 does not divide 40
    (16, "block5a_project"): (480, 112, 16),  # bound 30; gcd(480, 112) = 16
    (16, "block6a_project"): (672, 192, 32),  # bound 42; gcd = 96, its divisors <= 42: 32
    (16, "block6b_se_expand"): (48, 1152, 3),  # bound 48 // 16 = 3, divides both
    (16, "block7a_project"): (1152, 320, 64),  # bound 72; gcd = 64
    (16, "top"): (320, 1280, 20),  # bound 20, divides both
    (32, "block1a_project"): (32, 16, 1),  # 32 // 32 = 1
    (32, "block2a_se_reduce"): (96, 4, 2),  # bound 3; 3 does not divide 4
    (32, "block5a_project"): (480, 112, 8),  # bound 15; gcd = 16, its divisors <= 15: 8
    (32, "block6b_se_reduce"): (1152, 48, 24),  # bound 36; gcd = 48, its divisors <= 36: 24
    (32, "top"): (320, 1280, 10),  # bound 10, divides both
}


def test_pointwise_lists_every_1x1_layer_row_in_order():
    arch = kefficientnet("b0", 10, 16)
    rows = [r for r in arch.layers(32) if r.op.startswith(("kPointwise", "Conv1x1"))]
    assert list(arch.pointwise()) == [r.name for r in rows]
    assert all(arch.pointwise()[r.name].groups == r.groups for r in rows)
    assert arch.pointwise()["top"] is arch.head.top


@pytest.mark.parametrize(("m", "layer"), list(HAND_GROUPS))
def test_kefficientnet_b0_groups_worked_by_hand(m, layer):
    """Each site's (Cin, Cout) wiring and its group count, against values derived without
    group_count (the hypothesis test above compares the architecture with group_count itself)."""
    arch = kefficientnet("b0", 10, m)
    spec = arch.pointwise()[layer]
    assert (spec.cin, spec.cout, spec.groups) == HAND_GROUPS[m, layer], (
        f"{layer} (Cin, Cout, G) = {(spec.cin, spec.cout, spec.groups)}, but should be "
        f"{HAND_GROUPS[m, layer]} [kefficientnet('b0', 10, {m})]"
    )


def test_param_names_are_unique_and_layouts_keras():
    shapes = kefficientnet("b0", 10, 16).param_shapes()
    assert shapes["stem_conv/kernel"] == ((3, 3, 3, 32), True)
    assert shapes["block1a_dwconv/kernel"] == ((3, 3, 32, 1), True)
    assert shapes["block6b_project/conv/kernel"] == ((1, 1, 1152 // 64, 192), True)
    assert shapes["predictions/kernel"] == ((1280, 10), True)
    assert shapes["stem_bn/moving_variance"] == ((32,), False)


def test_builders_default_to_the_design_signatures():
    """DESIGN.md §3: ``efficientnet(variant="b0", num_classes=1000, skip_stride_cnt=-1)`` and
    ``kefficientnet(variant="b0", num_classes=1000, min_channels_per_group=16,
    skip_stride_cnt=-1)``; ``by_name`` takes the same defaults."""
    k, e = kefficientnet(), efficientnet()
    got = (k.family, k.variant, k.num_classes, k.min_channels_per_group, k.skip_stride_cnt)
    assert got == ("kefficientnet", "b0", 1000, 16, -1), f"kefficientnet() builds {got}"
    got = (e.family, e.variant, e.num_classes, e.skip_stride_cnt)
    assert got == ("efficientnet", "b0", 1000, -1), f"efficientnet() builds {got}"
    assert k.stem.stride == 2 and e.stem.stride == 2, "skip_stride_cnt=-1 keeps the stem stride 2"
    assert by_name("kefficientnet-b0") == k and by_name("efficientnet-b0") == e


def test_by_name_and_without_dropout():
    assert by_name("kefficientnet-b0", 10, 32, 3) == kefficientnet("b0", 10, 32, 3)
    assert by_name("efficientnet-b2", 5) == efficientnet("b2", 5)
    arch = without_dropout(kefficientnet("b0", 10))
    assert arch.head.dropout == 0.0 and all(b.drop_rate == 0.0 for b in arch.blocks)
    assert arch.param_count() == kefficientnet("b0", 10).param_count()
    assert set(VARIANTS) == {f"b{i}" for i in range(8)}


@pytest.mark.parametrize(
    ("call", "thunk", "exc", "fragment"),
    [
        (
            "kefficientnet(m=0)",
            lambda: kefficientnet("b0", 10, 0),
            ValueError,
            "min_channels_per_group >= 1",
        ),
        (
            "kefficientnet(m=1.5)",
            lambda: kefficientnet("b0", 10, 1.5),
            TypeError,
            "min_channels_per_group to be an int",
        ),
        ("efficientnet('b8')", lambda: efficientnet("b8"), ValueError, "received variant='b8'"),
        (
            "efficientnet(num_classes=0)",
            lambda: efficientnet("b0", 0),
            ValueError,
            "num_classes >= 1",
        ),
        (
            "efficientnet(skip=-2)",
            lambda: efficientnet("b0", 10, -2),
            ValueError,
            "skip_stride_cnt=-2",
        ),
        (
            "by_name('resnet50')",
            lambda: by_name("resnet50"),
            ValueError,
            "received model='resnet50'",
        ),
        (
            "by_name('efficientnet-b0', min_channels_per_group=0)",  # unused there, still a bug
            lambda: by_name("efficientnet-b0", 10, 0),
            ValueError,
            "min_channels_per_group >= 1",
        ),
        (
            "efficientnet(num_classes=True)",  # an int to Python: it would build a 1-class head
            lambda: efficientnet("b0", True),
            TypeError,
            "Expected num_classes to be an int, received bool True",
        ),
        (
            "efficientnet(num_classes=10.0)",
            lambda: efficientnet("b0", 10.0),
            TypeError,
            "Expected num_classes to be an int, received float 10.0",
        ),
        (
            "kefficientnet(num_classes=True)",
            lambda: kefficientnet("b0", True),
            TypeError,
            "Expected num_classes to be an int, received bool True",
        ),
        (
            "kefficientnet(m=True)",
            lambda: kefficientnet("b0", 10, True),
            TypeError,
            "Expected min_channels_per_group to be an int, received bool True",
        ),
        (
            "kefficientnet(m='16')",
            lambda: kefficientnet("b0", 10, "16"),
            TypeError,
            "Expected min_channels_per_group to be an int, received str '16'",
        ),
        (
            "efficientnet(skip=True)",
            lambda: efficientnet("b0", 10, True),
            TypeError,
            "Expected skip_stride_cnt to be an int, received bool True",
        ),
        (
            "by_name('efficientnet-b0', min_channels_per_group=True)",
            lambda: by_name("efficientnet-b0", 10, True),
            TypeError,
            "Expected min_channels_per_group to be an int, received bool True",
        ),
        (
            "by_name('efficientnet-b0', min_channels_per_group=1.5)",
            lambda: by_name("efficientnet-b0", 10, 1.5),
            TypeError,
            "Expected min_channels_per_group to be an int, received float 1.5",
        ),
        (
            "by_name('efficientnet-b0', min_channels_per_group=-4)",
            lambda: by_name("efficientnet-b0", 10, -4),
            ValueError,
            "Expected min_channels_per_group >= 1, received min_channels_per_group=-4",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_arch_bad_arguments(call, thunk, exc, fragment):
    with pytest.raises(exc) as info:
        thunk()
    assert fragment in str(info.value), (
        f"{call} raised {info.value!r}, which does not mention {fragment!r}"
    )


@pytest.mark.parametrize(
    ("size", "exc", "fragment"),
    [
        (0, ValueError, "Expected input_size >= 8, received input_size=0"),  # was the default
        (-3, ValueError, "received input_size=-3"),
        (5, ValueError, "Expected input_size >= 8, received input_size=5"),
        (32.5, TypeError, "Expected input_size to be an int, received float 32.5"),
        (True, TypeError, "received bool True"),
        ("32", TypeError, "received str '32'"),
    ],
)
@pytest.mark.parametrize("method", ["layers", "macs", "feature_size", "summary"])
def test_bad_input_size_is_rejected_by_every_method(method, size, exc, fragment):
    arch = kefficientnet("b0", 10, 16, 3)
    with pytest.raises(exc) as info:
        getattr(arch, method)(size)
    assert fragment in str(info.value), (
        f"{method}(input_size={size!r}) raised {info.value!r}, which does not mention {fragment!r}"
    )


def test_input_size_none_means_the_variant_resolution():
    arch = kefficientnet("b1", 10)
    assert arch.layers() == arch.layers(arch.resolution) == arch.layers(np.int64(240))
    assert arch.macs() == arch.macs(240) and arch.summary() == arch.summary(240)
    assert arch.macs(8) > 0  # the smallest accepted size


def test_with_dropout_sets_keras_rates_and_keeps_the_rest():
    arch = efficientnet("b3", 10)
    assert with_dropout(arch) == arch
    assert with_dropout(arch, arch.head.dropout, DROP_CONNECT_RATE) == arch
    changed = with_dropout(arch, dropout=0.5, drop_connect_rate=0.1)
    n = len(arch.blocks)
    assert changed.head.dropout == 0.5
    assert [b.drop_rate for b in changed.blocks] == [0.1 * i / n for i in range(n)]
    assert changed.param_count() == arch.param_count()
    assert without_dropout(arch) == with_dropout(arch, 0.0, 0.0)
    with pytest.raises(ValueError, match="0 <= drop_connect_rate < 1, received"):
        with_dropout(arch, drop_connect_rate=1.0)


def test_checked_arguments_are_stored_as_python_ints():
    """``num_classes=np.int64(10)`` used to be stored as given: not JSON-serialisable."""
    arch = kefficientnet("b0", np.int64(10), np.int64(16), np.int64(3))
    assert type(arch.num_classes) is int and type(arch.min_channels_per_group) is int
    assert type(arch.skip_stride_cnt) is int
    json.dumps(arch.num_classes)
    with pytest.raises(TypeError, match="skip_stride_cnt to be an int"):
        efficientnet("b0", 10, skip_stride_cnt=1.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda v: efficientnet(v), "variant"),
        (lambda v: kefficientnet(v), "variant"),
        (lambda v: by_name(v), "model"),
    ],
    ids=["efficientnet", "kefficientnet", "by_name"],
)
@pytest.mark.parametrize("bad", [["b0"], {"b0": 1}, np.array(["b0", "b1"]), "B0"], ids=repr)
def test_unknown_names_list_the_valid_ones(call, name, bad):
    """A list or dict used to fail with 'unhashable type: list', an array with NumPy's
    'truth value of an array ... is ambiguous': neither names the argument or the choices."""
    with pytest.raises(ValueError) as info:
        call(bad)
    message = str(info.value)
    assert f"Expected {name} in " in message and "b7'" in message, message
    assert f"received {name}=" in message, message


def test_a_stride_2_block_has_no_shortcut_even_when_channels_match():
    """The identity shortcut needs the output shape of the input: stride 2 halves H and W, so a
    block with cin == cout and stride 2 is not residual."""
    block = next(b for b in efficientnet("b0", 10).blocks if b.residual)
    assert block.cin == block.cout and block.stride == 1
    strided = replace(block, stride=2)
    assert isinstance(strided, MBConvSpec) and not strided.residual


def test_param_shapes_are_in_network_order():
    """``param_shapes()`` is documented to be in network order: stem, then the blocks in order,
    then top and predictions last."""
    names = list(kefficientnet("b0", 10, 16).param_shapes())
    assert names[0] == "stem_conv/kernel"
    assert names[-2:] == ["predictions/kernel", "predictions/bias"]
    layers = []
    for n in names:
        layer = n.split("/")[0].split("_")[0]
        if not layers or layers[-1] != layer:
            layers.append(layer)
    blocks = [f"block{i}{c}" for i, c in (
        (1, "a"), (2, "a"), (2, "b"), (3, "a"), (3, "b"), (4, "a"), (4, "b"), (4, "c"),
        (5, "a"), (5, "b"), (5, "c"), (6, "a"), (6, "b"), (6, "c"), (6, "d"), (7, "a"),
    )]  # fmt: skip
    assert layers == ["stem", *blocks, "top", "predictions"], layers


def _rows(arch, size):
    return {r.name: r for r in arch.layers(size)}


def test_efficientnet_pointwise_rows_are_plain_1x1_convs():
    """EfficientNet's pointwise convs are ungrouped: their rows say Conv1x1, never kPointwise."""
    rows = [r for r in efficientnet("b0", 10).layers(224) if r.name in efficientnet().pointwise()]
    assert len(rows) == 16 * 3 + 15 + 1  # se_reduce, se_expand, project each; 15 expands; top
    assert {r.op for r in rows} == {"Conv1x1"} and {r.groups for r in rows} == {1}


@pytest.mark.parametrize(
    ("layer", "op"),
    [
        # (Cin, Cout, G) from DESIGN.md §1 (m=16): interleave iff Cout // G > 1, conv2 iff
        # Cin >= Cout.
        ("block1a_se_reduce", "kPointwise+interleave+conv2"),  # 32 -> 8, G=2: 4 per group
        ("block2a_se_reduce", "kPointwise+conv2"),  # 96 -> 4, G=4: 1 per group
        ("top", "kPointwise+interleave"),  # 320 -> 1280, G=20: Cin < Cout
        ("block1a_se_expand", "Conv1x1"),  # 8 -> 32, G=1
        ("block7a_project", "kPointwise+interleave+conv2"),  # 1152 -> 320, G=64: 5 per group
    ],
)
def test_kpointwise_row_ops_name_the_steps_taken(layer, op):
    row = _rows(kefficientnet("b0", 10, 16), 224)[layer]
    assert row.op == op, f"{layer} op {row.op!r}, but should be {op!r}"


def test_row_output_shapes_worked_by_hand():
    """B0 at 224 (no skip): 112 after the stem and block1, 56 after block2a, 7 at the end; SE
    convs at 1x1; pointwise rows carry their *output* channels; the dense row the classes."""
    rows = _rows(kefficientnet("b0", 10, 16), 224)
    expected = {
        "stem": (112, 112, 32),
        "block1a_dwconv": (112, 112, 32),
        "block1a_se_reduce": (1, 1, 8),
        "block1a_se_expand": (1, 1, 32),
        "block1a_project": (112, 112, 16),
        "block2a_expand": (112, 112, 96),
        "block2a_dwconv": (56, 56, 96),
        "block2a_project": (56, 56, 24),
        "top": (7, 7, 1280),
        "avg_pool": (1, 1, 1280),
        "top_dropout": (1, 1, 1280),
        "predictions": (1, 1, 10),
    }
    got = {name: rows[name].output_shape for name in expected}
    assert got == expected


def test_depthwise_rows_have_one_group_per_channel():
    """A depthwise conv is a grouped conv with groups == channels (96 for block2a: 16 * 6)."""
    arch = efficientnet("b0", 10)
    rows = _rows(arch, 224)
    assert rows["block2a_dwconv"].groups == 96 and rows["block1a_dwconv"].groups == 32
    for b in arch.blocks:
        assert rows[f"{b.name}_dwconv"].groups == b.cin * (1 if b.expand is None else 6)


@pytest.mark.parametrize(("skip", "stride"), [(-1, 2), (0, 1), (3, 1)])
def test_stem_and_dropout_row_ops_show_stride_and_rate(skip, stride):
    rows = _rows(efficientnet("b2", 10, skip), 64)
    assert rows["stem"].op == f"Conv3x3/{stride}+BN+swish"
    assert rows["stem"].groups == 1, "the stem is a full (ungrouped) 3x3 conv"
    assert rows["top_dropout"].op == "Dropout(0.3)"  # B2's head dropout (keras.applications)


@pytest.mark.parametrize("skip", [-1, 0, 3])
@pytest.mark.parametrize("family", ["efficientnet", "kefficientnet"])
def test_by_name_passes_skip_stride_cnt_to_either_family(family, skip):
    """``gpconv summary/train --skip-stride 3`` builds through by_name: both families must get
    the stride-1 stem (DESIGN.md §1: any n >= 0) and keep the count they were given."""
    arch = by_name(f"{family}-b0", 10, 16, skip)
    assert arch.skip_stride_cnt == skip and arch.family == family
    want = 1 if skip >= 0 else 2
    assert arch.stem.stride == want, f"{arch.name} stem stride {arch.stem.stride}, want {want}"
    assert by_name(f"{family}-b0", 10).skip_stride_cnt == -1, "by_name's default is no skip"


def test_require_arch_truncates_long_reprs_at_60_characters():
    fits = "x" * 58  # repr is 60 characters: shown whole
    with pytest.raises(TypeError) as info:
        require_arch(fits)
    assert str(info.value).endswith(f"received str {fits!r}"), str(info.value)
    long = "y" * 59  # repr is 61 characters: the first 57, then "..."
    with pytest.raises(TypeError) as info:
        require_arch(long)
    assert str(info.value).endswith("received str '" + "y" * 56 + "..."), str(info.value)


@pytest.mark.parametrize(
    ("dropout", "exc", "fragment"),
    [
        (1.0, ValueError, "Expected 0 <= dropout < 1, received dropout=1.0"),
        (-0.1, ValueError, "received dropout=-0.1"),
        (float("nan"), ValueError, "received dropout=nan"),
        ("0.5", TypeError, "Expected dropout to be a real number, received str"),
        (True, TypeError, "Expected dropout to be a real number, received bool"),
    ],
)
def test_with_dropout_checks_the_head_rate(dropout, exc, fragment):
    with pytest.raises(exc) as info:
        with_dropout(efficientnet("b0", 10), dropout=dropout)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("call", ["with_dropout", "without_dropout"])
def test_dropout_setters_refuse_a_model_name_by_type(call):
    """A name where the Architecture belongs is a TypeError naming ``arch`` (require_arch), not
    an AttributeError about ``.blocks``."""
    setter = {"with_dropout": with_dropout, "without_dropout": without_dropout}[call]
    with pytest.raises(TypeError, match="Expected arch to be a gpconv.core.arch.Architecture"):
        setter("kefficientnet-b0")


def test_by_name_lists_the_model_names_sorted():
    with pytest.raises(ValueError) as info:
        by_name("effnet-b0")
    names = [f"{f}-b{i}" for f in ("efficientnet", "kefficientnet") for i in range(8)]
    assert f"Expected model in {names}, received model='effnet-b0'" == str(info.value)
