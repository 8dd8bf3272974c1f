"""Checks of one backend against the reference. Each returns ``CheckResult`` rows that name the
backend, the check, the layer and the configuration, with the error next to its tolerance.

Usable from pytest (``assert all(r.passed for r in check_kpointwise(backend))``) and from
``gpconv check``. A whole-network disagreement is traced to the first diverging layer by
comparing the backend's intermediate outputs with the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..core import network
from ..core.arch import Architecture, MBConvSpec, with_dropout, without_dropout
from ..core.params import init_params
from ..core.pointwise import KPointwiseSpec, interleave
from . import cases as C
from .results import (
    GRAD_TOL,
    CheckResult,
    Comparison,
    absent,
    allclose,
    gradient_errors,
    moving_stats_error,
    relative_norm,
    scaled_max,
    worst,
)

# Known porting traps, named in failure messages when the symptom fits (DESIGN.md §6).
TRAPS = {
    "stem": "stem: TF 'correct_pad' (asymmetric) vs symmetric padding, BN epsilon (1e-3 vs 1e-5)",
    "top": "top conv: kEffNet's top has no activation (EfficientNet's has swish)",
    "momentum": "BN running stats: Keras's momentum 0.99 keeps 0.99 of the old value "
    "(PyTorch's momentum=0.1 keeps 0.9)",
    "variance": "BN running variance: Keras updates it with the *biased* batch variance "
    "(PyTorch with the unbiased one, n/(n-1) larger)",
    "interleave": "interleave order: out[s*G+g] = in[g*S+s] (ChannelShuffle), not its transpose",
    "residual": "the residual adds the non-interleaved y1, not interleave(y1)",
    "epsilon": "BN epsilon 1e-3 (not 1e-5)",
    "padding": "stride-2 depthwise: TF 'correct_pad' (asymmetric) vs symmetric padding",
    "inference": "inference (training=False) normalises with the moving statistics and leaves "
    "them as they are: no batch statistics, no update",
    "drop-connect branch": "drop-connect drops a sample's whole residual branch (not single "
    "elements, not the identity) and scales a kept one by 1 / (1 - rate), the rate the block "
    "table gives the block",
    "drop-connect": "drop-connect keeps or drops each sample (an (N, 1, 1, 1) mask), not the "
    "whole batch at once",
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
    """``_layer_traps`` of ``spec`` as a hint, or ``""`` when none fits."""
    traps = _layer_traps(spec)
    return "kPointwise: " + "; ".join(traps) if traps else ""


def _block_traps(block: MBConvSpec) -> str:
    """The traps that can make an MBConv block the first diverging layer: correct_pad if it
    strides, and those of its kPointwise layers but epsilon (the stem's BN would diverge first)."""
    traps = [TRAPS["padding"]] if block.padding == "correct" else []
    for spec in (block.expand, block.se_reduce, block.se_expand, block.project):
        if spec is not None:
            traps += [t for t in _layer_traps(spec) if t != TRAPS["epsilon"] and t not in traps]
    return "; ".join(traps)


def layer_traps(arch: Architecture, layer: str) -> str:
    """The porting traps that fit ``layer`` (``stem``, a block name, ``top``) diverging first."""
    if layer in ("stem", "top"):
        return TRAPS[layer]
    blocks = {b.name: b for b in arch.blocks}
    return _block_traps(blocks[layer]) if layer in blocks else ""


# What each interface method must return (docs/adding-a-backend.md), checked before comparing so
# that a wrong return type is an error row naming the method, not a KeyError or TypeError from
# inside a check.
RETURNS = {
    "forward": ("logits",),
    "loss_and_grads": ("loss", "logits", "dx", "grads"),
    "kpointwise": ("y", "dx", "grads", "moving_stats"),
}
# The outputs that are themselves ``{name: array}`` dicts.
NAMED_ARRAYS = ("grads", "moving_stats")


class AdapterError(Exception):
    """An exception raised inside a backend's interface method, re-raised naming the method:
    ``gpconv check`` shows only the message, and a framework's own (say, CUDA out of memory in
    ``build``) does not say which method of the adapter failed."""


def error_detail(err: Exception) -> str:
    """The text of an ``error`` row for ``err``."""
    return str(err) if isinstance(err, AdapterError) else f"{type(err).__name__}: {err}"


def call(backend: Backend, method: str, *args: Any, **kwargs: Any) -> Any:
    """``backend.<method>(*args, **kwargs)``, its result checked against the interface: a
    mapping with the keys in ``RETURNS`` (none of them None), ``export_params`` a mapping,
    ``param_count`` a pair of integers, ``interleave`` not None; every array converted to NumPy
    (a framework tensor that NumPy cannot read, e.g. one requiring grad, is refused naming its
    key). Raises ``TypeError`` naming the method, what it must return and what it did, and
    ``AdapterError`` naming the method for an exception raised inside it."""
    where = f"{type(backend).__name__}.{method}()"
    try:
        out = getattr(backend, method)(*args, **kwargs)
    except Exception as err:
        if where in str(err):  # e.g. the base's NotImplementedError names the method already
            raise
        raise AdapterError(f"{where} raised {type(err).__name__}: {err}") from err
    if method in RETURNS or method == "export_params":
        keys = RETURNS.get(method, ())
        if not isinstance(out, Mapping):
            raise TypeError(
                f"Expected {where} to return a dict"
                + (f" with keys {list(keys)}" if keys else " {name: array}")
                + f", received {type(out).__name__}"
            )
        require_keys(where, out, keys)
        empty = [k for k in keys if out[k] is None]
        if empty:  # e.g. a method body left as ``...`` for one output
            raise TypeError(f"Expected {where} to return arrays for {empty}, received None")
        return _numpy_outputs(where, out, keys, every=method in ("forward", "export_params"))
    if method == "interleave":
        if out is None:
            raise TypeError(f"Expected {where} to return an (N, H, W, C) array, received None")
        return _as_numpy(where, "its result", out)
    if method == "param_count":
        if not (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and all(isinstance(n, (int, np.integer)) for n in out)
        ):
            raise TypeError(
                f"Expected {where} to return (trainable, non_trainable) integers, received {out!r}"
            )
    return out


def require_keys(where: str, out: Mapping, keys: tuple[str, ...], expected: str = "") -> None:
    """``TypeError`` naming ``where`` and the keys of ``keys`` that ``out`` lacks (``expected``:
    how to describe ``keys`` in the message, if not as their list)."""
    missing = [k for k in keys if k not in out]
    if missing:
        raise TypeError(
            f"Expected {where} to return a dict with keys {expected or list(keys)}, received one "
            f"without {missing} (keys {sorted(out)})"
        )


def _numpy_outputs(where: str, out: Mapping, keys: tuple[str, ...], every: bool) -> dict[str, Any]:
    """``out`` with its arrays as NumPy: every value if ``every`` (``export_params``,
    ``forward``), else those of ``keys``, looking into the ``NAMED_ARRAYS`` dicts (the loss too:
    a float becomes a 0-d array)."""
    if every:
        return {k: _as_numpy(where, repr(k), v) for k, v in out.items()}
    converted = dict(out)
    for key in keys:
        if key not in NAMED_ARRAYS:
            converted[key] = _as_numpy(where, repr(key), out[key])
        elif not isinstance(out[key], Mapping):
            raise TypeError(
                f"Expected {where}[{key!r}] to be a dict {{name: array}}, "
                f"received {type(out[key]).__name__}"
            )
        else:
            converted[key] = {k: _as_numpy(where, f"{key}[{k!r}]", v) for k, v in out[key].items()}
    return converted


def _as_numpy(where: str, what: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array, or ``TypeError`` naming ``where`` and ``what``."""
    try:
        return np.asarray(value)
    except Exception as err:  # torch: RuntimeError for a tensor requiring grad, TypeError on CUDA
        raise TypeError(
            f"Expected {where} to return NumPy-convertible arrays, received {what}: "
            f"{type(value).__name__} ({type(err).__name__}: {err})"
        ) from None


def network_outputs(arch: Architecture) -> tuple[str, ...]:
    """The keys of ``forward``'s dict: every intermediate of ``core.network.forward``'s cache."""
    return ("stem", *(b.name for b in arch.blocks), "top", "logits")


def call_forward(
    backend: Backend, arch: Architecture, model: Any, x: np.ndarray, training: bool = False
) -> dict[str, np.ndarray]:
    """``call(backend, "forward", ...)`` for a model of ``arch``, which must return every
    intermediate of ``network_outputs``: a missing one would leave a divergence unlocated."""
    out = call(backend, "forward", model, x, training=training)
    where = f"{type(backend).__name__}.forward()"
    require_keys(where, out, network_outputs(arch), "['stem', <each block>, 'top', 'logits']")
    return out


LOCATE_TOL = 1e-4  # relative to each intermediate's scale, when hunting the first diverging layer


def _result(
    backend: Backend, check: str, layer: str, config: str, cmp: Comparison, hint: str = ""
) -> CheckResult:
    detail = cmp.note
    if not cmp.ok and hint and not (cmp.non_finite or cmp.layout):
        detail = f"{detail}; likely trap: {hint}" if detail else f"likely trap: {hint}"
    return CheckResult(
        backend.name,
        check,
        layer,
        config,
        cmp.error,
        cmp.tolerance,
        "pass" if cmp.ok else "fail",
        detail,
    )


def guarded(
    backend: Backend, check: str, layer: str, config: str, fn: Callable[[], list[CheckResult]]
) -> list[CheckResult]:
    """Run ``fn``; an exception becomes an ``error`` row rather than aborting the whole report."""
    try:
        return fn()
    except Exception as err:  # a broken backend must show as a row, not a traceback
        return [
            CheckResult(
                backend.name,
                check,
                layer,
                config,
                float("inf"),
                0.0,
                "error",
                error_detail(err),
            )
        ]


def check_interleave(backend: Backend, seed: int = 0) -> list[CheckResult]:
    """The channel order of the backend's interleave equals ``core.interleave`` exactly."""
    rng = np.random.default_rng(seed)
    errors: dict[str, Comparison] = {}
    for c, g in C.INTERLEAVE_CASES:
        x = C.f32(rng.standard_normal((2, 3, 3, c)))
        errors[f"C={c} G={g}"] = allclose(
            call(backend, "interleave", x, g), interleave(x, g), rtol=0.0, atol=0.0
        )
    config, cmp = worst(errors)
    return [
        _result(
            backend,
            "interleave order",
            "interleave",
            f"worst of {len(errors)}: {config}",
            cmp,
            TRAPS["interleave"],
        )
    ]


def check_kpointwise(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """kPointwise forward, backward and BN moving statistics on every branch, both modes."""
    rows = []
    for row in C.KPOINTWISE_FULL if full else C.KPOINTWISE_QUICK:
        for training in (False, True):
            rows += guarded(
                backend,
                "kpointwise",
                "kpointwise",
                f"{row} training={training}",
                lambda row=row, training=training: _kpointwise_rows(backend, row, training, seed),
            )
    return rows


def _kpointwise_rows(backend: Backend, row: tuple, training: bool, seed: int) -> list[CheckResult]:
    return compare_kpointwise(backend, C.kpointwise_case(row, training, seed))


def compare_kpointwise(backend: Backend, ref: dict[str, Any]) -> list[CheckResult]:
    """The backend's kPointwise on ``ref``'s inputs (from ``cases.reference_kpointwise``) against
    the reference's forward, backward and moving statistics: one row each."""
    spec, training = ref["spec"], ref["training"]
    got = call(backend, "kpointwise", spec, ref["params"], ref["x"], ref["dy"], training=training)
    label = C.spec_label(spec, training)
    layer = f"kpointwise {spec.cin}->{spec.cout} G={spec.groups}"
    forward = allclose(got["y"], ref["y"])
    out = [_result(backend, "kpointwise forward", layer, label, forward, kpointwise_traps(spec))]
    grads = {
        "dx": relative_norm(got["dx"], ref["dx"]),
        **gradient_errors(got["grads"], ref["grads"], scale=float(np.linalg.norm(ref["dx"]))),
    }
    name, cmp = worst(grads)
    out.append(_result(backend, "kpointwise backward", layer, f"{label} worst={name}", cmp))
    if ref["moving_stats"]:
        stats = {
            k: allclose(got["moving_stats"][k], v)
            if k in got["moving_stats"]
            else absent(k, got["moving_stats"])
            for k, v in ref["moving_stats"].items()
        }
        name, cmp = worst(stats)
        # The second BN's statistics are of interleave(y1): a forward that diverged (say, the
        # interleave order) makes them wrong whatever the BN update does.
        hint = (
            moving_stats_trap(stats) if forward.ok else FORWARD_FIRST.format("kpointwise forward")
        )
        out.append(_result(backend, "bn moving stats", layer, f"{label} worst={name}", cmp, hint))
    return out


# One image repeated this many times. With per-sample masks at drop_connect_rate 0.5 (B0's 9
# residual blocks drop with rates 0.06-0.44), that more than half of the other copies draw the first
# copy's keep/drop pattern in every block has a probability of 2e-8: the check does not flake.
DROP_CONNECT_COPIES = 16
DROP_CONNECT_RATE = 0.5


def check_drop_connect(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """Drop-connect is drawn per sample, as in Keras and torchvision. The training checks run
    without it (the interface cannot take the reference's random masks), so this one runs a
    model with ``drop_connect_rate`` 0.5 and no head dropout, in training mode, on one image
    repeated ``DROP_CONNECT_COPIES`` times. Without drop-connect every copy would give the same
    logits; per-sample masks make most copies differ; one mask for the whole batch (or none)
    leaves them all equal. The error is the share of copies whose logits equal the first copy's
    (within 1e-4 of the logits' scale); more than half is a failure."""
    rows = []
    for model, m in _models(full):
        arch = without_dropout(C.network_arch(model, m, training=False))
        arch = with_dropout(arch, drop_connect_rate=DROP_CONNECT_RATE)
        label = (
            f"{C.network_label(model, m)} drop_connect_rate={DROP_CONNECT_RATE}, "
            f"{DROP_CONNECT_COPIES} copies of one image"
        )

        def rows_of(arch: Architecture = arch, label: str = label) -> list[CheckResult]:
            rng = np.random.default_rng([seed, 2])
            params = C.randomise(arch.param_shapes(), init_params(arch, seed, np.float64), rng)
            image = C.f32(rng.standard_normal((1, C.IMAGE_SIZE, C.IMAGE_SIZE, 3)))
            native = call(backend, "build", arch)
            call(backend, "load_params", native, params)
            got = call_forward(
                backend, arch, native, np.repeat(image, DROP_CONNECT_COPIES, 0), True
            )
            logits = np.asarray(got["logits"], dtype=np.float64)
            expected = (DROP_CONNECT_COPIES, arch.num_classes)
            if logits.shape != expected:
                note = f"logits of shape {logits.shape}, expected {expected}"
                cmp = Comparison(float("inf"), 0.5, note, layout=True)
            elif not np.all(np.isfinite(logits)):
                cmp = Comparison(float("inf"), 0.5, "non-finite logits", non_finite=True)
            else:
                scale = float(np.max(np.abs(logits)))
                same = np.all(np.abs(logits - logits[:1]) <= 1e-4 * scale, axis=1)[1:]
                share = float(np.mean(same))
                note = f"{int(np.sum(same))} of {same.size} copies gave the first copy's logits"
                cmp = Comparison(share, 0.5, note if share > 0.5 else "")
            block, branch, hint = drop_connect_branch_error(arch, params, image, got)
            return [
                _result(
                    backend, "drop-connect per sample", "blocks", label, cmp, TRAPS["drop-connect"]
                ),
                _result(backend, "drop-connect branch", block, label, branch, hint),
            ]

        rows += guarded(backend, "drop-connect per sample", "blocks", label, rows_of)
    return rows


def _first_dropping_block(arch: Architecture) -> tuple[str, MBConvSpec]:
    """The first residual block with a drop rate above 0, and the name of the layer before it
    (the stem or a block): copies of one image are still identical at that block's input."""
    before = "stem"
    for block in arch.blocks:
        if block.residual and block.drop_rate > 0:
            return before, block
        before = block.name
    raise ValueError(f"Expected a residual block that drops in {arch.name}, found none")


def drop_connect_branch_error(
    arch: Architecture, params: Mapping[str, np.ndarray], image: np.ndarray, got: Mapping
) -> tuple[str, Comparison, str]:
    """``(block, comparison, trap)`` for the first block that drops (``_first_dropping_block``, rate
    ``r``), from ``got``, the backend's training forward of ``DROP_CONNECT_COPIES`` copies of
    ``image`` ``(1, H, W, 3)``. Until that block the copies are identical (the batch statistics
    of equal copies are those of one), so copy ``i`` leaves it as ``x + y / (1 - r)`` if kept or
    ``x`` if dropped, with the reference's input ``x`` and residual branch ``y`` for the image.
    The error is each copy's distance to the nearer of the two (the worst copy), within
    ``LOCATE_TOL`` of their scale: a mask per element, a kept branch scaled for another rate (or
    not at all), or a drop of the identity too is near neither. Every copy dropped fails too:
    the first dropping block of B0 has rate 1/16, so that has a probability of 16**-16. The trap
    is the forward pass when the block's input already differs from the reference's."""
    before, block = _first_dropping_block(arch)
    trap = TRAPS["drop-connect branch"]
    _, cache = network.forward(without_dropout(arch), dict(params), image, training=True)
    x = cache["intermediates"][before][0]
    kept = x + (cache["intermediates"][block.name][0] - x) / (1 - block.drop_rate)
    tol = LOCATE_TOL * max(1.0, float(np.max(np.abs(kept))))
    missing = [k for k in (before, block.name) if k not in got]
    if missing:
        note = f"forward() returned no {missing} output (every block's is part of the interface)"
        return block.name, Comparison(float("inf"), tol, note, layout=True), trap
    copies = {k: np.asarray(got[k], np.float64) for k in (before, block.name)}
    expected = (DROP_CONNECT_COPIES, *x.shape)
    for k, v in copies.items():
        if v.shape != expected:
            note = f"{k} output of shape {v.shape}, expected {expected}"
            return block.name, Comparison(float("inf"), tol, note, layout=True), trap
        if not np.all(np.isfinite(v)):
            cmp = Comparison(float("inf"), tol, f"non-finite {k} output", non_finite=True)
            return block.name, cmp, trap
    if (diverged := float(np.max(np.abs(copies[before] - x)))) > tol:
        note = f"its input {before} already differs from the reference's by {diverged:.3g}"
        return block.name, Comparison(diverged, tol, note), FORWARD_FIRST.format(before)
    axes = tuple(range(1, x.ndim + 1))
    to_dropped = np.max(np.abs(copies[block.name] - x), axis=axes)
    to_kept = np.max(np.abs(copies[block.name] - kept), axis=axes)
    nearer = np.minimum(to_dropped, to_kept)
    error = float(np.max(nearer))
    n_kept, n_neither = int(np.sum(to_kept <= tol)), int(np.sum(nearer > tol))
    note = (
        f"rate {block.drop_rate:.4g}: {n_kept} of {DROP_CONNECT_COPIES} copies kept, "
        f"{DROP_CONNECT_COPIES - n_kept - n_neither} dropped"
    )
    if n_neither:
        note += f", {n_neither} neither x (dropped) nor x + y / (1 - rate) (kept)"
    elif n_kept == 0:
        error, note = float("inf"), f"{note}: every copy dropped"
    return block.name, Comparison(error, tol, note), trap


def _models(full: bool) -> tuple:
    return C.NETWORKS_FULL if full else C.NETWORKS_QUICK


def check_params(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """Parameter counts as the framework counts them, a bit-exact exchange round trip, and
    exports that stay as they were when the model changes."""
    rows = []
    for model, m in _models(full):
        label = C.network_label(model, m)

        def run(model=model, m=m, label=label) -> list[CheckResult]:
            case = C.network_case(model, m, False, seed)
            arch = case["arch"]
            native = call(backend, "build", arch)
            counted = call(backend, "param_count", native)
            expected = arch.param_count()
            count_err = float(sum(abs(a - b) for a, b in zip(counted, expected)))
            out = [
                CheckResult(
                    backend.name,
                    "param count",
                    "model",
                    f"{label}: {counted} vs {expected}",
                    count_err,
                    0.0,
                    "pass" if count_err == 0 else "fail",
                )
            ]
            call(backend, "load_params", native, case["params"])
            exported = call(backend, "export_params", native)
            missing = sorted(set(case["params"]) - set(exported)) + sorted(
                set(exported) - set(case["params"])
            )
            diffs = {
                k: allclose(exported[k], np.float32(v), 0.0, 0.0)
                for k, v in case["params"].items()
                if k in exported
            }
            name, cmp = worst(diffs)
            if missing:
                cmp = Comparison(float("inf"), 0.0, f"names differ: {missing[:5]}")
            out.append(_result(backend, "param round trip", name, label, cmp))
            # An export is a snapshot: arrays that view the model's memory would change with it,
            # whether the model changes by a load (in place, as frameworks load) or by a
            # training step (moving statistics are updated in place even where a load rebinds).
            snapshot = {k: np.array(v) for k, v in exported.items()}
            call(backend, "loss_and_grads", native, case["x"], case["labels"], training=True)
            call(
                backend,
                "load_params",
                native,
                {k: np.asarray(v) + 1 for k, v in case["params"].items()},
            )
            name, cmp = worst({k: allclose(exported[k], v, 0.0, 0.0) for k, v in snapshot.items()})
            out.append(_result(backend, "param export is a copy", name, label, cmp))
            return out

        rows += guarded(backend, "params", "model", label, run)
    return rows


def check_network(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """Whole networks, in each mode: logits, loss, gradients, dx and the moving statistics
    (updated in training, unchanged in inference)."""
    rows = []
    for model, m in _models(full):
        for training in (False, True):
            label = f"{C.network_label(model, m)} {'training' if training else 'inference'}"
            rows += guarded(
                backend,
                "network",
                "model",
                label,
                lambda model=model, m=m, training=training, label=label: _network_rows(
                    backend, model, m, training, seed, label
                ),
            )
    return rows


def _network_rows(
    backend: Backend, model: str, m: int | None, training: bool, seed: int, label: str
) -> list[CheckResult]:
    ref = C.network_case(model, m, training, seed)
    native = call(backend, "build", ref["arch"])
    call(backend, "load_params", native, ref["params"])
    if training:
        got = call(backend, "loss_and_grads", native, ref["x"], ref["labels"], training=True)
        cmp = scaled_max(got["logits"], ref["logits"])
        forward_ok = cmp.ok
        if cmp.ok:
            out = [_result(backend, "network logits", "logits", label, cmp)]
        else:
            fresh = call(backend, "build", ref["arch"])
            call(backend, "load_params", fresh, ref["params"])
            forward = call_forward(backend, ref["arch"], fresh, ref["x"], training=True)
            out = [_locate(backend, "network logits", label, cmp, forward, ref)]
        # Statistics of a forward pass that already diverged are wrong whatever the BN update does.
        hint = FORWARD_FIRST.format("network logits")
    else:
        forward = call_forward(backend, ref["arch"], native, ref["x"], training=False)
        cmp = scaled_max(forward["logits"], ref["logits"])
        out = [_locate(backend, "network logits", label, cmp, forward, ref)]
        # Inference gradients (fine-tuning with frozen batch norms) and statistics that neither
        # pass may change: a backend that trains when told not to fails here, not above.
        got = call(backend, "loss_and_grads", native, ref["x"], ref["labels"], training=False)
        # The moving statistics are calibrated to the batch statistics of x, so an update on x
        # would hardly move them; on twice x (batch statistics far from them) it shows.
        call(backend, "forward", native, 2 * ref["x"], training=False)
        call(backend, "loss_and_grads", native, 2 * ref["x"], ref["labels"], training=False)
        forward_ok, hint = False, TRAPS["inference"]
    return out + _loss_rows(backend, native, ref, got, label, forward_ok, hint)


def _loss_rows(
    backend: Backend,
    native: Any,
    ref: dict[str, Any],
    got: dict[str, Any],
    label: str,
    forward_ok: bool,
    hint: str,
) -> list[CheckResult]:
    """Rows for a ``loss_and_grads`` result ``got`` against ``ref`` (``cases.network_case`` of
    the same mode): loss, every gradient with the input's, and the moving statistics the model
    exports afterwards. A failing statistics row names ``moving_stats_trap`` if ``forward_ok``,
    else ``hint``."""
    out = [
        _result(
            backend,
            "network loss",
            "loss",
            label,
            allclose(got["loss"], ref["loss"], rtol=GRAD_TOL, atol=1e-6),
        )
    ]
    grads = {
        "input": relative_norm(got["dx"], ref["dx"]),
        **gradient_errors(got["grads"], ref["grads"], scale=float(np.linalg.norm(ref["dx"]))),
    }
    name, cmp = worst(grads)
    out.append(_result(backend, "network gradients", name, label, cmp))
    exported = call(backend, "export_params", native)
    stats = {
        k: moving_stats_error(exported[k], v, ref["params"][k])
        if k in exported
        else absent(k, exported)
        for k, v in ref["moving_stats"].items()
    }
    name, cmp = worst(stats)
    hint = moving_stats_trap(stats) if forward_ok else hint
    out.append(_result(backend, "network moving stats", name.rsplit("/", 2)[0], label, cmp, hint))
    return out


def _locate(
    backend: Backend, check: str, label: str, cmp: Comparison, got: dict, ref: dict
) -> CheckResult:
    """On failure, name the first intermediate (stem, blocks, top, logits) that diverges."""
    if cmp.ok:
        return _result(backend, check, "logits", label, cmp)
    for layer, expected in ref["intermediates"].items():
        if layer not in got:
            continue
        local = scaled_max(got[layer], expected, LOCATE_TOL)
        if not local.ok:
            note = (
                f"first diverging layer {layer}: max|Δ|={local.error:.3g} > {local.tolerance:.3g}"
            )
            if local.note:
                note += f" ({local.note})"
            # The flags travel with the note: a NaN or a channels-first intermediate is no trap.
            located = Comparison(cmp.error, cmp.tolerance, note, local.non_finite, local.layout)
            return _result(backend, check, layer, label, located, layer_traps(ref["arch"], layer))
    return _result(backend, check, "logits", label, cmp)


CHECKS: dict[str, Callable[..., list[CheckResult]]] = {
    "interleave": check_interleave,
    "kpointwise": check_kpointwise,
    "params": check_params,
    "network": check_network,
    "drop-connect": check_drop_connect,
}


def run_backend_checks(
    backend: Backend, seed: int = 0, full: bool = False, only: tuple[str, ...] | None = None
) -> Iterator[CheckResult]:
    """Every check (or those named in ``only``) of one backend, in order."""
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        kwargs: dict[str, Any] = {"seed": seed}
        if name != "interleave":
            kwargs["full"] = full
        yield from guarded(
            backend, name, "-", "", lambda fn=fn, kwargs=kwargs: fn(backend, **kwargs)
        )
