"""Whole-network reference (issue 4): float64 gradient checks of the full forward/backward, Keras
running statistics, SGD, dropout/drop-connect with injected masks, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_close,
    calibrated_params,
    check_network_grads,
    drop_masks,
    fmt,
    groups_by_layer,
    naive_conv2d,
    naive_grouped_pointwise,
    random_network_params,
    tiny_architecture,
)

from gpconv.core import network
from gpconv.core.arch import efficientnet, kefficientnet, without_dropout
from gpconv.core.ops import pad_amounts

LABELS = np.array([0, 2])


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, 99]).standard_normal((n, size, size, 3))


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["kefficientnet", "efficientnet"])
@pytest.mark.parametrize("training", [True, False])
def test_tiny_network_gradients_every_tensor(family, training):
    """Every trainable tensor and the input, one random direction each, of a 4-block network
    (stride-1 correct_pad stem, grouped/interleaved/second-conv kPointwise, stride 2 on odd and
    even maps, 3x3 and 5x5 depthwise, SE, drop-connect, dropout) at 8x8, batch 2."""
    arch = tiny_architecture(family)
    masks = drop_masks(arch, 2) if training else None
    config = dict(arch=arch.name, blocks=len(arch.blocks), input=(2, 8, 8, 3), training=training)
    check_network_grads(
        "network.loss_and_grads",
        arch,
        random_network_params(arch),
        images(2, 8),
        LABELS,
        config,
        training,
        masks,
    )


@pytest.mark.parametrize("family", ["kefficientnet", "efficientnet"])
def test_b0_small_input_gradients_per_block(family):
    """The complete B0 table (all 16 blocks, 3 classes, m=4) at 8x8 (skip_stride_cnt=3),
    training mode with masks: one direction through each block's parameters, stem, head, input."""
    arch = (
        kefficientnet("b0", 3, 4, skip_stride_cnt=3)
        if family == "kefficientnet"
        else efficientnet("b0", 3, skip_stride_cnt=3)
    )
    config = dict(arch=arch.name, input=(2, 8, 8, 3), skip_stride_cnt=3, training=True)
    check_network_grads(
        "network.loss_and_grads",
        arch,
        random_network_params(arch),
        images(2, 8),
        LABELS,
        config,
        True,
        drop_masks(arch, 2),
        groups=groups_by_layer(arch),
    )


@pytest.mark.slow
def test_b0_small_input_gradients_every_tensor():
    arch = kefficientnet("b0", 3, 4, skip_stride_cnt=3)
    config = dict(arch=arch.name, input=(2, 8, 8, 3), skip_stride_cnt=3, training=True)
    check_network_grads(
        "network.loss_and_grads",
        arch,
        random_network_params(arch),
        images(2, 8),
        LABELS,
        config,
        True,
        drop_masks(arch, 2),
    )


@pytest.mark.parametrize("training", [True, False])
def test_kefficientnet_b0_32px_directional_derivatives(training):
    """Full kEffNet-B0 16ch, 10 classes, 32x32 (skip 3), batch 2: random directions through all
    parameters at once (twice) and through the input. Inference uses BN statistics calibrated on
    the batch (with the initial 0/1 statistics the activations vanish and the check is void)."""
    arch = kefficientnet("b0", 10, 16, skip_stride_cnt=3)
    x = images(2, 32)
    params = random_network_params(arch)
    params = params if training else calibrated_params(arch, params, x)
    trainable = [k for k, (_, t) in arch.param_shapes().items() if t]
    config = dict(arch=arch.name, input=(2, 32, 32, 3), skip_stride_cnt=3, training=training)
    check_network_grads(
        "network.loss_and_grads",
        arch,
        params,
        x,
        np.array([3, 7]),
        config,
        training,
        drop_masks(arch, 2) if training else None,
        groups={"d[all params]": trainable, "d[all params, again]": trainable},
    )


