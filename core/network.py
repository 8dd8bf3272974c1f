"""Whole-network forward and backward over an ``Architecture`` (``core.arch``).

``params`` is the flat canonical dict ``{name: array}`` of ``Architecture.param_shapes``. Data is
channels-last ``(N, H, W, 3)``; the network returns logits ``(N, num_classes)``.

Training mode uses batch statistics in every BN and returns the updated moving statistics in
``cache["moving_stats"]`` (Keras's rule); it applies dropout and drop-connect with masks taken
from ``masks`` (``{site: 0/1 array}``, sites ``"<block>_drop"`` of every residual block, shape
``(N, 1, 1, 1)``, and ``"top_dropout"`` of shape ``(N, C)``) or drawn from ``rng``. Use
``core.arch.without_dropout(arch)`` for deterministic comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from array_api_compat import device, is_array_api_obj

from ._validate import (
    array_kind,
    check_cache,
    check_dy,
    counted,
    make_rng,
    namespace,
    require_binary,
    require_bool,
    require_float,
    require_ndim,
    require_nonnegative,
    require_same_shape,
)
from .arch import Architecture, HeadSpec, MBConvSpec, StemSpec, require_arch
from .ops import (
    Add,
    BatchNorm,
    ChannelScale,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    GlobalAveragePool,
    SoftmaxCrossEntropy,
    Swish,
)
from .ops.loss import check_labels
from .params import init_params, sub_params, validate_params
from .pointwise import KPointwise

__all__ = ["backward", "block_forward", "forward", "init_params", "loss_and_grads", "sgd_step"]

Masks = dict[str, Any]


def _bn_swish(params: dict, prefix: str, y: Any, training: bool, stats: dict):
    y, c_bn = BatchNorm.forward(
        y,
        params[f"{prefix}/gamma"],
        params[f"{prefix}/beta"],
        params[f"{prefix}/moving_mean"],
        params[f"{prefix}/moving_variance"],
        training=training,
    )
    if training:
        stats[f"{prefix}/moving_mean"], stats[f"{prefix}/moving_variance"] = (
            BatchNorm.updated_moving_stats(
                params[f"{prefix}/moving_mean"], params[f"{prefix}/moving_variance"], c_bn
            )
        )
    y, c_act = Swish.forward(y)
    return y, (c_bn, c_act)


def _bn_swish_backward(caches: tuple, dy: Any, prefix: str, grads: dict) -> Any:
    c_bn, c_act = caches
    dy, _ = Swish.backward(c_act, dy)
    dy, g = BatchNorm.backward(c_bn, dy)
    grads[f"{prefix}/gamma"], grads[f"{prefix}/beta"] = g["gamma"], g["beta"]
    return dy


def _pointwise(params: dict, name: str, spec, x: Any, training: bool, stats: dict):
    y, cache = KPointwise.forward(spec, sub_params(params, name), x, training)
    stats.update({f"{name}/{k}": v for k, v in cache["moving_stats"].items()})
    return y, cache


def _pointwise_backward(cache: dict, dy: Any, name: str, grads: dict) -> Any:
    dx, g = KPointwise.backward(cache, dy)
    grads.update({f"{name}/{k}": v for k, v in g.items()})
    return dx


def _mask_shapes(arch: Architecture, batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{site: (shape, what it means)}`` of every dropout site ``masks`` may name, for a batch
    of ``batch``: ``"<block>_drop"`` ``(N, 1, 1, 1)`` per residual block and ``"top_dropout"``
    ``(N, C)`` before the dense layer. Sites with rate 0 are listed too, so one masks dict serves
    ``arch`` and ``without_dropout(arch)`` alike."""
    per_sample = "drop-connect keeps or drops whole samples"
    shapes = {f"{b.name}_drop": ((batch, 1, 1, 1), per_sample) for b in arch.blocks if b.residual}
    shapes["top_dropout"] = ((batch, arch.head.top.cout), "one entry per sample and channel")
    return shapes


def _check_masks(arch: Architecture, masks: Masks, x: Any) -> None:
    """Raise unless every mask names a site of ``arch`` and is a 0/1 array of that site's shape,
    of the library of the images ``x`` (a torch mask for NumPy images is named as the mask).

    Checked up front, in inference mode too: a misspelt site would otherwise be skipped silently
    and its mask drawn from ``rng``, and a mask of the wrong shape may still broadcast (a
    per-element drop-connect mask is another model, not an error NumPy would see)."""
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"Expected masks to be a dict {{site: array}}, received {type(masks).__name__}"
        )
    expected = _mask_shapes(arch, x.shape[0])
    unknown = [k for k in masks if k not in expected]
    if unknown:
        raise ValueError(
            f"Expected masks to name dropout sites of {arch.name}, received unknown "
            f"{', '.join(map(repr, unknown))}; valid sites: {', '.join(map(repr, expected))}"
        )
    for site, mask in masks.items():
        name = f"masks[{site!r}]"
        xp = namespace(x, mask, names=("x", name))
        shape, why = expected[site]
        require_same_shape(name, mask, shape, why)
        require_binary(name, xp, mask)


