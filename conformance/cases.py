"""The fixed configurations ``gpconv check`` runs, and the reference's answers for them.

Parameters and inputs are drawn from a seed and rounded through float32, so a float32 backend
receives exactly the values the float64 reference uses: what remains is arithmetic error.
BN statistics and affine parameters are randomised (not the 1/0 of a fresh init) so that
epsilon, variance and mean conventions all show in the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..core import network
from ..core.arch import Architecture, by_name, without_dropout
from ..core.ops.normalization import MOMENTUM
from ..core.params import init_params
from ..core.pointwise import KPointwise, KPointwiseSpec

IMAGE_SIZE, SKIP_STRIDE, BATCH, CLASSES = 32, 3, 2, 10

# (cin, cout, groups, bn, activation, bias): every kPointwise branch, with and without BN/bias.
KPOINTWISE_QUICK = (
    (16, 24, 1, True, "swish", False),  # G == 1: plain 1x1 conv
    (32, 16, 2, True, "swish", False),  # interleave + second conv + residual (cin >= cout)
    (16, 96, 4, True, None, False),  # interleave only (cin < cout)
    (96, 4, 4, False, "swish", True),  # second conv without interleave (cout // G == 1), SE-like
    (24, 24, 3, True, None, False),  # cin == cout
)
KPOINTWISE_FULL = KPOINTWISE_QUICK + (
    (48, 12, 6, False, "sigmoid", True),
    (12, 48, 3, True, "swish", True),
    (64, 64, 8, True, "swish", False),
)
INTERLEAVE_CASES = ((12, 3), (8, 2), (6, 6), (10, 1), (96, 4))


@dataclass(frozen=True)
class Network:
    """One whole-network configuration of the checks: ``model`` as ``arch.by_name`` names it,
    ``m`` its minimum channels per group (kEffNet; None for EfficientNet), ``skip`` its
    ``skip_stride_cnt``, images ``(BATCH, size, size, 3)``, and the ``modes`` (``training``
    flags) ``check_network`` runs it in. Networks that differ only in ``modes`` compare equal:
    they share ``network_case``'s cached cases."""

    model: str
    m: int | None = None
    skip: int = SKIP_STRIDE
    size: int = IMAGE_SIZE
    modes: tuple[bool, ...] = field(default=(False, True), compare=False)


# At 32x32 with skip 3 the stride-2 depthwise convs see 31x31 (block4a, 3x3) and 16x16 (block6a,
# 5x5). On an odd size correct_pad is (k//2, k//2), symmetric padding's: a port padding its 3x3
# stride-2 convs symmetrically passed. At 96x96 without skipped strides every stride-2 conv (the
# stem too) sees an even size (96, 48, 24, 12, 6), where correct_pad is (k//2 - 1, k//2).
# Training mode only: inference pads the same. Measured here: its reference case 0.25 s (the
# 32x32 training case's 0.84 s), torch's rows 0.23 s, TensorFlow's 1.5 s (mostly building the
# model): about what one 32x32 training row costs.
EVEN_STRIDES = Network("kefficientnet-b0", 16, skip=-1, size=96, modes=(True,))
NETWORKS_QUICK = (Network("kefficientnet-b0", 16), Network("efficientnet-b0"), EVEN_STRIDES)
NETWORKS_FULL = (
    Network("kefficientnet-b0", 16),
    Network("kefficientnet-b0", 32),
    Network("efficientnet-b0"),
    EVEN_STRIDES,
)


def f32(a: np.ndarray) -> np.ndarray:
    """Round to float32 and back: values both precisions represent exactly."""
    return np.asarray(a, np.float32).astype(np.float64)


