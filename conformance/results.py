"""One conformance verdict: ``CheckResult``, and how errors are measured against tolerances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.ops.normalization import MOMENTUM

# DESIGN.md §4: float32 backends against the float64 reference.
LAYER_RTOL, LAYER_ATOL = 1e-4, 1e-5
LOGIT_TOL = 1e-3  # max |Δlogit| <= LOGIT_TOL * max(1, max |logits|)
GRAD_TOL = 1e-3  # ||g - g_ref|| / ||g_ref|| per parameter
LOCATE_TOL = 1e-4  # relative to each intermediate's scale, when hunting the first diverging layer


# The status of the one row of a backend that was not checked: its framework is missing, or it
# has none of the implementations asked for with ``--impl``.
NOT_INSTALLED, NOT_CHECKED = "not installed", "not checked"
UNCHECKED = (NOT_INSTALLED, NOT_CHECKED)


@dataclass
class CheckResult:
    """A single check of one backend. ``error`` and ``tolerance`` are in the same unit; the check
    passed when ``error <= tolerance`` (``status`` is then ``"pass"``). A ``"not installed"`` or
    ``"not checked"`` row records a backend that was not checked: it neither passed nor failed
    (JSON ``passed`` null)."""

    backend: str
    check: str
    layer: str
    config: str
    error: float
    tolerance: float
    status: str  # "pass" | "fail" | "error" | "not installed" | "not checked"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # null, not false: nothing ran, and the report's "passed" (every check that ran passed)
        # must agree with its rows.
        d["passed"] = None if self.status in UNCHECKED else self.passed
        for k in ("error", "tolerance"):
            d[k] = None if not np.isfinite(d[k]) else float(d[k])
        return d


@dataclass(frozen=True)
class Comparison:
    """How far ``actual`` is from ``expected``: ``error`` vs ``tolerance`` and a short note."""

    error: float
    tolerance: float
    note: str = ""
    # Non-finite values where the reference is finite: an overflow or a division by zero in the
    # backend, which no porting trap explains.
    non_finite: bool = False
    # Shapes that differ in a way no porting trap explains (a channel count, the rank, a
    # channels-first array); a spatial mismatch is what symmetric padding gives, and keeps its trap.
    layout: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.error <= self.tolerance)


def _compared(
    error: float, tolerance: float, actual: np.ndarray, expected: np.ndarray
) -> Comparison:
    """``Comparison(error, tolerance)``, NaN counted as infinitely wrong, and flagged (with a
    note) when ``actual`` is non-finite where ``expected`` is finite."""
    error = error if np.isfinite(error) else float("inf")
    broken = int(np.count_nonzero(~np.isfinite(actual) & np.isfinite(expected)))
    if broken:
        note = f"{broken} non-finite value(s) (NaN/Inf) where the reference is finite"
        return Comparison(error, tolerance, note, non_finite=True)
    return Comparison(error, tolerance)


def _shape_mismatch(actual: np.ndarray, expected: np.ndarray) -> Comparison | None:
    got, want = np.shape(actual), np.shape(expected)
    if got == want:
        return None
    note = f"shape {got} vs reference {want}"
    if len(want) >= 3 and got == (want[0], want[-1], *want[1:-1]):
        note += ": channels-first, but arrays crossing the interface are channels-last (N, H, W, C)"
    layout = len(got) != len(want) or got[-1:] != want[-1:]
    return Comparison(float("inf"), 0.0, note, layout=layout)


def allclose(
    actual: Any, expected: Any, rtol: float = LAYER_RTOL, atol: float = LAYER_ATOL
) -> Comparison:
    """Element-wise ``|a - e| <= atol + rtol*|e|``; reports the worst element's ``|a - e|`` and its
    allowance. NaN anywhere counts as infinitely wrong."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if (bad := _shape_mismatch(a, e)) is not None:
        return bad
    if a.size == 0:
        return Comparison(0.0, atol)
    diff = np.abs(a - e)
    allowed = atol + rtol * np.abs(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / allowed)
    ratio = np.where(np.isnan(diff), np.inf, ratio)
    worst = int(np.argmax(ratio))
    err = float(diff.flat[worst]) if np.isfinite(ratio.flat[worst]) else float("inf")
    return _compared(err, float(allowed.flat[worst]), a, e)


