"""Checks that must be able to fail: each test gives ``conformance/checks.py`` or the golden
files' checks (``conformance/golden.py``) a backend (or an output) wrong in one way, and asserts
that the right row fails and names the right layer; and the comparisons under every row
(``conformance/results.py``) rank and flag errors as documented. (Mutation runs found each of
these ways unwatched.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import describe, failing

from gpconv.backends.numpy_reference import NumpyBackend
from gpconv.conformance import cases, checks, golden
from gpconv.conformance.checks import (
    call,
    call_forward,
    check_interleave,
    check_kpointwise,
    compare_kpointwise,
    run_backend_checks,
)
from gpconv.conformance.results import LOCATE_TOL, Comparison, allclose, scaled_max, worst
from gpconv.conformance.traps import FORWARD_FIRST
from gpconv.core import network
from gpconv.core.arch import with_dropout, without_dropout
from gpconv.core.ops.normalization import MOMENTUM
from gpconv.core.params import init_params


class _Backend(NumpyBackend):
    """The float64 reference, with the methods a test overrides."""

    name = "test-backend"


KP_ROW = (32, 16, 2, True, "swish", False)  # interleave, second conv, BN: every output


# --- the interface ------------------------------------------------------------------------


def test_param_count_must_be_exactly_a_pair():
    """``param_count`` returns ``(trainable, non_trainable)``: a triple would have its third
    count dropped by the comparison's ``zip``, so it is refused like any other wrong value."""

    class Triple(_Backend):
        def param_count(self, model):
            return (1, 2, 0)

    with pytest.raises(TypeError, match=r"Triple\.param_count\(\).*\(trainable, non_trainable\)"):
        call(Triple(), "param_count", None)


@pytest.mark.parametrize("key", ["y", "dx", "grads", "moving_stats"])
def test_a_kpointwise_result_without_any_one_output_is_a_type_error_naming_it(key):
    """Every key of the interface's result is required, the first as much as the others: one
    left out is a ``TypeError`` naming the method and the missing key (not a ``KeyError``)."""

    class Without(_Backend):
        def kpointwise(self, *a, **k):
            out = dict(super().kpointwise(*a, **k))
            del out[key]
            return out

    ref = cases.kpointwise_case(KP_ROW, False, seed=0)
    with pytest.raises(TypeError, match=rf"Without\.kpointwise\(\).*without \['{key}'\]"):
        call(Without(), "kpointwise", ref["spec"], ref["params"], ref["x"], ref["dy"])


@pytest.mark.parametrize("dropped", ["stem", "top"])
def test_a_forward_without_the_stem_or_top_intermediate_is_a_type_error_naming_it(dropped):
    """``forward`` returns every intermediate of ``core.network.forward``'s cache (the stem, each
    block, the top and the logits): one missing would leave a divergence there unlocated."""

    class Without(_Backend):
        def forward(self, *a, **k):
            out = dict(super().forward(*a, **k))
            del out[dropped]
            return out

    arch = cases.network_arch(cases.NETWORKS_QUICK[0], training=False)
    backend = Without()
    model = backend.build(arch)
    x = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(TypeError, match=rf"Without\.forward\(\).*without \['{dropped}'\]"):
        call_forward(backend, arch, model, x)


@pytest.mark.parametrize("key", ["grads", "moving_stats"])
def test_named_outputs_that_are_not_dicts_are_a_type_error_naming_them(key):
    """``grads`` and ``moving_stats`` are ``{name: array}`` dicts: a list of arrays is refused
    naming the method and the key, not left to fail inside a check."""

    class AsList(_Backend):
        def kpointwise(self, *a, **k):
            out = dict(super().kpointwise(*a, **k))
            out[key] = list(out[key].values())
            return out

    ref = cases.kpointwise_case(KP_ROW, True, seed=0)
    with pytest.raises(TypeError, match=rf"AsList\.kpointwise\(\)\['{key}'\] to be a dict"):
        call(AsList(), "kpointwise", ref["spec"], ref["params"], ref["x"], ref["dy"], training=True)


# --- interleave -----------------------------------------------------------------------------


