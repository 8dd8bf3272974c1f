"""Where and how dropout and drop-connect act, in the reference and in both backends.

The whole-network comparisons run with the rates at 0 or with injected masks (DESIGN.md §4), so
nothing there checks the masks each implementation *draws* itself: their rate (a swapped ``p`` and
``1 - p`` is invisible at ``p = 0.5``), their shape (per sample for drop-connect, per sample and
channel for the head), the ``1 / (1 - p)`` scaling, or where in the network they apply (on the
project branch before the residual add; on the pooled features before the classifier). These
tests draw real masks in training mode and check each of those properties on the values that
flow through the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import tiny_architecture  # noqa: E402

from gpconv.core import network  # noqa: E402
from gpconv.core.arch import Architecture, with_dropout  # noqa: E402


def rate_bound(p: float, n: int) -> float:
    """Four standard deviations of the fraction of ``n`` independent Bernoulli(``p``) draws."""
    return 4.0 * float(np.sqrt(p * (1.0 - p) / n))


def residual_sites(arch: Architecture) -> list:
    """The blocks with an identity shortcut and a non-zero drop-connect rate."""
    sites = [b for b in arch.blocks if b.residual and b.drop_rate > 0]
    assert sites, f"{arch.name}: the test needs a residual block with drop-connect"
    return sites


def placement_arch(dropout: float = 0.5, drop_connect_rate: float = 0.9) -> Architecture:
    """Five B0 blocks (two residual: block2b at 0.36, block3b at 0.72 with the defaults) and a
    head dropout of 0.5: high rates, so a small batch has both kept and dropped samples."""
    return with_dropout(tiny_architecture(blocks=5), dropout, drop_connect_rate)


def images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


# --- core: the masks network.forward draws from rng -------------------------------------------


def check_drawn_scale(site: str, scale: np.ndarray, shape: tuple, rate: float) -> None:
    """``scale`` (mask / (1 - rate), as applied) has ``shape``, holds only 0 and 1/(1 - rate),
    and drops a fraction ``rate`` of its entries (within 4 sigma)."""
    assert scale is not None, f"{site}: no mask was applied in training mode [rate={rate}]"
    scale = np.asarray(scale)
    assert scale.shape == shape, f"{site}: scale.shape={scale.shape}, but should be {shape}"
    assert scale.dtype == np.float32, f"{site}: scale.dtype={scale.dtype}, but should be float32"
    kept_value = 1.0 / (1.0 - rate)
    dropped = scale == 0
    kept = np.isclose(scale, kept_value, rtol=1e-6, atol=0)
    assert np.all(dropped | kept), (
        f"{site}: scale values {np.unique(scale)[:6]}, but should be only 0 and "
        f"1/(1-{rate})={kept_value:.6f}"
    )
    frac, n = float(dropped.mean()), scale.size
    bound = rate_bound(rate, n)
    assert abs(frac - rate) <= bound, (
        f"{site}: dropped fraction {frac:.4f} of {n} draws, but should be {rate} +- {bound:.4f}"
    )


def test_core_forward_draws_masks_with_each_sites_rate_and_shape():
    """``forward(training=True, rng=...)`` draws one Bernoulli(1 - p) keep per sample for each
    residual block (its own rate ``p``, rates ~0.16 and ~0.32 here) and one per sample and channel
    for the head (0.3). Rates away from 0.5 and 2000 samples tell ``p`` from ``1 - p``."""
    arch = with_dropout(tiny_architecture(blocks=5), dropout=0.3, drop_connect_rate=0.4)
    params = network.init_params(arch, seed=0)
    n = 2000
    _, cache = network.forward(arch, params, images(n), training=True, rng=0)
    sites = residual_sites(arch)
    assert [b.drop_rate for b in sites] == pytest.approx([0.16, 0.32])
    for b, c in zip(arch.blocks, cache["blocks"]):
        if b in sites:
            check_drawn_scale(f"{b.name}_drop", c["drop"]["scale"], (n, 1, 1, 1), b.drop_rate)
        else:
            assert "drop" not in c, f"{b.name}: not residual, so no drop-connect"
    check_drawn_scale(
        "top_dropout",
        cache["head"]["dropout"]["scale"],
        (n, arch.head.top.cout),
        arch.head.dropout,
    )


def test_core_inference_draws_no_masks():
    """The same architecture in inference mode applies no mask anywhere (scale None)."""
    arch = with_dropout(tiny_architecture(blocks=5), dropout=0.3, drop_connect_rate=0.4)
    params = network.init_params(arch, seed=0)
    _, cache = network.forward(arch, params, images(4), training=False, rng=0)
    for b, c in zip(arch.blocks, cache["blocks"]):
        if b.residual:
            assert c["drop"]["scale"] is None, f"{b.name}_drop applied in inference"
    assert cache["head"]["dropout"]["scale"] is None, "top_dropout applied in inference"


# --- placement checks shared by the backends --------------------------------------------------


def check_block_output(site: str, inp, proj, out, rate: float) -> None:
    """Per sample: the block output is its input exactly (dropped) or input + project/(1 - p)
    (kept); both kinds occur. Arrays are ``(N, ...)``, any layout as long as all three agree."""
    inp, proj, out = (np.asarray(a, dtype=np.float64) for a in (inp, proj, out))
    n = inp.shape[0]
    dropped = np.array([np.array_equal(out[i], inp[i]) for i in range(n)])
    expected = inp + proj / (1.0 - rate)
    kept = (
        np.array([np.allclose(out[i], expected[i], rtol=1e-5, atol=1e-5) for i in range(n)])
        & ~dropped
    )
    bad = np.flatnonzero(~(dropped | kept))
    assert bad.size == 0, (
        f"{site}: samples {bad[:8].tolist()} are neither the block input (dropped) nor "
        f"input + project/(1-{rate}) (kept): drop-connect must scale the whole project output "
        "of a sample, before the residual add"
    )
    assert 0 < dropped.sum() < n, f"{site}: {dropped.sum()} of {n} samples dropped [rate={rate}]"


def check_head_features(top_mean, features, rate: float) -> None:
    """Each feature entering the classifier is 0 or the pooled top feature / (1 - rate), and
    about a fraction ``rate`` of them are 0: dropout acts on the pooled ``(N, C)`` features."""
    top_mean, features = (np.asarray(a, dtype=np.float64) for a in (top_mean, features))
    assert features.shape == top_mean.shape, (
        f"classifier input shape {features.shape}, but should be the pooled {top_mean.shape}"
    )
    zero = features == 0
    scaled = np.isclose(features, top_mean / (1.0 - rate), rtol=1e-5, atol=1e-6)
    assert np.all(zero | scaled), (
        f"{np.sum(~(zero | scaled))} classifier inputs are neither 0 nor pooled/(1-{rate}): "
        "head dropout must act on the pooled features"
    )
    frac, bound = float(zero.mean()), rate_bound(rate, zero.size)
    assert abs(frac - rate) <= bound, f"{frac:.4f} of the pooled features dropped, not {rate}"


# --- torch ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_model():
    torch = pytest.importorskip("torch")
    from gpconv.backends.torch import EfficientNet

    arch = placement_arch()
    torch.manual_seed(0)
    return torch, arch, EfficientNet(arch, seed=0).train()


def torch_images(torch, n: int):
    return torch.from_numpy(images(n)).permute(0, 3, 1, 2).contiguous()


def torch_recorded_forward(torch, model, install: Callable[[dict], list]) -> dict:
    """One training forward of 64 images with the hooks ``install(seen)`` returns (removed
    afterwards); returns what they recorded in ``seen``."""
    seen: dict = {}
    hooks = install(seen)
    try:
        with torch.no_grad():
            model(torch_images(torch, 64))
    finally:
        for h in hooks:
            h.remove()
    return seen


def torch_block_io(torch, model, name: str) -> dict:
    """Block ``name``'s input, project output and output in one training forward."""
    block = model.blocks[name]
    return torch_recorded_forward(
        torch,
        model,
        lambda seen: [
            block.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0])),
            block.project.register_forward_hook(lambda m, a, y: seen.__setitem__("proj", y)),
            block.register_forward_hook(lambda m, a, y: seen.__setitem__("out", y)),
        ],
    )


