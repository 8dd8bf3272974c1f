"""The porting traps ``gpconv check`` names when a backend fails (DESIGN.md §6), and how each
failure's symptom picks the traps that fit it: by where the first divergence is (``layer_traps``,
``kpointwise_traps``), by which statistics are wrong (``moving_stats_trap``), or by a symptom that
only one trap has (``symptom_trap``: logits that are probabilities, a block that is the
reference's with its depthwise or kPointwise BNs' epsilon 1e-5). A hint is advice printed
beside a failing row; it never decides whether a row passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import network
from ..core.arch import Architecture, MBConvSpec
from ..core.ops.normalization import EPSILON
from ..core.pointwise import KPointwiseSpec
from .results import LOCATE_TOL, Comparison, scaled_max

# Known porting traps, named in failure messages when the symptom fits (DESIGN.md §6).
_SWISH = "swish = x * sigmoid(x) (no beta, not hard-swish)"
_EPSILON = "BN epsilon 1e-3 (not 1e-5)"
TRAPS = {
    "stem": "stem: TF 'correct_pad' (asymmetric) vs symmetric padding, BN epsilon (1e-3 vs "
    f"1e-5), {_SWISH}",
    "swish": _SWISH,
    "sigmoid": "sigmoid 1 / (1 + exp(-x)) (not hard sigmoid)",
    "top": "top conv: kEffNet's top has no activation (EfficientNet's has swish)",
    "momentum": "BN running stats: Keras's momentum 0.99 keeps 0.99 of the old value "
    "(PyTorch's momentum=0.1 keeps 0.9)",
    "variance": "BN running variance: Keras updates it with the *biased* batch variance "
    "(PyTorch with the unbiased one, n/(n-1) larger)",
    "interleave": "interleave order: out[s*G+g] = in[g*S+s] (ChannelShuffle), not its transpose",
    "residual": "the residual adds the non-interleaved y1, not interleave(y1)",
    "epsilon": _EPSILON,
    "depthwise epsilon": f"the depthwise conv's {_EPSILON}, as every other BN's",
    "kPointwise epsilon": f"the BNs inside kPointwise: {_EPSILON}, as every other BN's (a "
    "kPointwise built from torch.nn.BatchNorm2d keeps its 1e-5)",
    "block epsilon": f"every BN of the MBConv blocks (depthwise and kPointwise): {_EPSILON}, "
    "as the stem's",
    "padding": "stride-2 depthwise: TF 'correct_pad' (asymmetric) vs symmetric padding",
    "inference": "inference (training=False) normalises with the moving statistics and leaves "
    "them as they are: no batch statistics, no update",
    "drop-connect branch": "drop-connect drops a sample's whole residual branch (not single "
    "elements, not the identity) and scales a kept one by 1 / (1 - rate), the rate the block "
    "table gives the block",
    "head dropout": "head dropout: one draw per pooled feature (not per sample, not before the "
    "pooling) at the architecture's rate (B0: 0.2, B7: 0.5), kept features scaled by "
    "1 / (1 - rate)",
    "drop-connect residual only": "drop-connect only in residual blocks (stride 1, cin == "
    "cout): a block without the identity shortcut drops nothing",
    "drop-connect": "drop-connect keeps or drops each sample (an (N, 1, 1, 1) mask), not the "
    "whole batch at once",
    "squeeze-excite": "squeeze-excite: the squeeze a global average pool (not max), the reduce "
    "conv's activation swish (not ReLU), the expand's sigmoid (not hard sigmoid)",
    "training only": "drop-connect and the head's dropout act in training only: inference "
    "(training=False) keeps every residual branch and pooled feature, unscaled",
    "logits": "forward returns logits (no softmax, no log-softmax, in either mode): the softmax "
    "is the loss's job",
}
FORWARD_FIRST = "the forward pass diverges first ({})"


def _layer_traps(spec: KPointwiseSpec) -> list[str]:
    """The traps that can change this kPointwise layer's output: a layer without BN has no
    epsilon, one that does not interleave no interleave order, and only an interleaving layer with
    a second conv can add its residual to the wrong tensor (otherwise ``z`` is ``y1``)."""
    traps = [TRAPS["interleave"]] if spec.interleaves else []
    if spec.interleaves and spec.has_second_conv:
        traps.append(TRAPS["residual"])
    if spec.bn:
        traps.append(TRAPS["epsilon"])
    return traps


def moving_stats_trap(stats: Mapping[str, Comparison]) -> str:
    """The BN-update trap that fits failing moving statistics ``{name: comparison}``: a wrong
    momentum moves the moving means too, while an unbiased batch variance leaves every mean right
    and only the variances wrong."""
    means_ok = all(cmp.ok for name, cmp in stats.items() if name.endswith("moving_mean"))
    return TRAPS["variance"] if means_ok else TRAPS["momentum"]


def kpointwise_traps(spec: KPointwiseSpec) -> str:
    """``_layer_traps`` of ``spec`` and its activation's formula as a hint, or ``""`` when none
    fits. (In a network the stem's swish diverges first, and the squeeze-excite's trap names its
    sigmoid, so only this layer-alone check names the activation.)"""
    traps = _layer_traps(spec) + ([TRAPS[spec.activation]] if spec.activation else [])
    return "kPointwise: " + "; ".join(traps) if traps else ""


def _block_traps(block: MBConvSpec) -> str:
    """The traps that can make an MBConv block the first diverging layer: correct_pad if it
    strides, those of its kPointwise layers but epsilon (the stem's BN would diverge first if
    every BN had the framework's; ``epsilon_fits`` tells the depthwise or kPointwise BNs that
    alone have it by their symptom), and the squeeze-excite's pooling and activations if it
    has one."""
    traps = [TRAPS["padding"]] if block.padding == "correct" else []
    for spec in (block.expand, block.se_reduce, block.se_expand, block.project):
        if spec is not None:
            traps += [t for t in _layer_traps(spec) if t != TRAPS["epsilon"] and t not in traps]
    if block.se_reduce is not None:
        traps.append(TRAPS["squeeze-excite"])
    return "; ".join(traps)


# |row sum - 1| allowed for logits that are probabilities: float32 round-off is ~1e-7 a class.
PROBABILITY_TOL = 1e-4


def returns_probabilities(logits: Any, reference: Any) -> str:
    """What a backend's ``logits`` ``(N, classes)`` are instead, where the reference's logits
    ``reference`` (same shape) are not that: softmax probabilities (every row >= 0 and summing
    to 1 within ``PROBABILITY_TOL``) or log-softmax log-probabilities (every row's exp summing
    to 1), naming how far from 1 the worst row's sum is; else ``""``."""
    got, ref = np.asarray(logits, np.float64), np.asarray(reference, np.float64)
    if got.ndim != 2 or got.shape != ref.shape or got.size == 0 or not np.all(np.isfinite(got)):
        return ""

    def worst_sum(a: np.ndarray, log: bool) -> float:
        """The row sum of ``a`` (of ``exp(a)`` if ``log``) farthest from 1; inf where a row
        has a negative value, which no probability is."""
        with np.errstate(over="ignore"):
            p = np.exp(a) if log else np.where(a >= 0, a, np.inf)
        sums = np.sum(p, axis=1)
        return float(sums[np.argmax(np.abs(sums - 1))])

    for log, rows, what in (
        (False, "every row of the logits >= 0 and summing", "softmax probabilities"),
        (True, "the exp of every row of the logits summing", "log-softmax log-probabilities"),
    ):
        off = abs(worst_sum(got, log) - 1)
        if off <= PROBABILITY_TOL and abs(worst_sum(ref, log) - 1) > PROBABILITY_TOL:
            return f"{rows} to 1 (within {off:.2g}): {what}"
    return ""


