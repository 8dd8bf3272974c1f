"""The paper's and keras.applications' facts, pinned with values derived independently of gpconv.

Every expected value here comes from keras.applications itself (built in the test), from the
published EfficientNet/kEffNet coefficients, from numbers measured once on keras.applications or
published by torchvision, written down below; none is copied from gpconv's own output. What each
test guards:

* forward equality with ``keras.applications.EfficientNetB0/B2`` under the same random weights,
  which catches name, layout, padding, BN-epsilon and activation differences at once;
* the filter/repeat rounding helpers, per-variant dropout, resolution and block counts;
* parameter counts of B0–B7 for 10 and 1000 classes (test_arch.py pins B0 at 10/100 classes and
  asks Keras for B0–B7 at 10 classes; these constants need no Keras);
* B0–B7 trainable counts and MACs against torchvision's published weights metadata;
* the depthwise feature-map sizes at 224 (no skip) and at 32 with ``skip_stride_cnt=3``;
* kEffNet keeping EfficientNet's pointwise settings at every site (only the top activation
  differs) and, with every group count 1, computing EfficientNet's network up to that activation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import fmt

from gpconv.core import network
from gpconv.core.arch import (
    VARIANTS,
    efficientnet,
    kefficientnet,
    round_filters,
    round_repeats,
)

# --- keras.applications as the oracle for a whole forward pass ---------------------------------

A1_INPUT = (33, 33, 3)  # odd, so the stride-2 correct_pad pads (1, 1), not (0, 1)
A1_CLASSES = 10


def _keras_app_weight(keras_model, canonical: str):
    """The keras.applications variable behind a canonical name (``block2a_expand/conv/kernel``
    -> layer ``block2a_expand_conv``, variable ``kernel``). keras.applications names its pointwise
    layers ``X_expand_conv``/``X_expand_bn``, ``X_project_conv``/``X_project_bn``, ``X_se_reduce``,
    ``X_se_expand``, ``top_conv``/``top_bn``; every other layer keeps the canonical layer name."""
    parts = canonical.split("/")
    if len(parts) == 2:
        layer, param = parts
    else:
        outer, inner, param = parts
        if inner == "conv" and outer.endswith(("_se_reduce", "_se_expand")):
            layer = outer
        else:
            layer = f"{outer}_{inner}"
    return getattr(keras_model.get_layer(layer), param)


def _random_like(params: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Random values for every parameter: kernels ~ N(0, 1/fan_in), BN gamma ~ 1 ± 0.1, beta,
    moving mean and biases ~ N(0, 0.1²), moving variance ~ U(0.5, 1.5) (positive), so that every
    weight, statistic and SE bias matters."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, v in params.items():
        p = name.rsplit("/", 1)[1]
        if p == "kernel":
            fan_in = v.shape[0] if v.ndim == 2 else math.prod(v.shape[:3])
            if name.endswith("_dwconv/kernel"):  # (k, k, C, 1): each channel sees k*k inputs
                fan_in = v.shape[0] * v.shape[1]
            value = rng.standard_normal(v.shape) / np.sqrt(fan_in)
        elif p == "gamma":
            value = 1.0 + 0.1 * rng.standard_normal(v.shape)
        elif p == "moving_variance":
            value = rng.uniform(0.5, 1.5, v.shape)
        else:  # beta, moving_mean, bias
            value = 0.1 * rng.standard_normal(v.shape)
        out[name] = value.astype(np.float32)
    return out


@pytest.mark.parametrize("variant", ["b0", pytest.param("b2", marks=pytest.mark.slow)])
def test_forward_equals_keras_applications(variant):
    """gpconv's Keras EfficientNet and keras.applications' give the same block outputs and
    logits for the same random weights (BN statistics and SE biases included), in inference mode.
    keras.applications starts with Rescaling(1/255) and a Normalization layer that, with
    ``weights=None``, holds mean 0 and variance 1 (checked here): feeding it
    ``255 * x`` gives it gpconv's input ``x``."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import gpconv.backends.tensorflow as tfb
    from gpconv.backends.tensorflow.params import export_params, load_params

    keras.backend.clear_session()
    ours = getattr(tfb, f"EfficientNet{variant.upper()}")(input_shape=A1_INPUT, classes=A1_CLASSES)
    theirs = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, input_shape=A1_INPUT, classes=A1_CLASSES, classifier_activation=None
    )
    config = fmt(dict(variant=variant, input_shape=A1_INPUT, classes=A1_CLASSES))

    norm = [layer for layer in theirs.layers if isinstance(layer, keras.layers.Normalization)]
    assert len(norm) == 1, f"keras.applications has {len(norm)} Normalization layers {config}"
    mean, variance = (np.asarray(w) for w in (norm[0].mean, norm[0].variance))
    assert np.all(mean == 0.0) and np.all(variance == 1.0), (
        f"keras.applications' Normalization has mean {mean.ravel()}, variance "
        f"{variance.ravel()}, but the test assumes the identity {config}"
    )

    params = _random_like(export_params(ours), seed=int(variant[1:]))
    load_params(ours, params)
    assigned = set()
    for name, value in params.items():
        var = _keras_app_weight(theirs, name)
        assert tuple(var.shape) == value.shape, (
            f"keras.applications {var.path} has shape {tuple(var.shape)}, canonical {name} "
            f"{value.shape} {config}"
        )
        var.assign(value)
        assigned.add(id(var))
    assigned |= {id(w) for w in norm[0].weights}  # the identity, checked above
    missed = [w.path for w in theirs.weights if id(w) not in assigned]
    assert not missed, f"keras.applications weights with no canonical name: {missed} {config}"

    # Not only the logits: a deep random network forgets its early layers (a wrong SE bias in
    # block4b moves the logits by ~3e-7), so every block's depthwise activation, SE product and
    # output, the top feature map and the logits are compared, each against its own scale.
    sites = [("stem_activation", "stem_activation")]
    for layer in theirs.layers:
        if layer.name.endswith(("_activation", "_se_excite", "_add")) and layer.name not in (
            "stem_activation",
            "top_activation",
        ):
            if not layer.name.endswith("_expand_activation"):
                sites.append((layer.name, layer.name))
        elif layer.name.endswith("_project_bn"):
            block = layer.name[: -len("_project_bn")]
            sites.append((f"{block}_project", layer.name))
    sites += [("top", "top_activation"), (ours.layers[-1].name, theirs.layers[-1].name)]
    probe = {
        name: keras.Model(model.input, [model.get_layer(n).output for n in names])
        for name, model, names in (
            ("ours", ours, [a for a, _ in sites]),
            ("theirs", theirs, [b for _, b in sites]),
        )
    }
    x = np.random.default_rng(100).standard_normal((2, *A1_INPUT)).astype(np.float32)
    got = [np.asarray(a) for a in probe["ours"](x, training=False)]
    want = [np.asarray(a) for a in probe["theirs"](255.0 * x, training=False)]
    assert want[-1].shape == (2, A1_CLASSES), f"logits {want[-1].shape} {config}"
    for (a, b), g, w in zip(sites, got, want):
        assert g.shape == w.shape, f"{a} {g.shape} vs keras.applications {b} {w.shape} {config}"
        scale = float(np.max(np.abs(w)))
        assert scale > 1e-3, f"keras.applications {b} is ~0 (max {scale:.1e}) {config}"
        err = float(np.max(np.abs(g - w))) / scale
        assert err <= 1e-4, (
            f"gpconv {a} vs keras.applications {b}: max|diff| / max|ref| = {err:.1e} > 1e-4 "
            f"{config}"
        )