def test_backward_returns_every_trainable_gradient_with_its_shape():
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = images(2, 8)
    out = network.loss_and_grads(arch, params, x, LABELS, masks=drop_masks(arch, 2))
    shapes = arch.param_shapes()
    assert list(out["grads"]) == [k for k, (_, t) in shapes.items() if t], (
        "grads keys != trainable names"
    )
    for k, g in out["grads"].items():
        assert g.shape == shapes[k][0], (
            f"grads[{k!r}].shape={g.shape}, but should be {shapes[k][0]}"
        )
    assert out["dx"].shape == x.shape, f"dx.shape={out['dx'].shape}, but should be {x.shape}"
    assert out["logits"].shape == (2, 3) and np.ndim(out["loss"]) == 0


# --- batch-norm running statistics (Keras) ---------------------------------------------------


def test_running_statistics_update_as_keras():
    """Computed independently: the stem BN sees conv(x) (naive loop, correct_pad) and the top BN
    sees the grouped conv of the last block's output; each moving stat becomes
    0.99 * old + 0.01 * batch (biased variance)."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = images(3, 8)
    _, cache = network.forward(arch, params, x, training=True, masks=drop_masks(arch, 3))
    stats = cache["moving_stats"]
    assert set(stats) == {k for k, (_, t) in arch.param_shapes().items() if not t}, (
        "moving_stats keys differ from the non-trainable parameters [training=True]"
    )
    pads = tuple(pad_amounts(s, 3, arch.stem.stride, "correct") for s in x.shape[1:3])
    stem = naive_conv2d(x, params["stem_conv/kernel"], arch.stem.stride, pads)
    top = naive_grouped_pointwise(
        cache["intermediates"][arch.blocks[-1].name],
        params["top/conv/kernel"],
        None,
        arch.head.top.groups,
    )
    for bn, pre in (("stem_bn", stem), ("top/bn", top)):
        axes = (0, 1, 2)
        assert_close(
            "network.forward",
            f"moving_stats['{bn}/moving_mean']",
            stats[f"{bn}/moving_mean"],
            0.99 * params[f"{bn}/moving_mean"] + 0.01 * pre.mean(axis=axes),
            {"training": True},
            1e-12,
        )
        assert_close(
            "network.forward",
            f"moving_stats['{bn}/moving_variance']",
            stats[f"{bn}/moving_variance"],
            0.99 * params[f"{bn}/moving_variance"] + 0.01 * pre.var(axis=axes),
            {"training": True},
            1e-12,
        )
    _, cache = network.forward(arch, params, x, training=False)
    assert cache["moving_stats"] == {}, "network.forward(training=False) returned moving statistics"


# --- SGD --------------------------------------------------------------------------------------


def test_sgd_steps_lower_the_loss_on_a_fixed_batch():
    arch = without_dropout(tiny_architecture())
    params = network.init_params(arch, seed=0, dtype=np.float64)
    x, labels = images(4, 8, seed=1), np.array([0, 1, 2, 1])
    losses, velocity = [], None
    for _ in range(6):
        out = network.loss_and_grads(arch, params, x, labels)
        losses.append(float(out["loss"]))
        params, velocity = network.sgd_step(
            params,
            out["grads"],
            lr=0.05,
            momentum=0.9,
            velocity=velocity,
            moving_stats=out["moving_stats"],
        )
    assert losses[-1] < 0.8 * losses[0], f"6 SGD steps (lr=0.05, momentum=0.9) gave losses {losses}"


def test_sgd_step_semantics():
    params = {"a": np.array([1.0, 2.0]), "s": np.array([0.0])}
    grads = {"a": np.array([0.5, -1.0])}
    new, vel = network.sgd_step(
        params, grads, lr=0.1, momentum=0.9, moving_stats={"s": np.array([3.0])}
    )
    assert (
        np.allclose(new["a"], [0.95, 2.1])
        and np.allclose(vel["a"], [-0.05, 0.1])
        and new["s"][0] == 3.0
    )
    new2, _ = network.sgd_step(new, grads, lr=0.1, momentum=0.9, velocity=vel)
    assert np.allclose(new2["a"], new["a"] + 0.9 * vel["a"] - 0.1 * grads["a"]), (
        "momentum step v = 0.9 v - lr g"
    )
    assert params["a"][0] == 1.0 and params["s"][0] == 0.0, "sgd_step modified its input params"


SGD_PARAMS = {"a": np.ones((2, 3), np.float32), "s": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    ("kwargs", "exc", "fragments"),
    [
        # (3,) broadcasts onto (2, 3): applied, it would add the same step to both rows.
        ({"grads": {"a": np.ones(3, np.float32)}}, ValueError, ["grads['a']", "shape (2, 3)"]),
        # float64 grads would silently turn float32 parameters into float64 ones.
        ({"grads": {"a": np.ones((2, 3))}}, ValueError, ["expected dtype float32", "float64"]),
        ({"grads": {"typo": np.ones(3, np.float32)}}, ValueError, ["grads['typo']", "not a"]),
        ({"grads": {"a": [[1.0] * 3] * 2}}, ValueError, ["grads['a']", "received list"]),
        ({"grads": [np.ones((2, 3))]}, ValueError, ["grads: expected a dict", "list"]),
        ({"moving_stats": {"s": np.ones(2, np.float32)}}, ValueError, ["moving_stats['s']"]),
        ({"moving_stats": {"t": np.ones(3, np.float32)}}, ValueError, ["moving_stats['t']"]),
        ({"velocity": {"a": np.ones((3, 2), np.float32)}}, ValueError, ["velocity['a']"]),
        ({"lr": float("nan")}, ValueError, ["lr >= 0", "lr=nan"]),
        ({"lr": -0.1}, ValueError, ["lr >= 0", "lr=-0.1"]),
        ({"lr": "0.1"}, TypeError, ["lr to be a real number", "'0.1'"]),
        ({"momentum": float("inf")}, ValueError, ["momentum >= 0", "momentum=inf"]),
    ],
)
def test_sgd_step_refuses_updates_it_cannot_apply(kwargs, exc, fragments):
    args = {"grads": {"a": np.ones((2, 3), np.float32)}, "lr": 0.1, **kwargs}
    with pytest.raises(exc) as info:
        network.sgd_step(SGD_PARAMS, **args)
    for fragment in fragments:
        assert fragment in str(info.value), f"{kwargs}: {info.value!r} lacks {fragment!r}"


def test_sgd_step_refuses_params_that_are_not_a_dict():
    with pytest.raises(TypeError, match=r"params to be a dict \{name: array\}, received list"):
        network.sgd_step([SGD_PARAMS["a"]], {}, lr=0.1)


def test_sgd_step_names_updates_from_another_array_library():
    """A torch gradient for NumPy parameters was reported as 'expected dtype float32, received
    torch.float32', which reads as equal: the library is what differs, and is named."""
    torch = pytest.importorskip("torch")
    grads = {"a": torch.ones(2, 3)}
    with pytest.raises(ValueError, match=r"grads\['a'\]: expected a numpy.ndarray .*torch.Tensor"):
        network.sgd_step(SGD_PARAMS, grads, lr=0.1)
    with pytest.raises(ValueError, match=r"velocity\['a'\]: expected a numpy.ndarray"):
        network.sgd_step(SGD_PARAMS, {}, lr=0.1, velocity=grads)


