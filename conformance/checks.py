"""Checks of one backend against the reference. Each returns ``CheckResult`` rows that name the
backend, the check, the layer and the configuration, with the error next to its tolerance.

Usable from pytest (``assert all(r.passed for r in check_kpointwise(backend))``) and from
``gpconv check``. A whole-network disagreement is traced to the first diverging layer by
comparing the backend's intermediate outputs with the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..core import network
from ..core.arch import Architecture, MBConvSpec, with_dropout, without_dropout
from ..core.params import init_params
from ..core.pointwise import interleave
from . import cases as C
from .results import (
    GRAD_TOL,
    LOCATE_TOL,
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
from .traps import (
    FORWARD_FIRST,
    TRAPS,
    epsilon_fits,
    kpointwise_traps,
    layer_traps,
    moving_stats_trap,
    returns_probabilities,
    symptom_trap,
)

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
        array = np.asarray(value)
    except Exception as err:  # torch: RuntimeError for a tensor requiring grad, TypeError on CUDA
        raise TypeError(
            f"Expected {where} to return NumPy-convertible arrays, received {what}: "
            f"{type(value).__name__} ({type(err).__name__}: {err})"
        ) from None
    if array.dtype.kind not in "biuf":  # np.asarray takes a str (or any object) as a 0-d array
        raise TypeError(
            f"Expected {where} to return numeric arrays, received {what}: "
            f"{type(value).__name__} of dtype {array.dtype}"
        )
    return array


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
        expected = interleave(x, g)  # first, and the backend gets a copy: it may write into x
        config = f"C={c} G={g}"

        def compare(x=x, g=g, expected=expected, config=config) -> list[CheckResult]:
            got = call(backend, "interleave", x.copy(), g)
            errors[config] = allclose(got, expected, rtol=0.0, atol=0.0)
            return []

        # a backend that raises gets an error row naming the case, as the other checks do
        if failed := guarded(backend, "interleave order", "interleave", config, compare):
            return failed
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
# The image size of the dropout checks, smaller than the network checks' 32: the drop-connect
# check runs the reference through every block for all the copies, and at 16x16 (feature maps
# 15 -> 8 -> 4 with skip 3) that and the backend's forward cost a quarter as much.
DROPOUT_IMAGE_SIZE = 16
# "Every copy dropped" fails a block only where a correct backend does that with at most this
# probability, rate ** DROP_CONNECT_COPIES: B0's blocks of rates 0.06-0.22 (3e-11 together), not
# its late ones (0.28-0.44: 2.5e-6 a network, 7.5e-6 a --full run of each backend, far above the
# 2e-8 this check allows itself). A backend that drops every branch still fails at the first.
ALL_DROPPED_MAX_PROBABILITY = 1e-9


def check_drop_connect(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """Drop-connect is drawn per sample, as in Keras and torchvision. The training checks run
    without it (the interface cannot take the reference's random masks), so this one runs a
    model with ``drop_connect_rate`` 0.5 and no head dropout, in training mode, on one image
    repeated ``DROP_CONNECT_COPIES`` times. Without drop-connect every copy would give the same
    logits; per-sample masks make most copies differ; one mask for the whole batch (or none)
    leaves them all equal. The error is the share of copies whose logits equal the first copy's
    (within 1e-4 of the logits' scale); more than half is a failure. The branch row checks
    every block's output for the copies (``drop_connect_branch_error``): the schedule, the
    scale, the mask's shape, and no drop-connect in blocks without a residual."""
    rows = []
    for net in _architectures(full):
        arch = without_dropout(C.network_arch(net, training=False))
        arch = with_dropout(arch, drop_connect_rate=DROP_CONNECT_RATE)
        label = (
            f"{C.network_label(net, DROP_CONNECT_COPIES, DROPOUT_IMAGE_SIZE)} "
            f"drop_connect_rate={DROP_CONNECT_RATE}, "
            f"{DROP_CONNECT_COPIES} copies of one image"
        )

        def rows_of(arch: Architecture = arch, label: str = label) -> list[CheckResult]:
            rng = np.random.default_rng([seed, 2])
            params = C.randomise(arch.param_shapes(), init_params(arch, seed, np.float64), rng)
            image = C.f32(rng.standard_normal((1, DROPOUT_IMAGE_SIZE, DROPOUT_IMAGE_SIZE, 3)))
            native = call(backend, "build", arch)
            call(backend, "load_params", native, params)
            got = call_forward(
                backend, arch, native, np.repeat(image, DROP_CONNECT_COPIES, 0), True
            )
            logits = np.asarray(got["logits"], dtype=np.float64)
            expected = (DROP_CONNECT_COPIES, arch.num_classes)
            if unusable := _unusable("logits", logits, expected, 0.5):
                cmp = unusable
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


def _unusable(
    what: str, value: np.ndarray, shape: tuple[int, ...], tol: float
) -> Comparison | None:
    """The failing ``Comparison`` (against ``tol``) when the backend's ``value`` has another
    shape than ``shape`` or is not finite, else None: no statistic can be read from it."""
    if value.shape != shape:
        note = f"{what} of shape {value.shape}, expected {shape}"
        return Comparison(float("inf"), tol, note, layout=True)
    if not np.all(np.isfinite(value)):
        return Comparison(float("inf"), tol, f"non-finite {what}", non_finite=True)
    return None


def _copies_output(
    got: Mapping, name: str, shape: tuple[int, ...], tol: float
) -> np.ndarray | Comparison:
    """The backend's output ``name`` for the copies as float64, or the failing ``Comparison``
    when it is missing, of another shape than ``shape`` or not finite."""
    if name not in got:
        note = f"forward() returned no {[name]} output (every block's is part of the interface)"
        return Comparison(float("inf"), tol, note, layout=True)
    out = np.asarray(got[name], np.float64)
    return _unusable(f"{name} output", out, shape, tol) or out


def _block_drop_error(
    block: MBConvSpec, x: np.ndarray, ref: np.ndarray, out: np.ndarray
) -> Comparison:
    """``Comparison`` of the backend's output ``out`` of ``block`` for the copies with what the
    block may give for its input ``x``: ``ref`` (the reference without drop-connect) if the
    block does not drop (no residual, or rate 0); else, per copy, ``x`` (dropped) or
    ``x + (ref - x) / (1 - rate)`` (kept). The error is the worst copy's distance to the nearer
    of the two, within ``LOCATE_TOL`` of their scale; every copy dropped fails too where a
    correct backend does that with a probability (``rate ** copies``) of at most
    ``ALL_DROPPED_MAX_PROBABILITY``."""
    axes = tuple(range(1, x.ndim))
    if not (block.residual and block.drop_rate > 0):
        tol = LOCATE_TOL * max(1.0, float(np.max(np.abs(ref))))
        error = float(np.max(np.abs(out - ref)))
        note = (
            "" if error <= tol else "not the reference's output for its input: no drop-connect here"
        )
        return Comparison(error, tol, note)
    kept = x + (ref - x) / (1 - block.drop_rate)
    tol = LOCATE_TOL * max(1.0, float(np.max(np.abs(kept))))
    to_dropped = np.max(np.abs(out - x), axis=axes)
    to_kept = np.max(np.abs(out - kept), axis=axes)
    nearer = np.minimum(to_dropped, to_kept)
    error = float(np.max(nearer))
    copies = len(out)
    n_kept, n_neither = int(np.sum(to_kept <= tol)), int(np.sum(nearer > tol))
    note = (
        f"rate {block.drop_rate:.4g}: {n_kept} of {copies} copies kept, "
        f"{copies - n_kept - n_neither} dropped"
    )
    if n_neither:
        note += f", {n_neither} neither x (dropped) nor x + y / (1 - rate) (kept)"
    elif n_kept == 0 and block.drop_rate**copies <= ALL_DROPPED_MAX_PROBABILITY:
        error, note = float("inf"), f"{note}: every copy dropped"
    return Comparison(error, tol, note)


def drop_connect_branch_error(
    arch: Architecture, params: Mapping[str, np.ndarray], image: np.ndarray, got: Mapping
) -> tuple[str, Comparison, str]:
    """``(block, comparison, trap)`` for the first block whose output is wrong (else the
    worst), from ``got``, the backend's training forward of ``DROP_CONNECT_COPIES`` copies of
    ``image`` ``(1, H, W, 3)``. The copies leave the stem identical to the reference's output
    for the image; from then on each block is checked on the backend's own input to it
    (``_block_drop_error``): every residual block at its own rate from the table (the schedule
    ``drop_connect_rate * b / blocks``), and blocks without drop-connect unchanged. A mask per
    element, a kept branch scaled for another rate (or not at all), a dropped identity, or a
    drop in a block without residual is caught in whichever block it happens. The trap is the
    forward pass when the stem already differs from the reference's."""
    _, cache = network.forward(without_dropout(arch), dict(params), image, training=True)
    stem = cache["intermediates"]["stem"][0]
    shape = (DROP_CONNECT_COPIES, *stem.shape)
    tol = LOCATE_TOL * max(1.0, float(np.max(np.abs(stem))))
    x = _copies_output(got, "stem", shape, tol)
    if isinstance(x, Comparison):
        return arch.blocks[0].name, x, TRAPS["drop-connect branch"]
    if (diverged := float(np.max(np.abs(x - stem)))) > tol:
        note = f"its input stem already differs from the reference's by {diverged:.3g}"
        return arch.blocks[0].name, Comparison(diverged, tol, note), FORWARD_FIRST.format("stem")
    checked: dict[str, Comparison] = {}
    for block in arch.blocks:
        trap = TRAPS["drop-connect branch" if block.residual else "drop-connect residual only"]
        ref = network.block_forward(block, params, x, training=True)
        out = _copies_output(got, block.name, ref.shape, LOCATE_TOL)
        if isinstance(out, Comparison):
            return block.name, out, trap
        checked[block.name] = cmp = _block_drop_error(block, x, ref, out)
        if not cmp.ok:
            symptom, fit = epsilon_fits(block, params, x, out, training=True)
            if fit:
                return block.name, replace(cmp, note=f"{cmp.note}; {symptom}"), fit
            return block.name, cmp, trap
        x = out
    name, worst_cmp = worst(checked)
    return name, worst_cmp, TRAPS["drop-connect branch"]


def check_head_dropout(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """The head's dropout in training mode, which the other training checks run without: a model
    with the architecture's own head dropout rate (B0: 0.2) and no drop-connect, one image,
    ``loss_and_grads``. For one image the dense kernel's gradient is ``outer(h, dlogits)``, so it
    gives ``h``, the dropped-out pooled features the dense layer saw, exactly: each must be 0 or
    the reference's pooled feature ``/ (1 - rate)``, and the share dropped must be the rate. A
    mask per sample, unscaled kept features, dropout before the pooling or at another rate fails
    (``head_dropout_errors``). The head is the same in every family: quick checks the first
    network only (measured: TensorFlow's build and first step cost ~2 s a network)."""
    rows = []
    for net in _architectures(full) if full else _architectures(full)[:1]:
        arch = with_dropout(C.network_arch(net, training=False), drop_connect_rate=0.0)
        label = f"{C.network_label(net, 1, DROPOUT_IMAGE_SIZE)} dropout={arch.head.dropout}"

        def rows_of(arch: Architecture = arch, label: str = label) -> list[CheckResult]:
            rng = np.random.default_rng([seed, 3])
            params = C.randomise(arch.param_shapes(), init_params(arch, seed, np.float64), rng)
            image = C.f32(rng.standard_normal((1, DROPOUT_IMAGE_SIZE, DROPOUT_IMAGE_SIZE, 3)))
            _, cache = network.forward(without_dropout(arch), params, image, training=True)
            # The least likely class: the softmax gradient then has a norm near 1.
            target = np.argmin(cache["intermediates"]["logits"], axis=1)
            native = call(backend, "build", arch)
            call(backend, "load_params", native, params)
            got = call(backend, "loss_and_grads", native, image, target, training=True)
            pooled = np.mean(cache["intermediates"]["top"], axis=(1, 2))[0]
            mask, share = head_dropout_errors(arch, params, pooled, int(target[0]), got)
            trap = TRAPS["head dropout"]
            # The features are read off the logits' softmax gradient: not for probabilities.
            if found := returns_probabilities(got["logits"], cache["intermediates"]["logits"]):
                mask, share = (
                    c if c.ok else replace(c, note=f"{c.note}; {found}") for c in (mask, share)
                )
                trap = TRAPS["logits"]
            return [
                _result(backend, "head dropout mask", "top_dropout", label, mask, trap),
                _result(backend, "head dropout rate", "top_dropout", label, share, trap),
            ]

        rows += guarded(backend, "head dropout mask", "top_dropout", label, rows_of)
    return rows


# Standard deviations of the binomial share of dropped features allowed: a correct backend
# fails with a probability of 2e-9; B0's rate 0.2 and B2's 0.3 lie 9 of them apart.
HEAD_DROPOUT_SIGMAS = 6.0


def head_dropout_errors(
    arch: Architecture,
    params: Mapping[str, np.ndarray],
    pooled: np.ndarray,
    label: int,
    got: Mapping,
) -> tuple[Comparison, Comparison]:
    """``(mask, share)`` comparisons of the backend's ``loss_and_grads`` result ``got`` for one
    image of class ``label``, whose reference pooled top features are ``pooled`` ``(C,)``.

    The mean cross-entropy's ``dlogits`` is ``softmax(logits) - onehot(label)``, and the dense
    kernel's gradient ``outer(h, dlogits)``, so ``h = dW dlogits / |dlogits|^2``. ``mask``: each
    ``h`` is 0 (dropped) or ``pooled / (1 - rate)`` (kept), and the logits are ``h W + b``
    (the forward and the backward used the same mask), within ``LOCATE_TOL`` of the scale.
    ``share``: the share of the features dropped (among those far enough from 0 to tell) is
    the rate, within ``HEAD_DROPOUT_SIGMAS`` binomial standard deviations."""
    rate, classes = arch.head.dropout, arch.num_classes
    logits = np.asarray(got["logits"], np.float64)
    kernel = params["predictions/kernel"]
    if "predictions/kernel" not in got["grads"]:
        cmp = absent("predictions/kernel", got["grads"])
        return cmp, cmp
    grad = np.asarray(got["grads"]["predictions/kernel"], np.float64)
    for what, value, shape in (
        ("logits", logits, (1, classes)),
        ("kernel gradient", grad, kernel.shape),
    ):
        if unusable := _unusable(what, value, shape, 0.0):
            return unusable, unusable
    p = np.exp(logits[0] - np.max(logits[0]))
    dlogits = p / np.sum(p) - np.eye(classes)[label]
    h = grad @ dlogits / (dlogits @ dlogits)
    kept = pooled / (1 - rate)
    tol = LOCATE_TOL * max(1.0, float(np.max(np.abs(kept))))
    to_kept, to_dropped = np.abs(h - kept), np.abs(h)
    nearer = np.minimum(to_kept, to_dropped)
    neither = int(np.sum(nearer > tol))
    note = (
        f"{neither} of {h.size} features neither 0 (dropped) nor pooled / (1 - rate) (kept)"
        if neither
        else ""
    )
    features = Comparison(float(np.max(nearer)), tol, note)
    consistent = scaled_max(logits[0], h @ kernel + params["predictions/bias"], LOCATE_TOL)
    if not consistent.ok:
        consistent = replace(
            consistent,
            note="the logits are not h W + b for the h of the gradient: the forward and the "
            "backward dropped different features",
        )
    _, mask = worst({"features": features, "logits": consistent})
    telling = np.abs(kept) > 10 * tol
    n = int(np.sum(telling))
    dropped = int(np.sum((to_dropped < to_kept)[telling]))
    share = dropped / max(n, 1)
    allowed = HEAD_DROPOUT_SIGMAS * np.sqrt(rate * (1 - rate) / max(n, 1))
    note = f"{dropped} of {n} features dropped ({share:.3f}), rate {rate}"
    return mask, Comparison(abs(share - rate), float(allowed), note)


def _networks(full: bool) -> tuple[C.Network, ...]:
    return C.NETWORKS_FULL if full else C.NETWORKS_QUICK


def _architectures(full: bool) -> tuple[C.Network, ...]:
    """The first network of each model (and width) in ``_networks(full)``: the parameter and
    dropout checks depend on the model alone (parameters do not change with the image size or
    the skipped strides; the dropout checks choose their own images), so each runs once."""
    first: dict[tuple[str, int | None], C.Network] = {}
    for net in _networks(full):
        first.setdefault((net.model, net.m), net)
    return tuple(first.values())


def check_params(backend: Backend, seed: int = 0, full: bool = False) -> list[CheckResult]:
    """Parameter counts as the framework counts them, a bit-exact exchange round trip, and
    exports that stay as they were when the model changes."""
    rows = []
    for net in _architectures(full):
        label = C.network_label(net)

        def run(net: C.Network = net, label: str = label) -> list[CheckResult]:
            case = C.network_case(net, False, seed)
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
    for net in _networks(full):
        for training in net.modes:
            # Training runs the case's images twice over (``twice``).
            batch = 2 * C.BATCH if training else C.BATCH
            label = f"{C.network_label(net, batch)} {'training' if training else 'inference'}"
            rows += guarded(
                backend,
                "network",
                "model",
                label,
                lambda net=net, training=training, label=label: _network_rows(
                    backend, net, training, seed, label
                ),
            )
    return rows


def twice(ref: dict[str, Any]) -> dict[str, Any]:
    """``ref`` (a training ``cases.network_case``) for its images and labels twice over: the
    batch statistics of two copies of a batch are the batch's (mean and biased variance), so
    the logits repeat, the loss, parameter gradients and moving statistics stay, and ``dx``
    halves (the mean loss divides by twice the images). The training rows run it so that a
    backend right only for the golden files' batch of 2 fails; ``intermediates`` stay those of
    the original batch, which ``_locate`` traces a failure with."""
    return {
        **ref,
        "x": np.concatenate([ref["x"]] * 2),
        "labels": np.concatenate([ref["labels"]] * 2),
        "logits": np.concatenate([ref["logits"]] * 2),
        "dx": np.concatenate([ref["dx"]] * 2) / 2,
    }


def first_image_twice(ref: dict[str, Any]) -> dict[str, Any]:
    """``ref`` (an inference ``cases.network_case``) for its first image twice over: inference
    normalises with the moving statistics, so each image gets its own logits and intermediates
    whatever else the batch holds. A batch norm that normalises with the batch's statistics
    passes on ``ref``'s images, whose statistics ``cases.calibrated`` made the moving ones, but
    not on these (one image's statistics are not the pair's)."""
    return {
        **ref,
        "x": _first_twice(ref["x"]),
        "logits": _first_twice(ref["logits"]),
        "intermediates": {k: _first_twice(v) for k, v in ref["intermediates"].items()},
    }


def _first_twice(a: np.ndarray) -> np.ndarray:
    """The first entry of ``a`` ``(N, ...)`` twice: ``(2, ...)``."""
    return np.concatenate([a[:1]] * 2)


def _network_rows(
    backend: Backend, net: C.Network, training: bool, seed: int, label: str
) -> list[CheckResult]:
    ref = C.network_case(net, training, seed)
    native = call(backend, "build", ref["arch"])
    call(backend, "load_params", native, ref["params"])
    if training:
        ref = twice(ref)
        got = call(backend, "loss_and_grads", native, ref["x"], ref["labels"], training=True)
        cmp = scaled_max(got["logits"], ref["logits"])
        forward_ok = cmp.ok
        if cmp.ok:
            out = [_result(backend, "network logits", "logits", label, cmp)]
        else:
            fresh = call(backend, "build", ref["arch"])
            call(backend, "load_params", fresh, ref["params"])
            once = C.network_case(net, training, seed)
            forward = call_forward(backend, ref["arch"], fresh, once["x"], training=True)
            out = [_locate(backend, "network logits", label, cmp, forward, once, training)]
        # Statistics of a forward pass that already diverged are wrong whatever the BN update does.
        hint = FORWARD_FIRST.format("network logits")
    else:
        out = _inference_logits_rows(backend, native, ref, label)
        # Inference gradients (fine-tuning with frozen batch norms) and statistics that neither
        # pass may change: a backend that trains when told not to fails here, not above.
        got = call(backend, "loss_and_grads", native, ref["x"], ref["labels"], training=False)
        # The moving statistics are calibrated to the batch statistics of x, so an update on x
        # would hardly move them; on twice x (batch statistics far from them) it shows.
        call(backend, "forward", native, 2 * ref["x"], training=False)
        call(backend, "loss_and_grads", native, 2 * ref["x"], ref["labels"], training=False)
        forward_ok, hint = False, TRAPS["inference"]
    # A loss and gradients of logits that already diverged are wrong whatever the loss does.
    if all(r.passed for r in out):
        after = ""
    elif out[0].passed:  # right for these images, wrong for another batch of them
        after = TRAPS["inference"]
    else:
        after = FORWARD_FIRST.format("network logits")
    return out + _loss_rows(backend, native, ref, got, label, forward_ok, hint, after)


def _inference_logits_rows(
    backend: Backend, native: Any, ref: dict[str, Any], label: str
) -> list[CheckResult]:
    """The inference logits of ``native`` for ``ref``'s images (``ref``: an inference
    ``cases.network_case``), every intermediate checked, and for its first image twice over
    (``first_image_twice``). Where the backend's own logits for that image differ between the
    two batches, its inference depends on the batch, and both rows name that trap first."""
    arch = ref["arch"]
    forward = call_forward(backend, arch, native, ref["x"], training=False)
    alone = first_image_twice(ref)
    pair = call_forward(backend, arch, native, alone["x"], training=False)
    own = scaled_max(pair["logits"], _first_twice(forward["logits"]))
    also = "" if own.ok else TRAPS["inference"]
    cmp = scaled_max(forward["logits"], ref["logits"])
    out = [_locate(backend, "network logits", label, cmp, forward, ref, False, also)]
    check, config = "network logits per image", f"{label} (image 0 twice)"
    cmp = scaled_max(pair["logits"], alone["logits"])
    if cmp.ok:  # its intermediates are those the row above checked
        return out + [_result(backend, check, "logits", config, cmp)]
    return out + [_locate(backend, check, config, cmp, pair, alone, False, also)]


def _loss_rows(
    backend: Backend,
    native: Any,
    ref: dict[str, Any],
    got: dict[str, Any],
    label: str,
    forward_ok: bool,
    hint: str,
    logits_hint: str = "",
) -> list[CheckResult]:
    """Rows for a ``loss_and_grads`` result ``got`` against ``ref`` (``cases.network_case`` of
    the same mode): loss, every gradient with the input's, and the moving statistics the model
    exports afterwards. Failing loss and gradient rows name ``logits_hint`` (the logits rows
    failed first); a failing statistics row names ``moving_stats_trap`` if ``forward_ok``,
    else ``hint``."""
    out = [
        _result(
            backend,
            "network loss",
            "loss",
            label,
            allclose(got["loss"], ref["loss"], rtol=GRAD_TOL, atol=1e-6),
            logits_hint,
        )
    ]
    grads = {
        "input": relative_norm(got["dx"], ref["dx"]),
        **gradient_errors(got["grads"], ref["grads"], scale=float(np.linalg.norm(ref["dx"]))),
    }
    name, cmp = worst(grads)
    out.append(_result(backend, "network gradients", name, label, cmp, logits_hint))
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
    backend: Backend,
    check: str,
    label: str,
    cmp: Comparison,
    got: dict,
    ref: dict,
    training: bool,
    also: str = "",
) -> CheckResult:
    """On failure, name the first intermediate (stem, blocks, top, logits) that diverges and
    the traps that fit it in mode ``training`` (``layer_traps``), after ``also`` if given; on
    success, fail on the first intermediate of ``got`` that is not the reference's."""
    if cmp.ok:
        return _checked_intermediates(backend, check, label, cmp, got, ref)

    def hint(layer: str, trap: str = "") -> str:
        traps = (also, trap or layer_traps(ref["arch"], layer, training))
        return "; ".join(t for t in traps if t)

    for layer, expected in ref["intermediates"].items():
        if layer not in got:
            continue
        local = scaled_max(got[layer], expected, LOCATE_TOL)
        if not local.ok:
            note = (
                f"first diverging layer {layer}: max|Δ|={local.error:.3g} > {local.tolerance:.3g}"
            )
            symptom, trap = symptom_trap(layer, got, ref, training)
            note += "".join(f" ({n})" for n in (local.note, symptom) if n)
            # The flags travel with the note: a NaN or a channels-first intermediate is no trap.
            located = Comparison(cmp.error, cmp.tolerance, note, local.non_finite, local.layout)
            return _result(backend, check, layer, label, located, hint(layer, trap))
    return _result(backend, check, "logits", label, cmp, hint("logits"))


def _checked_intermediates(
    backend: Backend, check: str, label: str, cmp: Comparison, got: dict, ref: dict
) -> CheckResult:
    """The passing logits row ``cmp``, or a failing one naming the first intermediate of
    ``got`` that differs from the reference's by more than the logits' tolerance (of its own
    scale): intermediates are what a failure is traced with, and what the drop-connect check
    reads, so one in another layout (an NCHW framework's tensor not permuted back) or taken
    at another point of the layer would blame the wrong layer, or none."""
    for layer, expected in ref["intermediates"].items():
        if layer not in got:
            continue
        local = scaled_max(got[layer], expected)
        if not local.ok:
            note = (
                f"the logits agree, but forward()'s {layer!r} is not the reference's "
                f"({local.note or f'max|Δ|={local.error:.3g}'})"
            )
            wrong = Comparison(local.error, local.tolerance, note, local.non_finite, local.layout)
            return _result(backend, check, layer, label, wrong)
    return _result(backend, check, "logits", label, cmp)


CHECKS: dict[str, Callable[..., list[CheckResult]]] = {
    "interleave": check_interleave,
    "kpointwise": check_kpointwise,
    "params": check_params,
    "network": check_network,
    "drop-connect": check_drop_connect,
    "head-dropout": check_head_dropout,
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