def moving_stats_error(
    actual: Any,
    expected: Any,
    previous: Any,
    rtol: float = LAYER_RTOL,
    atol: float = LAYER_ATOL,
    implied_rtol: float = 1e-3,
    momentum: float = MOMENTUM,
) -> Comparison:
    """Updated BN moving statistics: the values themselves (``allclose``) and the batch statistic
    each update implies, ``b = (r' - m r) / (1 - m)``, within ``implied_rtol`` of the layer's
    scale; the worse of the two. The second is what sees the unbiased-variance trap: that changes
    ``r'`` by only ``(1 - m) b / (n - 1)``, inside any tolerance on ``r'``, but ``b`` by
    ``1 / (n - 1)``."""
    values = allclose(actual, expected, rtol, atol)
    a, e, r = (np.asarray(v, np.float64) for v in (actual, expected, previous))
    if a.shape != e.shape or e.shape != r.shape:
        return values
    implied = allclose(
        (a - momentum * r) / (1 - momentum),
        (e - momentum * r) / (1 - momentum),
        implied_rtol,
        implied_rtol * float(np.max(np.abs(e - momentum * r), initial=0.0)) / (1 - momentum),
    )
    return worst({"values": values, "implied batch statistic": implied})[1]


def scaled_max(actual: Any, expected: Any, tol: float = LOGIT_TOL) -> Comparison:
    """``max |a - e| <= tol * max(1, max |e|)`` (the whole-network logit criterion)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if (bad := _shape_mismatch(a, e)) is not None:
        return bad
    err = float(np.max(np.abs(a - e))) if a.size else 0.0
    return _compared(err, tol * max(1.0, float(np.max(np.abs(e)))), a, e)


# Relative-norm denominators are at least this share of the largest gradient. 1e-3 was too
# tight for float32: hypothesis found a kPointwise (2->2, G=2, batch of 4 pixels) whose conv bias
# gradient, zero in exact arithmetic, came out at 3.8e-6 from float32 round-off (CuPy on an H100,
# and NumPy float32 alike), 2.6x the 1e-3 * 1e-3 * 1.49 it was allowed. A wrong gradient is off
# by O(1) of its own size, far above 1e-2 * 1e-3 of the largest.
GRAD_FLOOR = 1e-2


def relative_norm(
    actual: Any, expected: Any, tol: float = GRAD_TOL, floor: float = 0.0
) -> Comparison:
    """``||a - e|| / max(||e||, floor) <= tol`` (the gradient criterion)."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if (bad := _shape_mismatch(a, e)) is not None:
        return bad
    ref = max(float(np.linalg.norm(e)), floor)
    err = float(np.linalg.norm(a - e)) / (ref if ref > 0 else 1.0)
    return _compared(err, tol, a, e)


def gradient_errors(
    actual: dict[str, Any], expected: dict[str, Any], tol: float = GRAD_TOL, scale: float = 0.0
) -> dict[str, Comparison]:
    """``relative_norm`` of every expected gradient, floored at ``GRAD_FLOOR`` times the largest
    expected gradient norm (or ``scale``, if larger: e.g. the norm of the input gradient, which
    grows with the same BN ``1/sigma`` as the round-off of the cancelling sums below).

    The floor matters for gradients that are zero in exact arithmetic — a bias or BN beta
    followed by a training-mode BN, whose mean subtraction cancels any constant shift. The
    reference then holds float64 round-off (~1e-17) and a float32 backend its own (~1e-9);
    their ratio says nothing. Measured on the network's gradient scale, both are zero.
    A missing gradient is infinitely wrong, its row naming the names received (``absent``).
    """
    norms = [float(np.linalg.norm(np.asarray(v, np.float64))) for v in expected.values()]
    floor = GRAD_FLOOR * max(norms + [scale])
    return {
        k: relative_norm(actual[k], v, tol, floor) if k in actual else absent(k, actual)
        for k, v in expected.items()
    }


def absent(name: str, received: Mapping[str, Any], shown: int = 4) -> Comparison:
    """The comparison of an array the backend did not return under ``name``: infinitely wrong,
    naming the first ``shown`` names it did return (say, framework names instead of canonical
    ones), and blamed on no porting trap."""
    names = sorted(received)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    note = f"no {name!r} returned (received {names[:shown]}{more})"
    return Comparison(float("inf"), 0.0, note, layout=True)


def worst(named: dict[str, Comparison]) -> tuple[str, Comparison]:
    """The entry with the largest error/tolerance ratio."""

    def ratio(c: Comparison) -> float:
        return (
            np.inf
            if c.tolerance == 0 and c.error > 0
            else (c.error / c.tolerance if c.tolerance else 0.0)
        )

    name = max(named, key=lambda k: ratio(named[k]))
    return name, named[name]
