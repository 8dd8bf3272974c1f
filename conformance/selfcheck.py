"""The reference's own check: finite-difference gradients of every core op and of kPointwise.

Each case is a function ``L(inputs) = sum(forward(inputs) * r)`` for a fixed random ``r``; its
analytic directional derivative ``sum_a <backward(r)[a], d_a>`` must match the central difference
``(L(inputs + eps*d) - L(inputs - eps*d)) / (2 eps)`` in float64, for every input separately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import ops
from ..core.pointwise import GroupedPointwise, Interleave, KPointwise, KPointwiseSpec
from .results import CheckResult

FD_EPS = 1e-6
FD_TOL = 1e-6  # relative; central differences in float64 reach ~1e-9 on these sizes


@dataclass
class GradCase:
    """``forward(**inputs) -> (y, cache)`` and ``grads(cache, dy) -> {input name: gradient}``,
    every differentiable input named, ``None`` for a gradient the op did not return (which
    ``directional_error`` reports as infinitely wrong rather than leaving unchecked)."""

    op: str
    config: str
    inputs: dict[str, np.ndarray]
    forward: Callable[..., tuple[Any, Any]]
    grads: Callable[[Any, np.ndarray], dict[str, np.ndarray | None]]


def _unary(op: Any, **kw: Any):
    return (lambda x: op.forward(x, **kw)), (lambda c, dy: {"x": op.backward(c, dy)[0]})


def _with_params(op: Any, names: tuple[str, ...], **kw: Any):
    """Forward/grads for ops taking ``x`` then named parameter arrays."""

    def fwd(x: np.ndarray, **p: np.ndarray):
        return op.forward(x, *(p[n] for n in names), **kw)

    def grads(c: Any, dy: np.ndarray) -> dict[str, np.ndarray | None]:
        dx, g = op.backward(c, dy)
        return {"x": dx, **{n: g.get(n) for n in names}}

    return fwd, grads


def cases(rng: np.random.Generator, full: bool = False) -> Iterator[GradCase]:
    """Random small cases covering every op and each kPointwise branch."""
    n = lambda *s: rng.standard_normal(s)  # noqa: E731
    reps = 3 if full else 1
    for _ in range(reps):
        for stride, padding, size in (
            (1, "same", 5),
            (2, "correct", 6),
            (2, "correct", 7),
            (1, "correct", 6),
        ):
            f, g = _with_params(ops.Conv2D, ("kernel",), stride=stride, padding=padding)
            yield GradCase(
                "Conv2D",
                f"k=3 s={stride} {padding} x=(2,{size},{size},3)",
                {"x": n(2, size, size, 3), "kernel": n(3, 3, 3, 4)},
                f,
                g,
            )
        for k, stride, padding, size in (
            (3, 1, "same", 5),
            (5, 1, "same", 6),
            (3, 2, "correct", 6),
            (5, 2, "correct", 7),
        ):
            f, g = _with_params(ops.DepthwiseConv2D, ("kernel",), stride=stride, padding=padding)
            yield GradCase(
                "DepthwiseConv2D",
                f"k={k} s={stride} {padding} x=(2,{size},{size},4)",
                {"x": n(2, size, size, 4), "kernel": n(k, k, 4, 1)},
                f,
                g,
            )
        for cin, cout, groups in ((12, 8, 4), (6, 9, 3), (5, 7, 1)):
            f, g = _with_params(GroupedPointwise, ("kernel", "bias"), groups=groups)
            yield GradCase(
                "GroupedPointwise",
                f"{cin}->{cout} G={groups}",
                {"x": n(2, 3, 3, cin), "kernel": n(1, 1, cin // groups, cout), "bias": n(cout)},
                f,
                g,
            )
        f, g = _unary(Interleave, groups=3)
        yield GradCase("Interleave", "C=12 G=3", {"x": n(2, 2, 2, 12)}, f, g)
        for training in (True, False):
            c = 5
            mm, mv = n(c), rng.uniform(0.5, 2.0, c)

            def bn_fwd(x, gamma, beta, training=training, mm=mm, mv=mv):
                return ops.BatchNorm.forward(x, gamma, beta, mm, mv, training=training)

            yield GradCase(
                "BatchNorm",
                f"training={training} x=(3,2,2,{c})",
                {"x": n(3, 2, 2, c), "gamma": n(c), "beta": n(c)},
                bn_fwd,
                lambda cc, dy: (lambda dx, gg: {"x": dx, **gg})(*ops.BatchNorm.backward(cc, dy)),
            )
        for op in (ops.Swish, ops.Sigmoid):
            f, g = _unary(op)
            yield GradCase(op.__name__, "x=(2,3,3,4)", {"x": 3 * n(2, 3, 3, 4)}, f, g)
        for keepdims in (False, True):
            f, g = _unary(ops.GlobalAveragePool, keepdims=keepdims)
            yield GradCase(
                "GlobalAveragePool", f"keepdims={keepdims} x=(2,3,4,5)", {"x": n(2, 3, 4, 5)}, f, g
            )
        f, g = _with_params(ops.Dense, ("kernel", "bias"))
        yield GradCase(
            "Dense", "x=(3,6) kernel=(6,4)", {"x": n(3, 6), "kernel": n(6, 4), "bias": n(4)}, f, g
        )
        for shape in ((2, 3, 3, 4), (2, 1, 1, 1)):
            mask = (rng.random(shape) > 0.3).astype(np.float64)
            f, g = _unary(ops.Dropout, mask=mask, rate=0.3)
            yield GradCase("Dropout", f"rate=0.3 mask={shape}", {"x": n(2, 3, 3, 4)}, f, g)
        yield GradCase(
            "Add",
            "a,b=(2,3,3,4)",
            {"a": n(2, 3, 3, 4), "b": n(2, 3, 3, 4)},
            ops.Add.forward,
            lambda c, dy: dict(zip(("a", "b"), ops.Add.backward(c, dy)[0])),
        )
        yield GradCase(
            "ChannelScale",
            "x=(2,3,3,4) s=(2,1,1,4)",
            {"x": n(2, 3, 3, 4), "s": n(2, 1, 1, 4)},
            ops.ChannelScale.forward,
            lambda c, dy: dict(zip(("x", "s"), ops.ChannelScale.backward(c, dy)[0])),
        )
        labels = rng.integers(0, 5, 4)
        yield GradCase(
            "SoftmaxCrossEntropy",
            "logits=(4,5)",
            {"logits": n(4, 5)},
            lambda logits, labels=labels: ops.SoftmaxCrossEntropy.forward(logits, labels),
            lambda c, dy: {"logits": ops.SoftmaxCrossEntropy.backward(c, dy)[0]},
        )
        yield from _kpointwise_cases(rng)


def _kpointwise_cases(rng: np.random.Generator) -> Iterator[GradCase]:
    # (cin, cout, groups): G == 1; interleave + conv2 (cin >= cout); interleave only (cin < cout);
    # conv2 without interleave (cout // G == 1).
    for cin, cout, groups in ((6, 4, 1), (8, 6, 2), (4, 12, 2), (8, 4, 4)):
        for bn, act, bias, training in (
            (True, "swish", False, True),
            (False, "sigmoid", True, False),
        ):
            spec = KPointwiseSpec(cin, cout, groups, bn=bn, activation=act, bias=bias)
            inputs = {"x": rng.standard_normal((3, 2, 2, cin))}
            for name, (shape, _) in spec.param_shapes().items():
                value = (
                    rng.uniform(0.5, 2.0, shape)
                    if name.endswith("variance")
                    else rng.standard_normal(shape)
                )
                inputs[name.replace("/", "__")] = value

            def fwd(x, spec=spec, training=training, **p):
                return KPointwise.forward(
                    spec, {k.replace("__", "/"): v for k, v in p.items()}, x, training
                )

            def grads(c, dy, spec=spec):
                dx, g = KPointwise.backward(c, dy)
                trainable = [k for k, (_, t) in spec.param_shapes().items() if t]
                return {"x": dx, **{k.replace("/", "__"): g.get(k) for k in trainable}}

            yield GradCase(
                "KPointwise",
                f"{cin}->{cout} G={groups} bn={bn} act={act} bias={bias} training={training}",
                inputs,
                fwd,
                grads,
            )


def directional_error(case: GradCase, rng: np.random.Generator) -> float:
    """Largest relative gap between analytic and central-difference directional derivatives."""
    y, cache = case.forward(**case.inputs)
    r = rng.standard_normal(np.shape(y))
    analytic = case.grads(cache, r)
    worst = 0.0

    def loss_along(name: str, d: np.ndarray, step: float) -> float:
        moved = {**case.inputs, name: case.inputs[name] + step * d}
        return float(np.sum(case.forward(**moved)[0] * r))

    for name in analytic:
        if analytic[name] is None:  # a gradient the op did not return is infinitely wrong
            return float("inf")
        d = rng.standard_normal(case.inputs[name].shape)
        numeric = (loss_along(name, d, FD_EPS) - loss_along(name, d, -FD_EPS)) / (2 * FD_EPS)
        exact = float(np.sum(analytic[name] * d))
        gap = abs(numeric - exact) / max(abs(numeric), abs(exact), 1e-8)
        if not np.isfinite(gap):  # NaN would drop out of max(): a NaN gradient is infinitely wrong
            return float("inf")
        worst = max(worst, gap)
    return worst


def run_selfcheck(seed: int = 0, full: bool = False) -> list[CheckResult]:
    """One ``CheckResult`` per op: the worst relative error over its cases."""
    rng = np.random.default_rng(seed)
    per_op: dict[str, tuple[float, list[str]]] = {}
    for case in cases(rng, full):
        err = directional_error(case, rng)
        prev, configs = per_op.get(case.op, (0.0, []))
        per_op[case.op] = (max(prev, err), configs + [case.config])
    return [
        CheckResult(
            "numpy",
            "finite-difference gradient",
            op,
            f"{len(cfgs)} cases: " + "; ".join(cfgs),
            err,
            FD_TOL,
            "pass" if err <= FD_TOL else "fail",
        )
        for op, (err, cfgs) in per_op.items()
    ]