def test_torch_drop_connect_scales_the_project_branch_before_the_add(torch_model):
    """For each residual block, the output of a dropped sample is its input bit for bit, and of
    a kept one input + project/(1 - p): the mask is per sample, on the project output, and the
    add comes after it (dropping after the add, before the SE, or on the shortcut fails)."""
    torch, arch, model = torch_model
    for b in residual_sites(arch):
        seen = torch_block_io(torch, model, b.name)
        check_block_output(f"torch {b.name}", seen["in"], seen["proj"], seen["out"], b.drop_rate)


def test_torch_head_dropout_acts_on_pooled_features(torch_model):
    """The classifier's input is the spatial mean of the top conv's output, each entry zeroed
    with the head rate (0.5) or doubled."""
    torch, arch, model = torch_model
    seen = torch_recorded_forward(
        torch,
        model,
        lambda seen: [
            model.head.top.register_forward_hook(lambda m, a, y: seen.__setitem__("top", y)),
            model.head.predictions.register_forward_pre_hook(
                lambda m, args: seen.__setitem__("features", args[0])
            ),
        ],
    )
    check_head_features(seen["top"].mean((2, 3)), seen["features"], arch.head.dropout)


# --- TensorFlow -------------------------------------------------------------------------------


def _first_layer(b) -> str:
    return f"{b.name}_expand" if b.expand is not None else f"{b.name}_dwconv"