def _dropout_mask(
    xp: Any,
    like: Any,
    shape: tuple[int, ...],
    rate: float,
    site: str,
    masks: Masks | None,
    rng: np.random.Generator,
) -> Any:
    if masks is not None and site in masks:
        return masks[site]
    keep = rng.random(shape) >= rate
    return xp.asarray(keep.astype(np.float64), dtype=like.dtype, device=device(like))


# --- stem -------------------------------------------------------------------------------------


def _stem_forward(spec: StemSpec, params: dict, x: Any, training: bool, stats: dict):
    y, c_conv = Conv2D.forward(x, params["stem_conv/kernel"], spec.stride, spec.padding)
    y, c_bn = _bn_swish(params, "stem_bn", y, training, stats)
    return y, (c_conv, c_bn)


def _stem_backward(cache: tuple, dy: Any, grads: dict) -> Any:
    c_conv, c_bn = cache
    dy = _bn_swish_backward(c_bn, dy, "stem_bn", grads)
    dx, g = Conv2D.backward(c_conv, dy)
    grads["stem_conv/kernel"] = g["kernel"]
    return dx


# --- MBConv block -----------------------------------------------------------------------------


def _block_forward(
    b: MBConvSpec,
    params: dict,
    x: Any,
    training: bool,
    stats: dict,
    masks: Masks | None,
    rng: np.random.Generator,
):
    c: dict[str, Any] = {}
    y = x
    if b.expand is not None:
        y, c["expand"] = _pointwise(params, f"{b.name}_expand", b.expand, y, training, stats)
    y, c["dw"] = DepthwiseConv2D.forward(y, params[f"{b.name}_dwconv/kernel"], b.stride, b.padding)
    y, c["dw_bn"] = _bn_swish(params, f"{b.name}_bn", y, training, stats)
    if b.se_reduce is not None:
        s, c["squeeze"] = GlobalAveragePool.forward(y, keepdims=True)
        s, c["se_reduce"] = _pointwise(
            params, f"{b.name}_se_reduce", b.se_reduce, s, training, stats
        )
        s, c["se_expand"] = _pointwise(
            params, f"{b.name}_se_expand", b.se_expand, s, training, stats
        )
        y, c["excite"] = ChannelScale.forward(y, s)
    y, c["project"] = _pointwise(params, f"{b.name}_project", b.project, y, training, stats)
    if b.residual:
        mask = None
        if training and b.drop_rate > 0:
            xp = namespace(y)
            mask = _dropout_mask(
                xp, y, (y.shape[0], 1, 1, 1), b.drop_rate, f"{b.name}_drop", masks, rng
            )
        y, c["drop"] = Dropout.forward(y, mask, b.drop_rate)
        y, c["add"] = Add.forward(y, x)
    return y, c


def block_forward(block: MBConvSpec, params: Mapping[str, Any], x: Any, training: bool) -> Any:
    """One MBConv ``block``'s output for ``x`` ``(N, H, W, Cin)`` -> ``(N, H', W', Cout)``, without
    drop-connect: in training mode with the batch statistics of ``x`` (moving statistics are not
    updated), else with the moving statistics of ``params`` (canonical names). What a backend's
    block must give for the same input, whatever happened before it (``gpconv check`` traces
    drop-connect block by block with it).

    ``params`` may hold other layers' entries too (the whole network's dict); the block's own must
    all be there, with their shapes and a floating dtype: one ``ValueError`` lists every one that
    is not, rather than a ``KeyError`` or an op's error naming ``kernel`` alone."""
    if not isinstance(block, MBConvSpec):
        raise TypeError(
            "Expected block to be an MBConvSpec (an item of Architecture.blocks), "
            f"received {type(block).__name__} {block!r}"[:200]
        )
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a dict {{name: array}}, received {type(params).__name__}"
        )
    own = {k: params[k] for k in block.param_shapes() if k in params}
    # MBConvSpec has name and param_shapes(), as validate_params asks; no value scan per call
    validate_params(block, own, values=False)
    training = require_bool("training", training)
    y, _ = _block_forward(
        replace(block, drop_rate=0.0), own, x, training, {}, None, np.random.default_rng(0)
    )
    return y