def test_sgd_step_lists_every_problem_at_once():
    grads = {"a": np.ones(3, np.float32), "b": np.ones(1, np.float32)}
    with pytest.raises(ValueError, match=r"\(2 problems\)"):
        network.sgd_step(SGD_PARAMS, grads, lr=0.1)


# --- dropout and drop-connect -----------------------------------------------------------------


def test_top_dropout_mask_matches_explicit_computation():
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(2, 8)
    masks = drop_masks(arch, 2)
    logits, cache = network.forward(arch, params, x, training=True, masks=masks)
    pooled = cache["intermediates"]["top"].mean(axis=(1, 2))
    rate = arch.head.dropout
    expected = (pooled * masks["top_dropout"] / (1 - rate)) @ params["predictions/kernel"] + params[
        "predictions/bias"
    ]
    assert_close(
        "network.forward", "logits", logits, expected, {"mask": "top_dropout", "rate": rate}
    )


def test_drop_connect_mask_matches_explicit_computation():
    """out = x + mask * project(x) / (1 - rate) per sample; a dropped sample passes x unchanged."""
    arch = tiny_architecture()
    block = next(b for b in arch.blocks if b.residual)
    site, prev = f"{block.name}_drop", arch.blocks[arch.blocks.index(block) - 1].name
    params, x = random_network_params(arch), images(2, 8)
    masks = drop_masks(arch, 2)
    # project(x) from the network without drop-connect (rate 0 adds it unscaled), not from a
    # kept-everywhere run of this one: that scaled it by the rate under test, 1/(1 - rate), and
    # a wrong rate cancelled out of the expected value.
    _, c_plain = network.forward(without_dropout(arch), params, x, training=True, masks=masks)
    _, c_mask = network.forward(arch, params, x, training=True, masks=masks)
    inp = c_plain["intermediates"][prev]
    assert np.array_equal(c_mask["intermediates"][prev], inp), "an earlier site dropped"
    branch = c_plain["intermediates"][block.name] - inp  # project(x)
    expected = inp + masks[site] * branch / (1 - block.drop_rate)
    config = {"site": site, "mask": masks[site].ravel().tolist(), "rate": block.drop_rate}
    assert_close(
        "network.forward",
        f"intermediates[{block.name!r}]",
        c_mask["intermediates"][block.name],
        expected,
        config,
        1e-12,
    )
    dropped = int(np.argmin(masks[site].ravel()))
    assert np.array_equal(c_mask["intermediates"][block.name][dropped], inp[dropped]), (
        f"a dropped sample must pass the block input unchanged {fmt(config)}"
    )