# --- coefficients and rounding -----------------------------------------------------------------


def test_rounding_helpers_follow_keras():
    """keras.applications' round_filters/round_repeats: B3's block1 width (16*1.2 = 19.2 rounds
    to 16, which loses more than 10%, so 24), B7's ceil(3.1*r), B1's ceil(1.1) = 2."""
    assert round_filters(16, 1.2) == 24, f"round_filters(16, 1.2) = {round_filters(16, 1.2)}"
    got = [round_repeats(r, 3.1) for r in (1, 2, 3, 4)]
    assert got == [4, 7, 10, 13], f"[round_repeats(r, 3.1) for r in 1..4] = {got}"
    assert round_repeats(1, 1.1) == 2, f"round_repeats(1, 1.1) = {round_repeats(1, 1.1)}"


DROPOUT = dict(zip(VARIANTS, (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5)))
RESOLUTION = dict(zip(VARIANTS, (224, 240, 260, 300, 380, 456, 528, 600)))
BLOCKS = dict(zip(VARIANTS, (16, 23, 23, 26, 32, 39, 45, 55)))


def test_variants_are_b0_to_b7():
    assert tuple(VARIANTS) == tuple(f"b{i}" for i in range(8)), f"VARIANTS = {VARIANTS}"


@pytest.mark.parametrize("family", ["efficientnet", "kefficientnet"])
@pytest.mark.parametrize("variant", list(DROPOUT))
def test_variant_dropout_resolution_and_block_count(family, variant):
    arch = (efficientnet if family == "efficientnet" else kefficientnet)(variant, 10)
    config = fmt(dict(family=family, variant=variant))
    assert arch.head.dropout == DROPOUT[variant], (
        f"head dropout {arch.head.dropout}, but should be {DROPOUT[variant]} {config}"
    )
    assert arch.resolution == RESOLUTION[variant], (
        f"resolution {arch.resolution}, but should be {RESOLUTION[variant]} {config}"
    )
    assert len(arch.blocks) == BLOCKS[variant], (
        f"{len(arch.blocks)} MBConv blocks, but should be {BLOCKS[variant]} {config}"
    )


