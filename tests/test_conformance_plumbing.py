"""``gpconv check``'s plumbing: what the runner passes on (seed, mode), what the report and its
JSON say, and the reference's finite-difference self-check failing when a gradient is wrong.

Found missing by a mutation run on conformance/{runner,report,results,selfcheck}.py: each test
fails on a mutant that every other test let live."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gpconv.backends.numpy_reference import NumpyBackend
from gpconv.conformance import cases, runner, selfcheck
from gpconv.conformance.report import format_report
from gpconv.conformance.results import CheckResult
from gpconv.conformance.runner import Report, run
from gpconv.core import ops
from gpconv.core.pointwise import GroupedPointwise


class _Other(NumpyBackend):
    """A backend that is not the reference: it gets the live comparisons."""

    name = "plumbing-other"


OTHER = _Other()


def test_the_seed_and_the_mode_asked_for_reach_every_check_and_the_json(monkeypatch):
    """``gpconv check --full --seed 7`` must run the full checks with seed 7 (the reference's
    self-check and the live comparisons alike) and say so in its JSON: a report that claims
    seed 7 but ran seed 0, or quick checks under ``mode: full``, cannot be reproduced."""
    calls: list[tuple] = []
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: calls.append(("self", *a)) or [])
    monkeypatch.setattr(
        runner, "run_backend_checks", lambda b, *a: calls.append((b.name, *a)) or []
    )
    monkeypatch.setattr(runner, "check_golden", lambda backend: [])
    report = run(["numpy", f"{__name__}:OTHER"], full=True, seed=7)
    assert calls == [("self", 7, True), ("plumbing-other", 7, True)], calls
    data = json.loads(json.dumps(report.to_dict()))
    assert (data["mode"], data["seed"]) == ("full", 7), data
    calls.clear()
    quick = run([f"{__name__}:OTHER"], seed=3).to_dict()
    assert calls == [("plumbing-other", 3, False)] and (quick["mode"], quick["seed"]) == (
        "quick",
        3,
    )


def _row(backend: str, layer: str, error: float, tolerance: float, status: str) -> CheckResult:
    return CheckResult(backend, "logits", layer, "cfg", error, tolerance, status, "why")


def test_the_table_shows_the_worst_case_errors_and_the_reproduce_command_has_the_seed():
    """One table line per (backend, check) names its *worst* case (largest error/tolerance),
    says ERROR when any case crashed (FAIL would say the numbers were compared), and the
    failure list shows crashed cases too, with one command that reruns exactly this run: the
    same mode and seed (DESIGN.md §6: "enough to reproduce with one command")."""
    rows = [
        _row("b", "good-layer", 1e-6, 1e-3, "pass"),  # ratio 1e-3
        _row("b", "bad-layer", 2.0, 1e-3, "fail"),  # ratio 2000: the worst
        _row("b", "crash-layer", 0.5, 1.0, "error"),  # a crash (its numbers say little)
    ]
    report = Report(
        rows=rows,
        backends={"b": {"status": "checked", "requested": "b"}},
        mode="full",
        seed=11,
    )
    text = format_report(report)
    line = next(ln for ln in text.splitlines() if ln.startswith("b "))
    assert re.search(r"\b1/3\b", line) and "bad-layer" in line and "2.00e+00" in line, line
    assert line.rstrip().endswith("ERROR"), line
    assert "ERROR [b] logits — layer crash-layer" in text, text
    assert "FAIL [b] logits — layer bad-layer" in text, text
    assert "2 failing check(s)" in text, text
    assert "reproduce: gpconv check --backend b --full --seed 11" in text, text


def test_a_json_report_with_an_infinite_error_is_strict_json():
    """A crashed row has error inf (and tolerance 0): JSON has no Infinity, so the row must say
    null, or ``json.dumps(..., allow_nan=False)`` and strict readers (jq, JavaScript) refuse the
    whole report."""
    report = Report(rows=[_row("b", "x", float("inf"), float("nan"), "error")])
    text = json.dumps(report.to_dict(), allow_nan=False)
    row = json.loads(text)["results"][0]
    assert (row["error"], row["tolerance"], row["passed"]) == (None, None, False)


def _wrong_when(op, field: str, bad: int, what: str, scale: float = 1.01):
    """``op.backward`` with the gradient ``what`` 1 % too large in cases whose cached ``field``
    has ``bad`` channels in its last axis, right in every other case."""
    original = op.backward

    def backward(cache, dy):
        dx, grads = original(cache, dy)
        if np.shape(cache[field])[-1] == bad:
            if what == "x":
                dx = dx * scale
            else:
                grads = {**grads, what: grads[what] * scale}
        return dx, grads

    return staticmethod(backward)


@pytest.mark.parametrize(
    "what",
    ["x", "kernel"],
    ids=["input gradient", "kernel gradient (not the last input)"],
)
def test_the_self_check_fails_an_op_whose_gradient_is_wrong_in_one_case(monkeypatch, what):
    """A gradient 1 % off changes the directional derivative by ~1 %, 1e4 times the
    self-check's 1e-6 tolerance. GroupedPointwise is wrong here only in its first case
    (12 -> 8, G=4) and only in one of its three inputs: the op's row is the worst over every
    case and every input, so it must fail; every other op's row stays a pass."""
    monkeypatch.setattr(GroupedPointwise, "backward", _wrong_when(GroupedPointwise, "x2", 12, what))
    rows = {r.layer: r for r in selfcheck.run_selfcheck(seed=0)}
    bad = rows["GroupedPointwise"]
    assert bad.status == "fail" and not bad.passed, bad
    assert 1e-3 < bad.error < 0.1, bad  # ~1e-2: the size of the slip, not round-off
    assert all(r.passed for op, r in rows.items() if op != "GroupedPointwise"), rows