def test_inference_ignores_masks_and_is_deterministic():
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(2, 8)
    zeros = {k: np.zeros_like(v) for k, v in drop_masks(arch, 2).items()}
    plain, _ = network.forward(arch, params, x, training=False)
    masked, _ = network.forward(arch, params, x, training=False, masks=zeros, rng=5)
    assert np.array_equal(plain, masked), "network.forward(training=False) used the masks"


def test_training_masks_from_a_seeded_generator():
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(4, 8)
    a, _ = network.forward(arch, params, x, training=True, rng=3)
    b, _ = network.forward(arch, params, x, training=True, rng=3)
    c, _ = network.forward(arch, params, x, training=True, rng=4)
    assert np.array_equal(a, b), "network.forward(training=True, rng=3) is not deterministic"
    assert not np.array_equal(a, c), (
        "network.forward(training=True) gave the same logits for rng=3 and rng=4"
    )
    d, _ = network.forward(without_dropout(arch), params, x, training=True, rng=3)
    e, _ = network.forward(without_dropout(arch), params, x, training=True, rng=4)
    assert np.array_equal(d, e), "without_dropout(arch) still depends on the rng"


# --- dtype, NaN, bad input --------------------------------------------------------------------


def test_float32_network_matches_float64():
    arch = tiny_architecture()
    p64 = random_network_params(arch)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x = images(2, 8)
    l64, _ = network.forward(arch, p64, x)
    l32, _ = network.forward(arch, p32, x.astype(np.float32))
    assert l32.dtype == np.float32, f"logits.dtype={l32.dtype}, but should be float32"
    assert_close(
        "network.forward", "logits(float32)", l32, l64, {"dtype": "float32 vs float64"}, 1e-4
    )


def test_nan_input_propagates_to_the_logits():
    arch = tiny_architecture()
    x = images(2, 8)
    x[1, 3, 3, 0] = np.nan
    with np.errstate(all="ignore"):
        logits, _ = network.forward(arch, random_network_params(arch), x)
    assert np.isnan(logits[1]).all() and np.isfinite(logits[0]).all(), (
        f"network.forward with x[1,3,3,0]=nan gave logits {logits} (inference: only sample 1 NaN)"
    )