# --- parameter counts (measured on keras.applications, Keras 3) --------------------------------

# variant: (trainable with 10 classes, trainable with 1000 classes, non-trainable). Keras's
# own non-trainable count is 7 higher (its input Normalization layer's mean, variance, count).
KERAS_COUNTS = {
    "b0": (4_020_358, 5_288_548, 42_016),
    "b1": (6_525_994, 7_794_184, 62_048),
    "b2": (7_715_084, 9_109_994, 67_568),
    "b3": (10_711_602, 12_233_232, 87_296),
    "b4": (17_566_546, 19_341_616, 125_200),
    "b5": (28_361_274, 30_389_784, 172_736),
    "b6": (40_758_754, 43_040_704, 224_432),
    "b7": (63_812_570, 66_347_960, 310_720),
}


def _count(shapes) -> tuple[int, int]:
    """``(trainable, non_trainable)`` summed from ``param_shapes()`` (not ``param_count()``)."""
    trainable = sum(math.prod(s) for s, t in shapes.values() if t)
    return trainable, sum(math.prod(s) for s, t in shapes.values() if not t)


@pytest.mark.parametrize("variant", list(KERAS_COUNTS))
def test_parameter_counts_equal_keras_applications(variant):
    trainable10, trainable1000, non_trainable = KERAS_COUNTS[variant]
    for classes, trainable in ((10, trainable10), (1000, trainable1000)):
        arch = efficientnet(variant, classes)
        got = _count(arch.param_shapes())
        assert got == (trainable, non_trainable), (
            f"efficientnet({variant!r}, {classes}).param_shapes() counts {got}, but "
            f"keras.applications has {(trainable, non_trainable)}"
        )
        assert arch.param_count() == got, (
            f"efficientnet({variant!r}, {classes}).param_count() = {arch.param_count()}, "
            f"but its param_shapes() sum to {got}"
        )


# --- B0-B7 against torchvision's published metadata ---------------------------------------------

# torchvision's EfficientNet_B{0..7}_Weights.IMAGENET1K_V1.meta (1000 classes): its eval crop size,
# "num_params" (parameters(), so no BN running statistics: our trainable count) and "_ops", the
# GFLOPS of one image, which torchvision counts as the multiply-accumulates of its conv and linear
# layers, rounded to 3 decimals: the quantity Architecture.macs computes. torchvision pads k//2
# on every side where Keras uses correct_pad, but for stride 2 both give ceil(n/2) (and stride 1
# keeps n), so the feature maps are equal. B2's crop is 288 there (Keras's resolution is 260).
# E.g. B0 at 224: stem 112*112*27*32 = 10,838,016, depthwise 34,532,064, 1x1 convs 339,164,672,
# dense 1280*1000 = 1,280,000; 385,814,752 in all = 0.386 G.
TORCHVISION_META = {
    "b0": (224, 5_288_548, 0.386),
    "b1": (240, 7_794_184, 0.687),
    "b2": (288, 9_109_994, 1.088),
    "b3": (300, 12_233_232, 1.827),
    "b4": (380, 19_341_616, 4.394),
    "b5": (456, 30_389_784, 10.266),
    "b6": (528, 43_040_704, 19.068),
    "b7": (600, 66_347_960, 37.746),
}