def test_interleave_must_be_exact():
    """A permutation is exact in any precision: a value 1e-7 off fails the interleave row."""

    class Nudged(_Backend):
        def interleave(self, x, groups):
            return super().interleave(x, groups) + 1e-7

    rows = check_interleave(Nudged())
    assert [r.status for r in rows] == ["fail"], describe(rows)


def test_an_interleave_crashing_on_one_case_is_an_error_row_naming_it():
    """The case that raised is not left out of the worst-of comparison: the report is an error
    row naming it (infinitely wrong, as the row of a backend that raises always is), not a pass
    over the cases that ran."""
    last_c, last_g = cases.INTERLEAVE_CASES[-1]

    class CrashesOnLast(_Backend):
        def interleave(self, x, groups):
            if x.shape[-1] == last_c and groups == last_g:
                raise RuntimeError("boom")
            return super().interleave(x, groups)

    rows = check_interleave(CrashesOnLast())
    assert [(r.status, r.error) for r in rows] == [("error", float("inf"))], describe(rows)
    assert rows[0].to_dict()["error"] is None  # JSON null: no error was measured
    assert rows[0].config == f"C={last_c} G={last_g}" and "boom" in rows[0].detail


# --- kPointwise -----------------------------------------------------------------------------


class _KpOff(_Backend):
    """kPointwise with one output scaled by ``1 + factor``."""

    def __init__(self, what: str, factor: float):
        self.what, self.factor = what, factor

    def kpointwise(self, *a, **k):
        out = super().kpointwise(*a, **k)
        if self.what == "moving_stats":
            out["moving_stats"] = {s: v * (1 + self.factor) for s, v in out["moving_stats"].items()}
        else:
            out[self.what] = out[self.what] * (1 + self.factor)
        return out


@pytest.mark.parametrize(
    ("what", "check"),
    [
        ("y", "kpointwise forward"),
        ("dx", "kpointwise backward"),
        ("moving_stats", "bn moving stats"),
    ],
)
def test_kpointwise_outputs_off_by_a_tenth_of_a_percent_fail(what, check):
    """DESIGN.md §4: layer outputs within ``rtol=1e-4, atol=1e-5``, gradients within a relative
    1e-3: a kPointwise output 1e-3 (forward, moving statistics) or 1e-2 (dx) too large fails its
    own row, and only that row."""
    factor = 1e-2 if what == "dx" else 1e-3
    ref = cases.kpointwise_case(KP_ROW, True, seed=0)
    rows = compare_kpointwise(_KpOff(what, factor), ref)
    assert [r.check for r in failing(rows)] == [check], describe(rows)
    if what == "dx":
        assert failing(rows)[0].config.endswith("worst=dx"), describe(rows)


def test_full_kpointwise_checks_run_the_full_cases():
    """``full=True`` runs every row of ``KPOINTWISE_FULL``: a backend wrong only for a sigmoid
    activation (which only the full cases have) passes the quick check and fails the full one."""
    assert not any(r[4] == "sigmoid" for r in cases.KPOINTWISE_QUICK)
    assert any(r[4] == "sigmoid" for r in cases.KPOINTWISE_FULL)

    class WrongSigmoid(_Backend):
        def kpointwise(self, spec, *a, **k):
            out = super().kpointwise(spec, *a, **k)
            if spec.activation == "sigmoid":
                out["y"] = out["y"] + 0.1
            return out

    assert not failing(check_kpointwise(WrongSigmoid()))
    bad = failing(check_kpointwise(WrongSigmoid(), full=True))
    assert bad and all(r.check == "kpointwise forward" and "48->12" in r.layer for r in bad), (
        describe(bad)
    )
    assert {r.config.endswith("training=True") for r in bad} == {False, True}, describe(bad)


# --- run_backend_checks ---------------------------------------------------------------------


def test_run_backend_checks_passes_seed_and_mode_to_every_check(monkeypatch):
    """``gpconv check --full --seed 5`` runs each check with seed 5 and, but for the interleave
    check (which has no full mode), ``full=True``; every check of the table runs."""
    calls = {}
    for name in list(checks.CHECKS):
        monkeypatch.setitem(
            checks.CHECKS, name, lambda b, name=name, **kw: calls.setdefault(name, kw) and []
        )
    assert list(run_backend_checks(_Backend(), seed=5, full=True)) == []
    expected = {n: {"seed": 5, "full": True} for n in checks.CHECKS}
    expected["interleave"] = {"seed": 5}
    assert calls == expected