def test_network_bad_input():
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = images(2, 8)
    with pytest.raises(ValueError, match=r"x.shape\[-1\] == 3.*x.shape=\(2, 8, 8, 1\)"):
        network.forward(arch, params, x[..., :1])
    with pytest.raises(ValueError, match=r"x of rank 4.*x.shape=\(8, 8, 3\)"):
        network.forward(arch, params, x[0])
    with pytest.raises(TypeError, match=r"x.dtype=int64"):
        network.forward(arch, params, x.astype(np.int64))
    broken = {k: v for k, v in params.items() if k != "stem_bn/gamma"}
    broken["block1a_dwconv/kernel"] = np.ones((5, 5, 32, 1))
    broken["extra/kernel"] = np.ones(3)
    with pytest.raises(ValueError) as info:
        network.forward(arch, broken, x)
    msg = str(info.value)
    for fragment in (
        "3 problems",
        "missing stem_bn/gamma: expected shape (32,)",
        "unexpected extra/kernel",
        "block1a_dwconv/kernel: expected shape (3, 3, 32, 1), received shape (5, 5, 32, 1)",
    ):
        assert fragment in msg, f"network.forward(bad params) raised {msg!r}, missing {fragment!r}"
    # A truthy string would silently select training mode (batch statistics, dropout).
    with pytest.raises(TypeError, match=r"training to be True or False, received str 'False'"):
        network.forward(arch, params, x, training="False")
    _, cache = network.forward(arch, params, x)
    with pytest.raises(ValueError, match=r"dy.shape=\(2, 3\).*received dy.shape=\(3, 3\)"):
        network.backward(cache, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"masks\['top_dropout'\].shape=\(2, 48\).*\(2, 5\)"):
        network.forward(arch, params, x, training=True, masks={"top_dropout": np.ones((2, 5))})


@pytest.mark.parametrize(
    ("labels", "exc", "fragment"),
    [
        (np.array([0, 3]), ValueError, "labels in [0, 3), received values in [0, 3]"),
        (np.array([0.0, 1.0]), TypeError, "labels.dtype=float64"),
        (np.array([0, 1, 2]), ValueError, "labels.shape=(2,), received labels.shape=(3,)"),
    ],
)
def test_loss_and_grads_checks_labels_before_the_forward_pass(monkeypatch, labels, exc, fragment):
    arch = tiny_architecture()
    assert arch.num_classes == 3
    params, x = random_network_params(arch), images(2, 8)

    def forward(*args, **kwargs):
        raise AssertionError("network.forward ran before the labels were checked")

    monkeypatch.setattr(network, "forward", forward)
    with pytest.raises(exc) as info:
        network.loss_and_grads(arch, params, x, labels)
    assert fragment in str(info.value), (
        f"network.loss_and_grads(labels={labels.tolist()}) raised {info.value!r}, "
        f"which does not mention {fragment!r}"
    )


def _torch():
    return pytest.importorskip("torch")


def test_unknown_mask_names_are_rejected_and_the_valid_ones_listed():
    # A misspelt site used to be ignored silently, so the "deterministic" run drew a random mask.
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(2, 8)
    masks = drop_masks(arch, 2)
    site = next(k for k in masks if k.endswith("_drop"))
    masks[site.replace("_drop", "_dropout")] = masks.pop(site)
    with pytest.raises(ValueError) as info:
        network.forward(arch, params, x, training=True, masks=masks)
    msg = str(info.value)
    for fragment in (repr(site.replace("_drop", "_dropout")), repr(site), "'top_dropout'"):
        assert fragment in msg, f"network.forward(masks=misspelt) raised {msg!r}, no {fragment}"


@pytest.mark.parametrize(
    ("what", "bad", "fragments"),
    [
        # Drop-connect is per sample: a per-element mask broadcasts, but is another model.
        ("shape", lambda m: np.ones((2, 8, 8, m.shape[-1])), ["shape=(2, 1, 1, 1)", "shape=(2, 8"]),
        ("values", lambda m: np.full_like(m, 2.0), ["of 0s and 1s", "2.0"]),
        ("type", lambda m: m.tolist(), ["to be an array", "list"]),
        # Was "received x: numpy.ndarray, mask: torch.Tensor": which mask, of which site?
        ("library", lambda m: _torch().from_numpy(m), ["x: numpy.ndarray", "torch.Tensor"]),
    ],
)
def test_bad_masks_are_rejected_before_any_computation(what, bad, fragments):
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(2, 8)
    masks = drop_masks(arch, 2)
    site = next(k for k in masks if k.endswith("_drop"))
    masks[site] = bad(masks[site])
    with pytest.raises((ValueError, TypeError)) as info:
        network.forward(arch, params, x, training=True, masks=masks)
    msg = str(info.value)
    for fragment in (f"masks[{site!r}]", *fragments):
        assert fragment in msg, f"network.forward(masks {what}) raised {msg!r}, no {fragment!r}"