def _block_backward(b: MBConvSpec, c: dict, dy: Any, grads: dict) -> Any:
    dx_skip = None
    if b.residual:
        (dy, dx_skip), _ = Add.backward(c["add"], dy)
        dy, _ = Dropout.backward(c["drop"], dy)
    dy = _pointwise_backward(c["project"], dy, f"{b.name}_project", grads)
    if b.se_reduce is not None:
        (dy, ds), _ = ChannelScale.backward(c["excite"], dy)
        ds = _pointwise_backward(c["se_expand"], ds, f"{b.name}_se_expand", grads)
        ds = _pointwise_backward(c["se_reduce"], ds, f"{b.name}_se_reduce", grads)
        dsq, _ = GlobalAveragePool.backward(c["squeeze"], ds)
        dy = dy + dsq  # the SE branch re-joins the main path
    dy = _bn_swish_backward(c["dw_bn"], dy, f"{b.name}_bn", grads)
    dy, g = DepthwiseConv2D.backward(c["dw"], dy)
    grads[f"{b.name}_dwconv/kernel"] = g["kernel"]
    if b.expand is not None:
        dy = _pointwise_backward(c["expand"], dy, f"{b.name}_expand", grads)
    return dy if dx_skip is None else dy + dx_skip


# --- head -------------------------------------------------------------------------------------


def _head_forward(
    h: HeadSpec,
    params: dict,
    x: Any,
    training: bool,
    stats: dict,
    masks: Masks | None,
    rng: np.random.Generator,
):
    c: dict[str, Any] = {}
    y, c["top"] = _pointwise(params, "top", h.top, x, training, stats)
    c["top_out"] = y
    y, c["pool"] = GlobalAveragePool.forward(y)
    mask = None
    if training and h.dropout > 0:
        mask = _dropout_mask(namespace(y), y, tuple(y.shape), h.dropout, "top_dropout", masks, rng)
    y, c["dropout"] = Dropout.forward(y, mask, h.dropout)
    y, c["dense"] = Dense.forward(y, params["predictions/kernel"], params["predictions/bias"])
    return y, c


def _head_backward(c: dict, dy: Any, grads: dict) -> Any:
    dy, g = Dense.backward(c["dense"], dy)
    grads["predictions/kernel"], grads["predictions/bias"] = g["kernel"], g["bias"]
    dy, _ = Dropout.backward(c["dropout"], dy)
    dy, _ = GlobalAveragePool.backward(c["pool"], dy)
    return _pointwise_backward(c["top"], dy, "top", grads)


# --- whole network ----------------------------------------------------------------------------