def test_every_documented_check_is_in_the_table():
    """Every check docs/adding-a-backend.md describes is in ``CHECKS``, so ``gpconv check`` (which
    runs ``run_backend_checks``) runs it: the head-dropout one too, selectable with ``only``."""
    assert set(checks.CHECKS) == {
        "interleave",
        "kpointwise",
        "params",
        "network",
        "drop-connect",
        "head-dropout",
    }
    rows = list(run_backend_checks(_Backend(), only=("head-dropout",)))
    assert rows and {r.check for r in rows} == {"head dropout mask", "head dropout rate"}
    assert all(r.passed for r in rows), describe(rows)


# --- parameters -----------------------------------------------------------------------------

ONE_NETWORK = cases.NETWORKS_QUICK[:1]
INFERENCE_ONLY = (replace(cases.NETWORKS_QUICK[0], modes=(False,)),)


@pytest.mark.slow
def test_param_counts_off_in_opposite_directions_fail(monkeypatch):
    """The count error is the sum of both counts' absolute differences: one trainable
    parameter too many and one non-trainable too few is 2 off, not 0."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", ONE_NETWORK)

    class Swapped(_Backend):
        def param_count(self, model):
            trainable, non_trainable = super().param_count(model)
            return trainable + 1, non_trainable - 1

    counts = [r for r in checks.check_params(Swapped()) if r.check == "param count"]
    assert [(r.status, r.error) for r in counts] == [("fail", 2.0)], describe(counts)


# --- whole networks -------------------------------------------------------------------------


class _NetworkOff(_Backend):
    """The reference with one inference output changed: ``loss`` 1% too large; ``block``: the
    first block's intermediate 1% too large (the logits right); ``nan``: NaN from the first
    block on. (An inference that updates the statistics is ``mutants.ALWAYS_TRAINING``, tested
    in test_conformance.py.)"""

    def __init__(self, what: str):
        self.what = what

    def forward(self, model, x, training=False):
        out = super().forward(model, x, training)
        if self.what == "block":
            first = model.arch.blocks[0].name
            out = {**out, first: out[first] * 1.01}
        if self.what == "nan":  # an overflow in the first block, carried to the logits
            first = model.arch.blocks[0].name
            out = {**out, first: out[first] * np.nan, "logits": out["logits"] * np.nan}
        return out

    def loss_and_grads(self, model, x, labels, training=True):
        out = super().loss_and_grads(model, x, labels, training)
        if self.what == "loss":
            out = {**out, "loss": out["loss"] * 1.01}
        return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("what", "failed"),
    [
        ("loss", [("network loss", "loss")]),
        ("block", [("network logits", "block1a")]),
    ],
)
def test_an_inference_output_off_fails_its_own_row(monkeypatch, what, failed):
    """DESIGN.md §4 tolerances: a loss 1% off fails the loss row (relative 1e-3); a block's
    intermediate 1% off fails the logits rows at that block though the logits agree (the
    intermediates are what a failure is traced with)."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    bad = failing(checks.check_network(_NetworkOff(what)))
    assert [(r.check, r.layer) for r in bad] == failed, describe(bad)


# --- dropout --------------------------------------------------------------------------------


def _drop_connect_copies():
    """``(arch, params, image, intermediates)``: the reference's intermediates of the copies of
    one image that the drop-connect check runs (training mode, no dropout), as a backend that
    is right would return them."""
    arch = without_dropout(cases.network_arch(cases.NETWORKS_QUICK[0], training=True))
    params = init_params(arch, 0, np.float64)
    image = np.random.default_rng(0).standard_normal((1, 8, 8, 3))
    copies = np.repeat(image, checks.DROP_CONNECT_COPIES, 0)
    _, cache = network.forward(arch, params, copies, training=True)
    return arch, params, image, dict(cache["intermediates"])