@pytest.mark.parametrize(
    ("rng", "exc", "fragment"),
    [
        (1.5, TypeError, "Expected rng to be a non-negative int, a numpy.random.Generator or None"),
        (-1, ValueError, "Expected rng >= 0, received rng=-1"),
        (True, TypeError, "received bool True"),
        ("3", TypeError, "received str '3'"),
    ],
)
def test_bad_rng_is_rejected_naming_the_argument(rng, exc, fragment):
    arch = tiny_architecture()
    params, x = random_network_params(arch), images(2, 8)
    with pytest.raises(exc) as info:
        network.forward(arch, params, x, training=True, rng=rng)
    assert fragment in str(info.value), (
        f"network.forward(rng={rng!r}) raised {info.value!r}, which does not mention {fragment!r}"
    )
    # Generators, NumPy integers and None stay accepted.
    for ok in (np.random.default_rng(1), np.int64(2), None):
        network.forward(arch, params, x, training=True, rng=ok)


def test_network_gradient_check_catches_a_subtle_backward_error(monkeypatch):
    """The whole-network checker itself: scaling the squeeze-excite gradient by 1.001 (a bug
    no shape check would see) must fail the tiny network's check."""
    from gpconv.core.ops import ChannelScale

    backward = ChannelScale.backward

    def off_by_a_little(cache, dy):
        (dx, ds), grads = backward(cache, dy)
        return (dx, ds * 1.001), grads

    monkeypatch.setattr(ChannelScale, "backward", staticmethod(off_by_a_little))
    arch = tiny_architecture()
    with pytest.raises(AssertionError, match=r"network.loss_and_grads d\[.*\] directional err"):
        check_network_grads(
            "network.loss_and_grads",
            arch,
            random_network_params(arch),
            images(2, 8),
            LABELS,
            {"mutant": "ChannelScale ds * 1.001"},
            training=False,
        )


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_block_forward_chained_gives_the_networks_intermediates(training):
    """``block_forward`` (what ``gpconv check`` runs on a backend's own input to each block)
    chained from the stem gives every block output of ``forward`` without drop-connect, though
    the architecture drops: the block's drop rate is ignored, in training too."""
    arch = tiny_architecture(blocks=5)
    assert any(b.residual and b.drop_rate > 0 for b in arch.blocks)
    params = calibrated_params(arch, random_network_params(arch, seed=2), images(4, 9, seed=3))
    x = images(2, 9, seed=4)
    _, cache = network.forward(without_dropout(arch), params, x, training=training)
    y = cache["intermediates"]["stem"]
    for block in arch.blocks:
        y = network.block_forward(block, params, y, training=training)
        np.testing.assert_array_equal(y, cache["intermediates"][block.name], err_msg=block.name)