@pytest.fixture(scope="module")
def keras_probe():
    """The Keras model of ``placement_arch`` and a sub-model (sharing its layers) whose outputs
    are, per residual block, its input (the next layer's input, not a layer found by name), its
    project output and its output, plus the top conv's output and the classifier's input."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from gpconv.backends.tensorflow import build_model

    arch = placement_arch()
    keras.utils.set_random_seed(0)
    model = build_model(arch, input_shape=(8, 8, 3))
    names = [b.name for b in arch.blocks]
    outputs = {}
    for b in residual_sites(arch):
        i = names.index(b.name)
        after = _first_layer(arch.blocks[i + 1]) if i + 1 < len(names) else "top"
        outputs[f"{b.name}/in"] = model.get_layer(_first_layer(b)).input
        outputs[f"{b.name}/proj"] = model.get_layer(f"{b.name}_project").output
        outputs[f"{b.name}/out"] = model.get_layer(after).input
    outputs["top"] = model.get_layer("top").output
    outputs["features"] = model.get_layer("predictions").input
    probe = keras.Model(model.input, outputs)
    return arch, probe


def test_keras_drop_connect_scales_the_project_branch_before_the_add(keras_probe):
    """As for torch: ``{block}_drop`` drops whole samples of the project output (noise shape
    ``(None, 1, 1, 1)``) with the block's rate, and ``{block}_add`` adds the input after it."""
    arch, probe = keras_probe
    out = {k: np.asarray(v) for k, v in probe(images(64), training=True).items()}
    for b in residual_sites(arch):
        check_block_output(
            f"keras {b.name}",
            out[f"{b.name}/in"],
            out[f"{b.name}/proj"],
            out[f"{b.name}/out"],
            b.drop_rate,
        )


def test_keras_head_dropout_acts_on_pooled_features(keras_probe):
    """``top_dropout`` sits between the global average pool and ``predictions``: each entry of
    the classifier input is 0 or twice the spatial mean of ``top`` (rate 0.5)."""
    arch, probe = keras_probe
    out = {k: np.asarray(v) for k, v in probe(images(64), training=True).items()}
    check_head_features(out["top"].mean(axis=(1, 2)), out["features"], arch.head.dropout)