def test_a_drop_connect_branch_whose_stem_already_differs_blames_the_forward_pass():
    """The copies' stem output must be the reference's for the image within ``LOCATE_TOL`` of
    its scale: a stem 10 times that far off is reported at the stem (the forward pass diverges
    first), not traced into block1a as a drop-connect trap."""
    arch, params, image, got = _drop_connect_copies()
    stem = got["stem"]
    got["stem"] = stem + 10 * LOCATE_TOL * max(1.0, float(np.max(np.abs(stem))))
    block, cmp, trap = checks.drop_connect_branch_error(arch, params, image, got)
    assert (block, cmp.ok, trap) == (arch.blocks[0].name, False, FORWARD_FIRST.format("stem"))
    assert "its input stem already differs" in cmp.note, cmp


def test_full_head_dropout_checks_every_architecture():
    """``--full`` runs the head-dropout check on the first network of each model and width of
    ``NETWORKS_FULL`` (kEffNet-B0 at 16 and 32 channels per group, EfficientNet-B0), quick on
    the first only: two rows each."""
    widths = {(n.model, n.m) for n in cases.NETWORKS_FULL}
    assert len(widths) == 3
    full = checks.check_head_dropout(_Backend(), full=True)
    assert len(full) == 2 * len(widths) and all(r.passed for r in full), describe(full)
    assert {r.config.split(" 16x16")[0] for r in full} == {
        f"{m}{f' {w}ch' if w else ''}" for m, w in widths
    }, describe(full)
    assert len(checks.check_head_dropout(_Backend())) == 2