# PyTorch's default BN epsilon, the one a port that builds a BN itself may keep.
TORCH_EPSILON = 1e-5


def _block_bns(block: MBConvSpec) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """The BNs of ``block`` by the layer a port may build itself: ``"depthwise"`` (the
    depthwise conv's BN), ``"kPointwise"`` (every BN inside its kPointwise layers) and
    ``"block"`` (both: an MBConv module built with its framework's BN, the stem apart), each as
    ``(names of the parameters that make the BN's input, the BN's name)``."""
    bns: dict[str, list[tuple[tuple[str, ...], str]]] = {
        "depthwise": [((f"{block.name}_dwconv/kernel",), f"{block.name}_bn")],
        "kPointwise": [],
    }
    for layer, spec in (("expand", block.expand), ("project", block.project)):
        if spec is None or not spec.bn:
            continue
        convs = [("conv", "bn")] + ([("conv2", "bn2")] if spec.has_second_conv else [])
        for conv, bn in convs:
            made_by = (f"{block.name}_{layer}/{conv}/kernel", f"{block.name}_{layer}/{conv}/bias")
            bns["kPointwise"].append((made_by, f"{block.name}_{layer}/{bn}"))
    bns["block"] = bns["depthwise"] + bns["kPointwise"]
    return bns