def forward(
    arch: Architecture,
    params: dict,
    x: Any,
    training: bool = False,
    masks: Masks | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[Any, dict]:
    """Logits ``(N, num_classes)`` for images ``x`` ``(N, H, W, 3)``, and the cache for
    ``backward``.

    ``masks`` may name only the dropout sites of ``arch`` (module docstring), with 0/1 arrays of
    those shapes, in either mode; ``rng`` is a ``np.random.Generator``, a seed (int >= 0) or
    ``None`` (fresh entropy).
    ``cache["moving_stats"]`` holds the updated BN moving statistics (training mode only) and
    ``cache["intermediates"]`` the output of ``stem``, of every block, of ``top`` (the top
    pointwise conv) and ``logits``: what conformance compares to find the first diverging layer.
    """
    validate_params(require_arch(arch), params, values=False)  # values: checked on load
    xp = namespace(x, names=("x",))
    require_ndim("x", x, 4, "(N, H, W, C)")
    require_float(xp, "x", x)
    if x.shape[-1] != arch.stem.cin:
        raise ValueError(
            f"Expected x.shape[-1] == {arch.stem.cin} (channels-last images), "
            f"received x.shape={tuple(x.shape)}"
        )
    training = require_bool("training", training)
    rng = make_rng("rng", rng, generator_ok=True, none_ok=True)
    if masks is not None:
        _check_masks(arch, masks, x)
    stats: dict[str, Any] = {}
    y, c_stem = _stem_forward(arch.stem, params, x, training, stats)
    intermediates = {"stem": y}
    c_blocks = []
    for b in arch.blocks:
        y, c = _block_forward(b, params, y, training, stats, masks, rng)
        c_blocks.append(c)
        intermediates[b.name] = y
    logits, c_head = _head_forward(arch.head, params, y, training, stats, masks, rng)
    intermediates["top"] = c_head.pop("top_out")
    intermediates["logits"] = logits
    cache = {
        "op": "network",
        "arch": arch,
        "stem": c_stem,
        "blocks": c_blocks,
        "head": c_head,
        "moving_stats": stats,
        "intermediates": intermediates,
        "y_shape": tuple(logits.shape),
    }
    return logits, cache


def backward(cache: dict, dlogits: Any) -> tuple[Any, dict]:
    """``(dx, grads)``: the gradient w.r.t. the input images and every trainable parameter."""
    check_cache(cache, "network")
    check_dy(cache["y_shape"], dlogits, "network")
    arch: Architecture = cache["arch"]
    grads: dict[str, Any] = {}
    dy = _head_backward(cache["head"], dlogits, grads)
    for b, c in zip(reversed(arch.blocks), reversed(cache["blocks"])):
        dy = _block_backward(b, c, dy, grads)
    dx = _stem_backward(cache["stem"], dy, grads)
    order = [k for k, (_, trainable) in arch.param_shapes().items() if trainable]
    return dx, {k: grads[k] for k in order}


def loss_and_grads(
    arch: Architecture,
    params: dict,
    x: Any,
    labels: Any,
    training: bool = True,
    masks: Masks | None = None,
    rng: np.random.Generator | int | None = None,
) -> dict:
    """Forward, softmax cross-entropy and backward in one call.

    Returns ``{"loss", "logits", "grads", "dx", "moving_stats"}``. ``labels`` ``(N,)`` are
    integers in ``[0, num_classes)``, checked before the forward pass.
    """
    xp = namespace(x, labels, names=("x", "labels"))
    require_ndim("x", x, 4, "(N, H, W, C)")
    check_labels(xp, labels, x.shape[0], require_arch(arch).num_classes)
    logits, cache = forward(arch, params, x, training=training, masks=masks, rng=rng)
    loss, c_loss = SoftmaxCrossEntropy.forward(logits, labels)
    dlogits, _ = SoftmaxCrossEntropy.backward(c_loss)
    dx, grads = backward(cache, dlogits)
    return {
        "loss": loss,
        "logits": logits,
        "grads": grads,
        "dx": dx,
        "moving_stats": cache["moving_stats"],
    }


def sgd_step(
    params: dict,
    grads: dict,
    lr: float,
    momentum: float = 0.0,
    velocity: dict | None = None,
    moving_stats: dict | None = None,
) -> tuple[dict, dict]:
    """One SGD (+momentum) step: ``v = momentum*v - lr*g; p = p + v``. Moving statistics from a
    training forward are written in. Returns new ``(params, velocity)``; inputs are not modified.

    ``lr`` and ``momentum`` are finite and >= 0. Every entry of ``grads``, ``velocity`` and
    ``moving_stats`` must name a parameter and have its shape and dtype: a gradient that merely
    broadcasts, or one that would promote float32 parameters to float64, is refused (one
    ``ValueError`` listing every such entry) rather than applied.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a dict {{name: array}}, received {type(params).__name__}"
        )
    lr = require_nonnegative("lr", lr)
    momentum = require_nonnegative("momentum", momentum)
    problems = [
        problem
        for what, updates in (
            ("grads", grads),
            ("velocity", velocity or {}),
            ("moving_stats", moving_stats or {}),
        )
        for problem in _update_problems(params, updates, what)
    ]
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(
            f"sgd_step cannot apply ({counted(len(problems), 'problem')}):\n  {listing}"
        )
    velocity = dict(velocity or {})
    new = dict(params)
    for name, g in grads.items():
        v = momentum * velocity[name] - lr * g if name in velocity else -lr * g
        velocity[name] = v
        new[name] = params[name] + v
    new.update(moving_stats or {})
    return new, velocity


def _update_problems(params: Mapping, updates: Mapping, what: str) -> list[str]:
    """Why each entry of ``updates`` cannot be applied to ``params`` (empty if all can)."""
    if not isinstance(updates, Mapping):
        return [f"{what}: expected a dict {{name: array}}, received {type(updates).__name__}"]
    problems = []
    for name, a in updates.items():
        if name not in params:
            problems.append(f"{what}[{name!r}]: not a parameter name")
            continue
        p = params[name]
        got = tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
        if is_array_api_obj(a) and not _same_library(p, a):
            # Else a torch gradient reads "expected dtype float32, received torch.float32".
            problems.append(
                f"{what}[{name!r}]: expected a {array_kind(p)} (the library of params), "
                f"received {array_kind(a)}"
            )
        elif got != tuple(p.shape):
            problems.append(f"{what}[{name!r}]: expected shape {tuple(p.shape)}, received {got}")
        elif getattr(a, "dtype", None) != p.dtype:
            problems.append(f"{what}[{name!r}]: expected dtype {p.dtype}, received {a.dtype}")
    return problems


def _same_library(a: Any, b: Any) -> bool:
    """Whether arrays ``a`` and ``b`` belong to one array library (NumPy, CuPy, torch...)."""
    try:
        namespace(a, b)
    except TypeError:
        return False
    return True