def randomise(
    shapes: dict[str, tuple[tuple[int, ...], bool]],
    values: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Replace BN/bias entries with random values of realistic scale."""
    out = dict(values)
    for name, (shape, _) in shapes.items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "gamma":
            out[name] = 1.0 + 0.2 * rng.standard_normal(shape)
        elif leaf in ("beta", "moving_mean", "bias"):
            out[name] = 0.1 * rng.standard_normal(shape)
        elif leaf == "moving_variance":
            out[name] = rng.uniform(0.05, 1.5, shape)
    return {k: f32(v) for k, v in out.items()}


def network_arch(net: Network, training: bool) -> Architecture:
    """The architecture of ``net``, without dropout in training (DESIGN.md §4)."""
    arch = by_name(net.model, CLASSES, net.m or 16, net.skip)
    return without_dropout(arch) if training else arch


def network_label(net: Network, batch: int = BATCH, size: int | None = None) -> str:
    """``net`` as report rows name it, at ``size`` if not its own image size."""
    width = f" {net.m}ch" if net.m else ""
    size = size or net.size
    return f"{net.model}{width} {size}x{size} skip={net.skip} batch={batch}"


def calibrated(
    arch: Architecture, params: dict[str, np.ndarray], x: np.ndarray
) -> dict[str, np.ndarray]:
    """Moving statistics set to the batch statistics of ``x`` (as after long training), so that
    inference-mode activations keep a sane scale through 16 blocks instead of exploding."""
    _, cache = network.forward(without_dropout(arch), params, x, training=True)
    m = MOMENTUM  # undo Keras's update r' = m r + (1 - m) b to read the batch statistic b
    batch = {k: (v - m * params[k]) / (1 - m) for k, v in cache["moving_stats"].items()}
    batch = {k: np.maximum(v, 1e-3) if k.endswith("variance") else v for k, v in batch.items()}
    return {**params, **{k: f32(v) for k, v in batch.items()}}


def moved_away(params: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Moving statistics moved off the calibrated batch statistics (variance x U(0.5, 2), mean
    shifted by up to half a standard deviation), for training checks. Were they equal to the
    batch's, Keras's update ``m r + (1 - m) b`` would return ``b`` for *any* momentum: a port
    with PyTorch's momentum would pass."""
    out = dict(params)
    for name, var in params.items():
        if name.endswith("/moving_variance"):
            mean = name.removesuffix("variance") + "mean"
            shift = 0.5 * np.sqrt(var) * rng.uniform(-1.0, 1.0, var.shape)
            out[mean] = f32(params[mean] + shift)
            out[name] = f32(var * rng.uniform(0.5, 2.0, var.shape))
    return out


@lru_cache(maxsize=8)
def network_case(net: Network, training: bool, seed: int) -> dict[str, Any]:
    """Inputs, params and the float64 reference's answers for one whole-network check of
    ``net``: logits and intermediates of ``forward``; loss, gradients and ``dx`` of
    ``loss_and_grads`` in the same mode; the moving statistics after it (in inference, those of
    ``params``)."""
    arch = network_arch(net, training)
    rng = np.random.default_rng(seed)
    shapes = arch.param_shapes()
    params = randomise(shapes, init_params(arch, seed, np.float64), rng)
    x = f32(rng.standard_normal((BATCH, net.size, net.size, 3)))
    params = calibrated(arch, params, x)
    labels = rng.integers(0, CLASSES, BATCH)
    if training:
        params = moved_away(params, np.random.default_rng([seed, 1]))
    logits, cache = network.forward(arch, params, x, training=training)
    out = network.loss_and_grads(arch, params, x, labels, training=training)
    # Inference leaves the moving statistics as they were: those are its expected values.
    unchanged = {k: params[k] for k, (_, trainable) in shapes.items() if not trainable}
    return {
        "arch": arch,
        "params": params,
        "x": x,
        "labels": labels,
        "logits": logits,
        "intermediates": cache["intermediates"],
        "loss": float(out["loss"]),
        "grads": out["grads"],
        "dx": out["dx"],
        "moving_stats": out["moving_stats"] if training else unchanged,
    }


def kpointwise_case(row: tuple, training: bool, seed: int) -> dict[str, Any]:
    """The reference's answers for one row of ``KPOINTWISE_QUICK``/``KPOINTWISE_FULL``."""
    cin, cout, groups, bn, act, bias = row
    spec = KPointwiseSpec(cin, cout, groups, bn=bn, activation=act, bias=bias)
    return reference_kpointwise(spec, training, seed=[seed, cin, cout, groups, int(training)])


def reference_kpointwise(
    spec: KPointwiseSpec, training: bool, seed: Any = 0, shape: tuple[int, int, int] = (3, 4, 5)
) -> dict[str, Any]:
    """Inputs ``x`` of ``shape + (Cin,)``, local params, ``dy`` and the float64 reference's
    ``y``, ``dx``, grads and moving stats for one kPointwise layer."""
    rng = np.random.default_rng(seed)
    shapes = spec.param_shapes()
    params = randomise(
        shapes, {k: rng.standard_normal(s) / np.sqrt(spec.cin) for k, (s, _) in shapes.items()}, rng
    )
    x = f32(rng.standard_normal((*shape, spec.cin)))
    y, cache = KPointwise.forward(spec, params, x, training=training)
    dy = f32(rng.standard_normal(y.shape))
    dx, grads = KPointwise.backward(cache, dy)
    return {
        "spec": spec,
        "params": params,
        "x": x,
        "dy": dy,
        "y": y,
        "dx": dx,
        "grads": grads,
        "moving_stats": cache["moving_stats"],
        "training": training,
    }


def spec_label(spec: KPointwiseSpec, training: bool) -> str:
    return (
        f"{spec.cin}->{spec.cout} G={spec.groups} bn={spec.bn} act={spec.activation} "
        f"bias={spec.bias} training={training}"
    )