@pytest.mark.parametrize("variant", list(TORCHVISION_META))
def test_params_and_macs_equal_torchvision_metadata(variant):
    """The MACs of B1-B7 are pinned nowhere else (B0's are DESIGN.md's); torchvision's published
    cost is an oracle independent of both Keras and gpconv, and needs no torchvision install."""
    size, num_params, gmacs = TORCHVISION_META[variant]
    arch = efficientnet(variant, 1000)
    trainable, _ = arch.param_count()
    assert trainable == num_params, (
        f"efficientnet({variant!r}, 1000) trainable = {trainable:,}, but torchvision's "
        f"num_params is {num_params:,}"
    )
    got = arch.macs(size)
    assert round(got / 1e9, 3) == gmacs, (
        f"efficientnet({variant!r}, 1000).macs({size}) = {got:,} = {got / 1e9:.4f} G, but "
        f"torchvision's _ops is {gmacs} G"
    )


# --- depthwise feature-map sizes ---------------------------------------------------------------

# B0's stages from the paper/keras.applications: (repeats, stride of the first block).
B0_STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))


def _tf_dwconv_sizes(size: int, skip_stride_cnt: int) -> list[int]:
    """B0's depthwise output sizes from TF arithmetic alone. The stem is a 3×3 VALID conv after
    Keras's correct_pad, ``(k//2 - (1 - size % 2), k//2) = (size % 2, 1)`` zeros: with stride 2
    that gives ``ceil(size / 2)`` (as TF 'same'); with stride 1 (skip) ``size + pads - 2``, i.e.
    an even size loses one pixel (32 -> 31). Stride-2 depthwise convs give ``ceil(n / 2)``,
    stride-1 ones keep ``n``; ``skip_stride_cnt = s`` makes the first ``s`` stages stride 1."""
    if skip_stride_cnt >= 0:
        n = size + size % 2 + 1 - 2
    else:
        n = -(-size // 2)
    sizes = []
    for i, (repeats, stride) in enumerate(B0_STAGES):
        for j in range(repeats):
            s = stride if j == 0 and i >= skip_stride_cnt else 1
            n = -(-n // 2) if s == 2 else n
            sizes.append(n)
    return sizes


def _dwconv_sizes(arch, size: int) -> list[int]:
    rows = [r for r in arch.layers(size) if r.name.endswith("_dwconv")]
    assert all(r.output_shape[0] == r.output_shape[1] for r in rows), rows
    return [r.output_shape[0] for r in rows]


@pytest.mark.parametrize(
    ("size", "skip", "expected"),
    [
        (32, 3, [31] * 5 + [16] * 6 + [8] * 5),
        (224, -1, [112, 56, 56, 28, 28] + [14] * 6 + [7] * 5),
    ],
)
@pytest.mark.parametrize("family", ["efficientnet", "kefficientnet"])
def test_depthwise_output_sizes(family, size, skip, expected):
    """The paper's CIFAR feature maps 31 -> 16 -> 8 at 32 px with skip 3, and ImageNet's
    112 -> 56 -> 28 -> 14 -> 7 at 224, from the literal lists and from the TF arithmetic."""
    assert _tf_dwconv_sizes(size, skip) == expected, "the test's own derivation disagrees"
    arch = (efficientnet if family == "efficientnet" else kefficientnet)(
        "b0", 10, skip_stride_cnt=skip
    )
    got = _dwconv_sizes(arch, size)
    assert got == expected, (
        f"_dwconv output sizes {got}, but should be {expected} "
        f"{fmt(dict(family=family, size=size, skip_stride_cnt=skip))}"
    )


@pytest.mark.parametrize("skip", [-1, 0, 1, 2, 3, 4, 7])
@pytest.mark.parametrize("size", [8, 31, 32, 33, 57, 64, 100])
def test_depthwise_output_sizes_follow_tf_arithmetic(size, skip):
    """Odd and even sizes and every skip count, against the test's own TF arithmetic."""
    expected = _tf_dwconv_sizes(size, skip)
    for arch in (efficientnet("b0", 10, skip), kefficientnet("b0", 10, 16, skip)):
        got = _dwconv_sizes(arch, size)
        assert got == expected, (
            f"{arch.name} _dwconv output sizes {got}, but should be {expected} "
            f"{fmt(dict(size=size, skip_stride_cnt=skip))}"
        )


@pytest.mark.parametrize("size", [224, 33])
def test_depthwise_output_sizes_equal_keras_applications(size):
    """keras.applications.EfficientNetB0's ``*_dwconv`` output shapes, at the default 224 and
    at an odd size (where correct_pad pads symmetrically)."""
    keras = pytest.importorskip("keras")
    keras.backend.clear_session()
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3))
    theirs = [
        tuple(layer.output.shape[1:]) for layer in model.layers if layer.name.endswith("_dwconv")
    ]
    ours = [r.output_shape for r in efficientnet("b0").layers(size) if r.name.endswith("_dwconv")]
    assert ours == theirs, (
        f"_dwconv output shapes {ours}, keras.applications {theirs} [size={size}]"
    )
    assert [s[0] for s in ours] == _tf_dwconv_sizes(size, -1)