@pytest.mark.slow
def test_copies_count_as_the_first_only_when_every_logit_agrees(monkeypatch):
    """A copy gave "the first copy's logits" when all of its logits are within 1e-4 of the
    scale of the first's: per-sample drop-connect whose copies happen to share one logit (here
    the first class's, set equal across copies) still passes the per-sample row."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", ONE_NETWORK)

    class SharedFirstLogit(_Backend):
        def forward(self, model, x, training=False):
            out = super().forward(model, x, training)
            logits = np.array(out["logits"])
            logits[:, 0] = logits[0, 0]
            return {**out, "logits": logits}

    rows = [r for r in checks.check_drop_connect(SharedFirstLogit()) if r.check.endswith("sample")]
    assert [r.status for r in rows] == ["pass"], describe(rows)


def test_head_dropout_share_counts_only_features_far_enough_from_zero_to_tell():
    """``head_dropout_errors``: the share dropped is taken among the features far enough from
    0 to tell dropped from kept. With half the pooled features exactly 0 (dead channels) and
    exactly the rate's share of the others dropped, the share is the rate (error 0), where
    counting the zero features (as kept: 0 is as near 0 as it is near 0 / (1 - rate)) would
    halve it."""

    net = cases.NETWORKS_QUICK[0]
    arch = with_dropout(cases.network_arch(net, training=False), drop_connect_rate=0.0)
    rate, classes = arch.head.dropout, arch.num_classes
    assert rate == 0.2  # B0's
    params = init_params(arch, 0, np.float64)
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(params["predictions/kernel"].shape)
    params = {**params, "predictions/kernel": kernel}
    features = kernel.shape[0]
    pooled = rng.uniform(1.0, 2.0, features) * rng.choice([-1.0, 1.0], features)
    pooled[: features // 2] = 0.0
    live = np.arange(features // 2, features)
    dropped = rng.choice(live, int(round(rate * len(live))), replace=False)
    h = pooled / (1 - rate)
    h[dropped] = 0.0
    logits = h @ kernel + params["predictions/bias"]
    p = np.exp(logits - logits.max())
    label = 3
    dlogits = p / p.sum() - np.eye(classes)[label]
    got = {"logits": logits[None], "grads": {"predictions/kernel": np.outer(h, dlogits)}}
    mask, share = checks.head_dropout_errors(arch, params, pooled, label, got)
    assert mask.ok, mask
    expected_share = len(dropped) / len(live)
    assert share.note.startswith(f"{len(dropped)} of {len(live)} features dropped"), share
    assert share.error == pytest.approx(abs(expected_share - rate)) and share.ok, share


@pytest.mark.slow
def test_a_running_variance_updated_with_a_slightly_wrong_batch_variance_fails(monkeypatch):
    """Keras's update ``r' = m r + (1 - m) b`` moves ``r'`` by only 1% of ``b``: a batch variance
    0.4% too large (here in the BNs of one kPointwise layer) changes ``r'`` by 4e-5 of ``b``,
    inside ``rtol=1e-4`` on the values, so the moving-statistics row also judges the batch
    variance each update implies, ``(r' - m r) / (1 - m)``, within 1e-3. Only that row fails,
    at that layer (named as a layer, not by its BN's parameter path), naming the variance trap
    (every moving mean is right)."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", (replace(ONE_NETWORK[0], modes=(True,)),))

    class BiggerBatchVariance(_Backend):
        def loss_and_grads(self, model, x, labels, training=True):
            old = dict(model.params)
            out = super().loss_and_grads(model, x, labels, training)
            for k in model.params:
                if k.startswith("block2a_project/") and k.endswith("moving_variance"):
                    b = (model.params[k] - MOMENTUM * old[k]) / (1 - MOMENTUM)
                    model.params[k] = MOMENTUM * old[k] + (1 - MOMENTUM) * b * 1.004
            return out

    bad = failing(checks.check_network(BiggerBatchVariance()))
    assert [r.check for r in bad] == ["network moving stats"], describe(bad)
    assert "likely trap: BN running variance" in bad[0].detail, describe(bad)
    assert bad[0].layer == "block2a_project", describe(bad)  # the layer, not its BN's name


@pytest.mark.slow
def test_a_located_non_finite_intermediate_is_blamed_on_no_trap(monkeypatch):
    """NaN from the first block on: the logits rows name block1a as the first diverging layer
    and say that it is non-finite, and (as for any NaN) name no porting trap."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    bad = [r for r in failing(checks.check_network(_NetworkOff("nan"))) if "logits" in r.check]
    assert [r.layer for r in bad] == ["block1a", "block1a"], describe(bad)
    for row in bad:
        assert "non-finite value(s)" in row.detail and "likely trap" not in row.detail, row


def test_a_channels_first_stem_in_the_drop_connect_check_is_a_layout_failure():
    """The copies' stem output must have the reference's shape ``(copies, H, W, C)``: one of the
    same rank but channels-first is a failing comparison flagged as a layout problem, naming
    both shapes, not a broadcasting error or a comparison of misplaced values."""
    arch, params, image, got = _drop_connect_copies()
    stem = got["stem"]
    got["stem"] = np.moveaxis(stem, -1, 1)
    block, cmp, _ = checks.drop_connect_branch_error(arch, params, image, got)
    assert (block, cmp.ok, cmp.layout) == (arch.blocks[0].name, False, True), cmp
    assert f"{tuple(got['stem'].shape)}, expected {tuple(stem.shape)}" in cmp.note, cmp


def test_non_finite_values_where_the_reference_is_non_finite_too_are_not_flagged():
    """Only NaN/Inf *where the reference is finite* is the backend's overflow (``non_finite``)."""
    both = allclose(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert not both.non_finite and not both.ok
    mine = allclose(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert mine.non_finite and not mine.ok and mine.error == np.inf


def test_worst_ranks_any_error_against_a_zero_tolerance_above_every_finite_ratio():
    """A zero tolerance with a positive error (even 0.5) is infinitely bad: it is the worst,
    ahead of an error 1e3 times a tolerance."""
    named = {"small-vs-zero": Comparison(0.5, 0.0), "large-ratio": Comparison(1.0, 1e-3)}
    assert worst(named)[0] == "small-vs-zero"
    named = {"exact": Comparison(0.0, 0.0), "off": Comparison(2.0, 1.0)}
    assert worst(named)[0] == "off"


def test_scaled_max_is_the_largest_error_not_the_average():
    """The logit criterion is ``max |a - e| <= tol * max(1, max |e|)``: one logit of ten off by
    2e-3 (expected values at most 1) fails the 1e-3 tolerance, though the mean error is 2e-4."""
    e = np.linspace(-1.0, 1.0, 10)
    a = e.copy()
    a[3] += 2e-3
    c = scaled_max(a, e, 1e-3)
    assert c.error == pytest.approx(2e-3) and c.tolerance == pytest.approx(1e-3)
    assert not c.ok


class _BatchVarianceHalfPercentHigh(NumpyBackend):
    """Exports moving variances whose implied batch variance ``(r' - m r) / (1 - m)`` is 0.5 %
    too high: ``r'`` moves by only ``(1 - m) * 0.005 * b``, inside the tolerance on ``r'``."""

    name = "golden-batch-variance-off"
    dtype = np.float32  # float32 tolerances (float64 ones fail any change to r')

    def export_params(self, model):
        out = dict(super().export_params(model))
        t, _ = golden.load("network.safetensors")
        before = {
            k[len("training/moving_stats_before/") :]: v
            for k, v in t.items()
            if k.startswith("training/moving_stats_before/")
        }
        for k, v in out.items():
            if k.endswith("/moving_variance") and k in before:
                v = np.asarray(v, np.float64)
                batch = (v - MOMENTUM * before[k]) / (1 - MOMENTUM)
                out[k] = v + (1 - MOMENTUM) * 0.005 * batch
        return out


def test_golden_moving_stats_are_judged_from_the_statistics_training_started_at():
    """The golden network trains from ``moving_stats_before`` (not the calibrated ``params``):
    the implied batch statistic must be computed from those, with its tolerance on the batch
    statistic's scale. A 0.5 % error in every implied batch variance (10x that 1e-3) fails;
    measured from ``params`` the tolerance grows with the moved-away shift and it passed."""
    all_rows = golden.check_golden(_BatchVarianceHalfPercentHigh())
    rows = [r for r in all_rows if r.layer.startswith("moving stats")]
    assert all(r.passed for r in all_rows if r not in rows), all_rows
    assert len(rows) == 1 and rows[0].status == "fail", rows
    assert rows[0].error > rows[0].tolerance, rows


class _InterleaveWrongForOneShape(NumpyBackend):
    """Interleaves every golden case right but the last in key order (C96, G=4): channels
    reversed there, as a port with a layout slip for one channel count would."""

    name = "golden-interleave-one-case-wrong"

    def interleave(self, x, groups):
        y = super().interleave(x, groups)
        return y[..., ::-1] if np.shape(x)[-1] == 96 else y


def test_every_golden_interleave_case_is_compared():
    """The interleave golden row is the worst over *every* case in the file: a backend wrong
    only for C=96 (last of the five in key order) fails it, and the row names that case."""
    rows = [
        r for r in golden.check_golden(_InterleaveWrongForOneShape()) if r.layer == "interleave"
    ]
    assert len(rows) == 1 and rows[0].status == "fail", rows
    assert "C96_G4" in rows[0].config, rows


class _NaNGradient(NumpyBackend):
    """Returns every parameter gradient, but one of them NaN (an overflow in one layer)."""

    name = "golden-nan-gradient"

    def loss_and_grads(self, model, x, labels, training=True):
        out = dict(super().loss_and_grads(model, x, labels, training=training))
        grads = dict(out["grads"])
        victim = sorted(grads)[0]
        grads[victim] = np.full_like(np.asarray(grads[victim]), np.nan)
        out["grads"] = grads
        return out


def test_a_nan_gradient_fails_the_golden_gradient_sketch():
    """NaN in a gradient is infinitely wrong, never an error of 0: the golden network's
    gradients row fails with an infinite error."""
    rows = [r for r in golden.check_golden(_NaNGradient()) if r.layer.startswith("gradients")]
    assert len(rows) == 1 and rows[0].status == "fail" and rows[0].error == np.inf, rows


class _MissingGradient(NumpyBackend):
    """Leaves one parameter gradient out (a frozen or misnamed variable)."""

    name = "golden-missing-gradient"

    def loss_and_grads(self, model, x, labels, training=True):
        out = dict(super().loss_and_grads(model, x, labels, training=training))
        grads = dict(out["grads"])
        del grads[sorted(grads)[0]]
        out["grads"] = grads
        return out


def test_a_missing_gradient_fails_the_golden_gradient_sketch():
    """A gradient the backend did not return is infinitely wrong, not taken as the reference's:
    the golden gradients row fails, naming it."""
    rows = [r for r in golden.check_golden(_MissingGradient()) if r.layer.startswith("gradients")]
    assert len(rows) == 1 and rows[0].status == "fail" and rows[0].error == np.inf, rows