def test_the_full_self_check_runs_more_cases_than_the_quick_one(monkeypatch):
    """``--full`` exists to run more cases: every op's row in full mode must count more cases
    than in quick mode (the numbers themselves are not computed here)."""
    monkeypatch.setattr(selfcheck, "directional_error", lambda case, rng: 0.0)

    def counts(full: bool) -> dict[str, int]:
        rows = selfcheck.run_selfcheck(seed=0, full=full)
        return {r.layer: int(r.config.split(" cases:")[0]) for r in rows}

    quick, full = counts(False), counts(True)
    assert quick.keys() == full.keys() and "Conv2D" in quick
    assert all(full[op] > quick[op] for op in quick), (quick, full)


def test_swish_with_a_wrong_input_gradient_fails_the_self_check(monkeypatch):
    """The simplest case: a unary op whose ``dx`` is 1 % off in its only case."""
    original = ops.Swish.backward
    monkeypatch.setattr(
        ops.Swish, "backward", staticmethod(lambda c, dy: (original(c, dy)[0] * 1.01, {}))
    )
    rows = {r.layer: r for r in selfcheck.run_selfcheck(seed=0)}
    assert rows["Swish"].status == "fail", rows["Swish"]


def test_gradient_errors_floor_small_gradients_on_the_scale_given():
    """``gradient_errors(..., scale)`` floors every denominator at ``GRAD_FLOOR`` (1e-2) times
    the largest of the expected norms *and* ``scale``. By hand: one expected gradient of norm
    2e-3 and ``scale=1`` give a floor of 1e-2, so an error of norm 5e-6 is 5e-4 <= 1e-3 (a
    pass); judged on its own norm it would be 2.5e-3 (a fail). Without ``scale`` it fails."""
    from gpconv.conformance import results

    expected = {"g": np.full(4, 1e-3)}  # norm 2e-3
    actual = {"g": expected["g"] + np.array([5e-6, 0.0, 0.0, 0.0])}
    with_scale = results.gradient_errors(actual, expected, scale=1.0)["g"]
    assert with_scale.ok and with_scale.error == pytest.approx(5e-4), with_scale
    alone = results.gradient_errors(actual, expected)["g"]
    assert not alone.ok and alone.error == pytest.approx(2.5e-3), alone


def test_the_quick_networks_train_one_with_an_even_input_to_a_3x3_stride2_depthwise_conv():
    """Symmetric padding and Keras's correct_pad agree for a 3x3 stride-2 conv on an odd input
    (both (1, 1)) and differ only on an even one ((1, 1) vs (0, 1)); the difference shows in
    training mode. So the default (quick) run must train at least one network in which such a
    conv sees an even size, or that porting trap passes ``gpconv check``. Sizes are read from
    the reference's own intermediates."""
    from gpconv.conformance import cases
    from gpconv.core import network

    even = []
    for net in cases.NETWORKS_QUICK:
        if True not in net.modes:
            continue
        arch = cases.network_arch(net, True)
        params = network.init_params(arch, 0)
        x = np.zeros((1, net.size, net.size, 3))
        _, cache = network.forward(arch, params, x, training=True)
        names = ["stem", *(b.name for b in arch.blocks)]
        for prev, b in zip(names, arch.blocks):
            size = cache["intermediates"][prev].shape[1]
            if b.stride == 2 and b.kernel == 3 and size % 2 == 0:
                even.append((net.model, net.size, b.name, size))
    assert even, "no quick training network gives a 3x3 stride-2 depthwise conv an even input"