# --- kEffNet against EfficientNet ----------------------------------------------------------------


def _settings(spec) -> tuple:
    return (spec.bn, spec.activation, spec.bias, spec.cin, spec.cout)


@pytest.mark.parametrize("m", [16, 32])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kefficientnet_keeps_efficientnet_pointwise_settings(variant, m):
    """Every pointwise site of kEffNet has EfficientNet's (bn, activation, bias, cin, cout); the
    top conv's activation is the one difference (none in kEffNet, swish in EfficientNet). Stems
    and depthwise stages are the same."""
    k, e = kefficientnet(variant, 10, m), efficientnet(variant, 10)
    config = fmt(dict(variant=variant, min_channels_per_group=m))
    assert k.stem == e.stem, f"stems differ: {k.stem} vs {e.stem} {config}"
    assert [b.name for b in k.blocks] == [b.name for b in e.blocks], f"block names {config}"
    for kb, eb in zip(k.blocks, e.blocks):
        assert (kb.cin, kb.cout, kb.kernel, kb.stride, kb.channels, kb.drop_rate) == (
            eb.cin,
            eb.cout,
            eb.kernel,
            eb.stride,
            eb.channels,
            eb.drop_rate,
        ), f"{kb.name} depthwise stage differs {config}"
        kp, ep = kb.pointwise(), eb.pointwise()
        assert list(kp) == list(ep), f"{kb.name} pointwise sites {list(kp)} vs {list(ep)} {config}"
        for site in kp:
            assert _settings(kp[site]) == _settings(ep[site]), (
                f"{site}: kEffNet (bn, activation, bias, cin, cout) = {_settings(kp[site])}, "
                f"EfficientNet {_settings(ep[site])} {config}"
            )
    kt, et = k.head.top, e.head.top
    assert (kt.activation, et.activation) == (None, "swish"), (
        f"top activation: kEffNet {kt.activation!r}, EfficientNet {et.activation!r} {config}"
    )
    assert (kt.bn, kt.bias, kt.cin, kt.cout) == (et.bn, et.bias, et.cin, et.cout), (
        f"top conv settings differ {config}"
    )
    assert (k.head.dropout, k.head.num_classes) == (e.head.dropout, e.head.num_classes), config


def test_ungrouped_kefficientnet_is_efficientnet_before_the_top_activation():
    """With every group count 1 (a huge min_channels_per_group) kEffNet-B0 *is* EfficientNet-B0
    except for the top activation: on the same float64 parameters every block output is equal,
    ``swish(kEffNet top) == EfficientNet top``, and EfficientNet's logits are the dense layer on
    the average of ``swish(kEffNet top)``."""
    k = kefficientnet("b0", 10, 10**6, skip_stride_cnt=3)
    e = efficientnet("b0", 10, skip_stride_cnt=3)
    assert k.param_shapes() == e.param_shapes(), "G=1 kEffNet and EfficientNet name params apart"
    rng = np.random.default_rng(7)
    params = _random_like({n: np.zeros(s) for n, (s, _) in e.param_shapes().items()}, seed=7)
    params = {n: v.astype(np.float64) for n, v in params.items()}
    x = rng.standard_normal((2, 32, 32, 3))
    _, k_cache = network.forward(k, params, x)
    e_logits, e_cache = network.forward(e, params, x)
    ki, ei = k_cache["intermediates"], e_cache["intermediates"]
    for b in e.blocks:
        np.testing.assert_allclose(ki[b.name], ei[b.name], rtol=1e-12, atol=1e-12, err_msg=b.name)
    top = np.asarray(ki["top"])
    swished = top / (1.0 + np.exp(-top))
    assert np.max(np.abs(top - swished)) > 1e-2, "kEffNet's top already looks swished"
    np.testing.assert_allclose(
        swished, ei["top"], rtol=1e-12, atol=1e-12, err_msg="swish(kEffNet top) vs EfficientNet top"
    )
    logits = swished.mean(axis=(1, 2)) @ params["predictions/kernel"] + params["predictions/bias"]
    np.testing.assert_allclose(e_logits, logits, rtol=1e-12, atol=1e-12, err_msg="logits")