def test_block_forward_names_what_is_wrong_with_its_arguments():
    """It used to fail with dataclasses' 'replace() should be called on dataclass instances', a
    ``KeyError`` for a missing parameter, 'dictionary update sequence element' for a list, or an
    op's error naming only ``kernel`` for a mis-shaped one."""
    arch = tiny_architecture(blocks=2)
    block = arch.blocks[1]
    params = random_network_params(arch)
    x = np.random.default_rng(0).standard_normal((1, 4, 4, block.cin)).astype(np.float32)
    network.block_forward(block, params, x, training=False)  # the whole network's dict is fine
    with pytest.raises(TypeError, match="block to be an MBConvSpec .*received str 'block2a'"):
        network.block_forward(block.name, params, x, training=False)
    with pytest.raises(TypeError, match=r"params to be a dict \{name: array\}, received list"):
        network.block_forward(block, list(params.values()), x, training=False)
    missing = {k: v for k, v in params.items() if k != f"{block.name}_dwconv/kernel"}
    with pytest.raises(ValueError, match=rf"(?s){block.name} .*missing {block.name}_dwconv/kernel"):
        network.block_forward(block, missing, x, training=False)
    bad = {**params, f"{block.name}_bn/gamma": np.ones(3, np.float32)}
    with pytest.raises(
        ValueError, match=rf"{block.name}_bn/gamma: expected shape \(\d+,\), received shape \(3,\)"
    ):
        network.block_forward(block, bad, x, training=False)
    with pytest.raises(TypeError, match="training to be True or False, received str 'no'"):
        network.block_forward(block, params, x, training="no")


def test_a_mask_for_a_block_without_a_residual_is_refused_not_ignored():
    """Only residual blocks drop their branch: a mask named after another block would be
    skipped silently (a misspelt site), so it is an error listing the sites there are."""
    arch = tiny_architecture()
    plain = next(b for b in arch.blocks if not b.residual)
    params = network.init_params(arch, 0)
    x = np.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match=f"{plain.name}_drop"):
        network.forward(
            arch, params, x, training=True, masks={f"{plain.name}_drop": np.ones((2, 1, 1, 1))}
        )


@pytest.mark.parametrize("flag", [1, 0, "yes", None])
def test_the_training_flag_is_a_bool_not_a_truthy_value(flag):
    arch = tiny_architecture()
    params, x = network.init_params(arch, 0), np.zeros((1, 8, 8, 3))
    with pytest.raises(TypeError, match="training"):
        network.forward(arch, params, x, training=flag)
    block = arch.blocks[0]
    inner = np.zeros((1, 8, 8, block.cin))
    with pytest.raises(TypeError, match="training"):
        network.block_forward(block, params, inner, training=flag)
    network.forward(arch, params, x, training=np.True_)  # NumPy's bool is a bool
    network.block_forward(block, params, inner, training=np.False_)


def test_a_misspelt_mask_is_refused_in_inference_too():
    """``forward``'s masks "may name only the dropout sites of arch ... in either mode": a
    misspelt site in an inference call is an error, not silently ignored (the same call in
    training would draw that site's mask from ``rng`` instead of using it)."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = images(2, 8)
    masks = {**drop_masks(arch, 2), "block2b_dorp": np.ones((2, 1, 1, 1))}
    with pytest.raises(ValueError, match="block2b_dorp"):
        network.forward(arch, params, x, training=False, masks=masks)
    bad_shape = {k: np.ones((3, 1, 1, 1)) for k in drop_masks(arch, 2) if k.endswith("_drop")}
    with pytest.raises(ValueError):
        network.forward(arch, params, x, training=False, masks=bad_shape)


def test_loss_and_grads_returns_the_moving_statistics_of_its_training_forward():
    """``loss_and_grads`` returns ``moving_stats``: in training, one updated value for every
    non-trainable parameter (each BN's moving mean and variance), equal to what ``forward``
    computes from the same batch; in inference none."""
    arch = tiny_architecture()
    params = random_network_params(arch)
    x = images(2, 8)
    masks = drop_masks(arch, 2)
    out = network.loss_and_grads(arch, params, x, LABELS, training=True, masks=masks)
    _, cache = network.forward(arch, params, x, training=True, masks=masks)
    non_trainable = {k for k, (_, trainable) in arch.param_shapes().items() if not trainable}
    missing = sorted(non_trainable - set(out["moving_stats"]))
    assert set(out["moving_stats"]) == non_trainable, missing
    for k, v in cache["moving_stats"].items():
        np.testing.assert_array_equal(out["moving_stats"][k], v, err_msg=k)
        assert not np.array_equal(v, params[k]), f"{k} was not updated"
    inference = network.loss_and_grads(arch, params, x, LABELS, training=False)
    assert inference["moving_stats"] == {}