def epsilon_fits(
    block: MBConvSpec,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    out: np.ndarray,
    training: bool,
) -> tuple[str, str]:
    """``(symptom, trap)`` when ``out`` ``(N, H', W', block.cout)``, a backend's output of
    ``block`` for its input ``x`` ``(N, H, W, block.cin)`` in mode ``training``, is within
    ``LOCATE_TOL`` of its scale the reference's block with the BNs of its depthwise conv, or
    those of its kPointwise layers, or both (``_block_bns``), at epsilon ``TORCH_EPSILON``
    (PyTorch's default) instead of Keras's 1e-3; else ``("", "")``. A BN gives the same for an
    input ``s`` times larger (its statistics ``s`` and ``s**2`` times larger) with an epsilon
    ``s**2`` times larger, so the reference block with the parameters that make those BNs'
    inputs (kernel, bias) and their moving means times ``s = sqrt(1e-3 / 1e-5)`` and their
    moving variances times ``s**2`` is that block exactly, in either mode."""
    s = float(np.sqrt(EPSILON / TORCH_EPSILON))
    x = np.asarray(x, np.float64)
    for which, bns in _block_bns(block).items():
        if not bns:
            continue
        scaled = dict(params)
        for made_by, bn in bns:
            for name in (*made_by, f"{bn}/moving_mean"):
                if name in scaled:
                    scaled[name] = params[name] * s
            scaled[f"{bn}/moving_variance"] = params[f"{bn}/moving_variance"] * s**2
        fit = scaled_max(out, network.block_forward(block, scaled, x, training), LOCATE_TOL)
        if fit.ok:
            symptom = (
                f"the reference's {block.name} with its {which} BN epsilon 1e-5 gives it "
                f"within {fit.error:.3g}"
            )
            return symptom, TRAPS[f"{which} epsilon"]
    return "", ""


def layer_traps(arch: Architecture, layer: str, training: bool = True) -> str:
    """The porting traps that fit ``layer`` (``stem``, a block name, ``top``, ``logits``)
    diverging first in a forward pass in mode ``training``. In inference, a block that drops
    in training (a residual with a drop rate) and the logits of a head with dropout also fit
    dropout applied whatever the mode. The top's include its own BN's epsilon: a head built
    from other layers than the blocks' can have another."""
    if layer == "stem":
        return TRAPS[layer]
    if layer == "top":
        return "; ".join([TRAPS[layer], *_layer_traps(arch.head.top)])
    blocks = {b.name: b for b in arch.blocks}
    if layer in blocks:
        block = blocks[layer]
        traps, drops = _block_traps(block), block.residual and block.drop_rate > 0
    elif layer == "logits":
        traps, drops = "", arch.head.dropout > 0
    else:
        return ""
    if drops and not training:
        return f"{TRAPS['training only']}; {traps}" if traps else TRAPS["training only"]
    return traps


def symptom_trap(layer: str, got: Mapping, ref: Mapping, training: bool) -> tuple[str, str]:
    """``(symptom, trap)`` when the backend's output ``got[layer]`` of ``layer``, the first to
    diverge from ``ref`` (a ``cases.network_case``) in mode ``training``, shows the symptom of
    one trap, which ``_locate`` then names instead of every trap of ``layer_traps``; else
    ``("", "")``: logits that are probabilities (``returns_probabilities``), or a block that is,
    on the backend's own input to it, the reference's with its depthwise or kPointwise BNs'
    epsilon 1e-5 (``epsilon_fits``)."""
    if layer == "logits":
        found = returns_probabilities(got[layer], ref["intermediates"][layer])
        return (found, TRAPS["logits"]) if found else ("", "")
    blocks = {b.name: b for b in ref["arch"].blocks}
    layers = list(ref["intermediates"])  # in the order of the forward pass
    if layer in blocks and (before := layers[layers.index(layer) - 1]) in got:
        return epsilon_fits(blocks[layer], ref["params"], got[before], got[layer], training)
    return "", ""