@pytest.mark.parametrize(
    "op, layer", [(ops.Dense, "Dense"), (GroupedPointwise, "GroupedPointwise")]
)
def test_an_op_that_returns_no_parameter_gradients_fails_the_self_check(monkeypatch, op, layer):
    """``GradCase.grads`` returns "{input name: gradient}" for every input: a gradient the op
    does not return cannot be checked, so it must fail (as ``results.absent`` makes a missing
    gradient infinitely wrong for the backends), not drop out of the check."""
    original = op.backward
    monkeypatch.setattr(op, "backward", staticmethod(lambda c, dy: (original(c, dy)[0], {})))
    rows = {r.layer: r for r in selfcheck.run_selfcheck(seed=0)}
    assert rows[layer].status == "fail", rows[layer]


def test_the_self_check_draws_its_cases_from_the_seed_asked_for(monkeypatch):
    """``gpconv check --backend numpy --seed N`` must check cases drawn from seed N: the inputs
    every case is checked at differ between seeds 0 and 1 and repeat for the same seed."""
    seen: dict[int, list[np.ndarray]] = {}

    def record(seed):
        seen[seed] = []
        monkeypatch.setattr(
            selfcheck,
            "directional_error",
            lambda case, rng: seen[seed].append(next(iter(case.inputs.values())).copy()) or 0.0,
        )
        rows = selfcheck.run_selfcheck(seed=seed)
        assert rows and all(r.passed for r in rows)
        return seen[seed]

    a, b = record(0), record(1)
    again = [x.copy() for x in a]
    assert len(a) == len(b) > 10
    assert all(not np.allclose(x, y) for x, y in zip(a, b)), "seeds 0 and 1 drew the same inputs"
    seen.clear()
    for x, y in zip(again, record(0)):
        np.testing.assert_array_equal(x, y)


def test_a_nan_gradient_fails_the_self_check(monkeypatch):
    """A backward returning NaN is infinitely wrong, never a pass: ``max(worst, nan)`` kept
    ``worst``, so a Swish whose backward returned NaN passed with error 0."""
    original = ops.Swish.backward

    def nan_backward(cache, dy):
        dx, grads = original(cache, dy)
        return np.full_like(dx, np.nan), grads

    monkeypatch.setattr(ops.Swish, "backward", staticmethod(nan_backward))
    rows = {r.layer: r for r in selfcheck.run_selfcheck(seed=0)}
    assert rows["Swish"].status == "fail" and not rows["Swish"].passed, rows["Swish"]
    assert rows["Swish"].error == np.inf, rows["Swish"]
    assert rows["Sigmoid"].passed, rows["Sigmoid"]


def test_kpointwise_cases_are_drawn_from_the_seed_asked_for():
    """``gpconv check --seed N`` must change the kPointwise inputs and parameters (and the same
    seed must give the same case): a seed that stops short of the draw makes every seed one."""
    row = cases.KPOINTWISE_QUICK[1]
    for training in (False, True):
        a0, a0_again, a1 = (cases.kpointwise_case(row, training, s) for s in (0, 0, 1))
        np.testing.assert_array_equal(a0["x"], a0_again["x"])
        assert a0["x"].shape == a1["x"].shape
        assert not np.allclose(a0["x"], a1["x"]), "seeds 0 and 1 drew the same x"
        assert any(not np.allclose(a0["params"][k], a1["params"][k]) for k in a0["params"])


def test_moving_statistics_moved_off_the_batch_statistics_depend_on_the_seed():
    """Training cases start from moving variances ``calibrated * U(0.5, 2)`` (``moved_away``);
    the factors must be drawn from the case's seed, not the same for every seed. The calibrated
    values are the inference case's (it keeps them unmoved)."""
    net = cases.Network("kefficientnet-b0", 16, size=8)  # small: the draw is what matters

    def factors(seed):
        infer = cases.network_case(net, False, seed)["params"]
        train = cases.network_case(net, True, seed)["params"]
        keys = [k for k in infer if k.endswith("/moving_variance")]
        assert keys
        return np.concatenate([np.ravel(train[k] / infer[k]) for k in keys])

    f0, f1 = factors(0), factors(1)
    for f in (f0, f1):
        assert np.all((f > 0.5 - 1e-6) & (f < 2.0 + 1e-6)), f
    assert not np.allclose(f0, f1, rtol=1e-3), "the same U(0.5, 2) factors for seeds 0 and 1"
