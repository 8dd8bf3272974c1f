"""The conformance suite must be able to fail: every mutant is caught, at the right layer."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
from helpers import describe, failing
from hypothesis import example, given

from gpconv.backends import get
from gpconv.backends.base import Backend
from gpconv.backends.numpy_reference import NumpyBackend
from gpconv.conformance import cases, golden, mutants, results, runner, strategies
from gpconv.conformance.checks import (
    check_drop_connect,
    check_interleave,
    check_kpointwise,
    check_network,
    check_params,
    compare_kpointwise,
)
from gpconv.conformance.report import format_report
from gpconv.conformance.runner import run
from gpconv.core import arch as core_arch
from gpconv.core.pointwise import KPointwiseSpec


class Float32Numpy(NumpyBackend):
    """The reference computing in float32: the reference's function with a float32 backend's
    round-off, which the conformance tolerances must accept."""

    name = "numpy[float32]"
    dtype = np.float32


def test_reference_passes_its_own_checks():
    """In float32: in float64 every row compares the reference with itself (error 0.0)."""
    rows = check_interleave(Float32Numpy()) + check_kpointwise(Float32Numpy())
    assert not failing(rows), describe(failing(rows))


def test_mutants_all_lists_every_mutant_once_under_a_distinct_name():
    """``mutants.ALL`` is the catalogue of traps: a mutant defined but left out of it would go
    unlisted, and two with one name would share their report rows."""
    defined = [v for v in vars(mutants).values() if isinstance(v, Backend)]
    assert {id(m) for m in mutants.ALL} == {id(m) for m in defined}
    assert len(mutants.ALL) == len(defined)
    names = [m.name for m in mutants.ALL]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    assert all(n.startswith("mutant-") for n in names), names


@given(ref=strategies.kpointwise_refs())
# A second conv with BN in training mode and a bias (zero gradient in exact arithmetic): the
# ci profile's 8 draws have no such case.
@example(ref=cases.kpointwise_case((8, 8, 2, True, "swish", True), True, seed=0))
def test_reference_backend_matches_drawn_kpointwise_cases(ref):
    """In float32, so that the rows compare something: the float64 reference backend returns
    the drawn case's own arrays bit for bit, which passes whatever the tolerances are."""
    rows = compare_kpointwise(Float32Numpy(), ref)
    assert not failing(rows), describe(failing(rows))


@pytest.mark.parametrize("values, fails", [(2, True), (strategies.MIN_TRAINING_VALUES, False)])
def test_training_cases_have_enough_values_per_channel_for_a_float32_backend(values, fails):
    """Batch norm in training mode over 2 values per channel has an input gradient that is 0 up
    to epsilon terms: the float32 reference then fails the relative dx check on round-off (as it
    did once in a 100-example hypothesis run). With the strategy's minimum it passes every case."""
    spec = KPointwiseSpec(1, 3, 1, bn=True, activation=None, bias=True)
    failed = []
    for seed in range(40):
        ref = cases.reference_kpointwise(spec, True, seed=seed, shape=(values, 1, 1))
        failed += failing(compare_kpointwise(Float32Numpy(), ref))
    assert bool(failed) == fails, describe(failed)


def test_transposed_interleave_is_caught():
    m = mutants.INTERLEAVE_TRANSPOSED
    assert failing(check_interleave(m))[0].layer == "interleave"
    bad = failing(check_kpointwise(m))
    assert bad, "a transposed interleave must change kPointwise outputs"
    # Only interleaving layers can be affected: G == 1 and Cout // G == 1 rows must still pass.
    assert all("G=1 " not in r.config and "96->4" not in r.config for r in bad), describe(bad)


def test_nan_output_is_reported_as_such_not_as_a_porting_trap():
    # A backend that overflows has no porting trap to blame; the row must say what is wrong.
    from gpconv.core import pointwise

    original = pointwise.interleave

    def nan_interleave(x, groups):
        return original(x, groups) * np.nan

    broken = mutants.MutantBackend(
        "mutant-nan", lambda: [(pointwise, "interleave", nan_interleave)]
    )
    bad = failing(check_kpointwise(broken))
    assert bad, "NaN outputs must fail"
    for row in bad:
        assert "non-finite value(s) (NaN/Inf) where the reference is finite" in row.detail
        assert "likely trap" not in row.detail, describe([row])


def test_residual_on_interleaved_is_caught_only_where_it_applies():
    bad = failing(check_kpointwise(mutants.RESIDUAL_ON_INTERLEAVED))
    layers = {r.layer for r in bad}
    assert layers == {"kpointwise 32->16 G=2", "kpointwise 24->24 G=3"}, describe(bad)


def test_bn_epsilon_is_caught_and_traced_to_the_stem():
    m = mutants.BN_EPS_1E5
    assert any(r.check == "kpointwise forward" for r in failing(check_kpointwise(m)))
    logits = [r for r in failing(check_network(m)) if r.check == "network logits"]
    assert logits and all(r.layer == "stem" for r in logits), describe(logits)
    assert "epsilon" in logits[0].detail


def test_unbiased_running_variance_fails_only_the_moving_statistics():
    bad = failing(check_kpointwise(mutants.UNBIASED_RUNNING_VARIANCE))
    assert bad and {r.check for r in bad} == {"bn moving stats"}, describe(bad)
    assert "biased" in bad[0].detail


@pytest.mark.parametrize(
    "mutant", [mutants.UNBIASED_RUNNING_VARIANCE, mutants.PYTORCH_MOMENTUM], ids=lambda m: m.name
)
def test_running_statistic_traps_fail_the_whole_network_and_golden_checks(mutant):
    """Whole networks used to start training from moving statistics equal to the batch's, where
    Keras's update returns the batch statistic for any momentum, and an unbiased variance moves
    it by less than any tolerance on it: a port with either trap in every BN passed."""
    bad = failing(check_network(mutant))
    assert bad and {r.check for r in bad} == {"network moving stats"}, describe(bad)
    golden_bad = failing(golden.check_golden(mutant))
    assert any(r.layer.startswith("moving stats") for r in golden_bad), describe(golden_bad)


@pytest.mark.parametrize(
    ("mutant", "named", "not_named"),
    [
        (mutants.UNBIASED_RUNNING_VARIANCE, "*biased* batch variance", "momentum"),
        (mutants.PYTORCH_MOMENTUM, "momentum 0.99", "biased"),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_moving_statistic_rows_name_the_trap_that_fits(mutant, named, not_named):
    """An unbiased batch variance leaves the moving means right; a wrong momentum moves them too.
    Each row names only its own trap (both used to get one hint naming the two)."""
    rows = [
        r
        for r in failing(check_kpointwise(mutant) + check_network(mutant))
        if r.check in ("bn moving stats", "network moving stats")
    ]
    assert {r.check for r in rows} == {"bn moving stats", "network moving stats"}, describe(rows)
    for r in rows:
        assert named in r.detail and not_named not in r.detail, describe([r])


def test_symmetric_padding_is_traced_to_the_stem():
    rows = check_network(mutants.SYMMETRIC_PADDING)
    logits = [r for r in failing(rows) if r.check == "network logits"]
    assert logits and all(r.layer == "stem" for r in logits), describe(logits)
    assert "(2, 32, 32, 32) vs reference (2, 31, 31, 32)" in logits[0].detail
    # The moving statistics fail too, but because of the forward pass: not a BN-momentum trap.
    stats = [r for r in failing(rows) if r.check == "network moving stats"]
    assert stats and all("forward pass diverges first" in r.detail for r in stats), describe(stats)
    assert not any("momentum" in r.detail for r in stats), describe(stats)


def test_drop_connect_per_batch_is_caught_by_its_own_check_only():
    """The training checks run without dropout, so a port that drew one drop-connect mask for
    the whole batch passed every other check; the drop-connect check names it."""
    mutant = mutants.DROP_CONNECT_PER_BATCH
    assert not failing(check_network(mutant)), "the mutant differs only in its dropout masks"
    bad = failing(check_drop_connect(mutant))
    own = [r for r in bad if r.check == "drop-connect per sample"]
    assert own, describe(bad)
    assert "15 of 15 copies gave the first copy's logits" in own[0].detail
    assert "not the whole batch at once" in own[0].detail
    # Its one draw (unseeded: forward takes no rng) drops the whole batch at block2b with
    # probability 1/16, and the branch row then fails too, for that reason only.
    others = [r for r in bad if r.check != "drop-connect per sample"]
    assert all(
        r.check == "drop-connect branch" and "every copy dropped" in r.detail for r in others
    ), describe(others)


@pytest.mark.parametrize("compare", [results.allclose, results.scaled_max, results.relative_norm])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_fails_every_criterion(compare, bad):
    """A NaN error taken as 0 passed the logit and gradient criteria (the checker went blind
    to a backend returning NaNs; only the element-wise one was tested)."""
    expected = np.array([[0.5, 1.0, -2.0], [3.0, 0.0, 1.5]])
    actual = expected.copy()
    actual[1, 1] = bad
    cmp = compare(actual, expected)
    assert not cmp.ok and cmp.non_finite, cmp
    assert compare(expected.copy(), expected).ok  # the same arrays, finite: a pass


def test_drop_connect_check_blames_no_trap_for_non_finite_logits():
    from gpconv.core import pointwise

    original = pointwise.interleave
    broken = mutants.MutantBackend(
        "mutant-nan", lambda: [(pointwise, "interleave", lambda x, g: original(x, g) * np.nan)]
    )
    bad = failing(check_drop_connect(broken))
    details = {r.check: r.detail for r in bad}
    assert details == {
        "drop-connect per sample": "non-finite logits",
        "drop-connect branch": "non-finite block1a output",
    }, describe(bad)


NEITHER = "neither x (dropped) nor x + y / (1 - rate) (kept)"


@pytest.mark.parametrize(
    ("mutant", "symptom"),
    [
        (mutants.DROP_CONNECT_UNSCALED, (NEITHER,)),
        (mutants.DROP_CONNECT_PER_ELEMENT, (NEITHER,)),
        # It keeps 1 copy in 16 at block2b (masks from fresh entropy): none (p = 0.36), or some,
        # scaled by 16 instead of 16/15.
        (mutants.DROP_CONNECT_KEEP_PROBABILITY, (NEITHER, "16 dropped: every copy dropped")),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_drop_connect_that_masks_or_scales_wrongly_is_caught_at_its_first_block(
    monkeypatch, mutant, symptom
):
    """Kept samples not scaled by 1/(1 - rate), a mask per value instead of per sample, or a
    keep probability fed the drop rate (TF1's keep_prob): the copies of one image still differ,
    so these passed every check. block2b, B0's first block that drops, sees each of them."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    rows = check_drop_connect(mutant)
    bad = failing(rows)
    assert [(r.check, r.layer) for r in bad] == [("drop-connect branch", "block2b")], describe(rows)
    assert any(s in bad[0].detail for s in symptom), describe(bad)
    assert "scales a kept one by 1 / (1 - rate)" in bad[0].detail, describe(bad)
    assert not failing(check_network(mutant)), "the mutants differ only where masks are drawn"


def test_every_copy_dropped_fails_only_blocks_where_a_correct_backend_hardly_does_it():
    """16 copies all dropped is what a correct backend does with a probability of rate ** 16:
    2e-6 at B0's last residual block (rate 0.44 at drop_connect_rate 0.5), 2.5e-6 over its late
    blocks, which failed about one check run in 10**5 per backend; at block2b (rate 1/16) it
    still fails (a backend that drops every branch)."""
    from gpconv.conformance import checks

    b0 = cases.network_arch(cases.Network("efficientnet-b0"), False)
    arch = core_arch.with_dropout(b0, drop_connect_rate=checks.DROP_CONNECT_RATE)
    dropping = [b for b in arch.blocks if b.residual and b.drop_rate > 0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((checks.DROP_CONNECT_COPIES, 2, 2, 8))
    ref = x + rng.standard_normal(x.shape)  # the branch's output; each copy left as x: dropped
    first = checks._block_drop_error(dropping[0], x, ref, x)
    assert not first.ok and "every copy dropped" in first.note, first
    last = checks._block_drop_error(dropping[-1], x, ref, x)
    assert dropping[-1].drop_rate == pytest.approx(0.4375)
    assert last.ok and "0 of 16 copies kept, 16 dropped" in last.note, last


@pytest.mark.parametrize("name", ["numpy", "torch", "tensorflow"])
def test_per_sample_drop_connect_passes_the_drop_connect_check(name):
    """Per-sample masks pass: the reference (checked as any backend) and both frameworks'."""
    from gpconv.conformance.runner import resolve

    backend = resolve(name)
    if not backend.is_available():
        pytest.skip(f"{name} is not installed")
    rows = check_drop_connect(backend)
    assert rows and not failing(rows), describe(failing(rows))


@pytest.mark.parametrize(
    "mutant", [mutants.INFERENCE_UPDATES_STATS, mutants.ALWAYS_TRAINING], ids=lambda m: m.name
)
def test_inference_that_trains_is_caught(monkeypatch, mutant):
    """The inference check compared the logits only: a forward that updated the moving
    statistics, or ``loss_and_grads(training=False)`` in training mode (fine-tuning with frozen
    batch norms that train), passed. The inference rows now check its gradients and that the
    moving statistics stay as they were."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    bad = failing(check_network(mutant))
    assert bad and all(" inference" in r.config for r in bad), describe(bad)
    stats = [r for r in bad if r.check == "network moving stats"]
    assert stats and "no batch statistics, no update" in stats[0].detail, describe(bad)
    # Seen at the first BN, far outside the tolerance: the probe on twice the images moves the
    # statistics away from the calibrated ones (on the images alone only block6d_project moved).
    assert stats[0].layer == "stem_bn" and stats[0].error > 100 * stats[0].tolerance, describe(bad)
    if mutant is mutants.ALWAYS_TRAINING:
        assert {"network loss", "network gradients"} <= {r.check for r in bad}, describe(bad)


def test_top_activation_is_traced_to_the_top_of_kefficientnet_only():
    rows = check_network(mutants.TOP_ACTIVATION)
    bad = [r for r in failing(rows) if r.check == "network logits"]
    assert bad and all(r.layer == "top" and r.config.startswith("kefficientnet") for r in bad), (
        describe(bad)
    )
    assert not failing([r for r in rows if r.config.startswith("efficientnet")])


def test_float16_accumulation_is_caught():
    bad = failing(check_kpointwise(mutants.FLOAT16))
    assert {"kpointwise forward", "kpointwise backward"} <= {r.check for r in bad}, describe(bad)


@pytest.mark.parametrize(
    "mutant", [mutants.ALIASED_EXPORT, mutants.TRAINED_IN_PLACE], ids=lambda m: m.name
)
def test_exports_that_view_the_models_memory_are_caught(mutant):
    rows = check_params(mutant)
    bad = failing(rows)
    assert bad and {r.check for r in bad} == {"param export is a copy"}, describe(bad)
    assert not failing(check_params(get("numpy")))


def test_a_report_with_an_error_row_has_not_passed_and_the_reference_runs_its_golden_files():
    from gpconv.conformance.results import CheckResult
    from gpconv.conformance.runner import Report

    row = CheckResult("x", "interleave order", "interleave", "C=12 G=3", np.inf, 0.0, "error")
    assert Report(rows=[row]).passed is False
    assert Report(rows=[replace(row, status="pass", error=0.0)]).passed is True
    rows = run(["numpy"]).rows
    assert any(r.check.startswith("golden") and r.passed for r in rows), {r.check for r in rows}


def test_a_parameter_count_off_by_one_and_a_stray_exported_name_fail():
    """Neither had a test: a checker passing counts within 1, or ignoring names the backend
    exports beyond the reference's, went unnoticed."""

    class OneTooMany(NumpyBackend):
        name = "one-too-many"

        def param_count(self, model):
            trainable, non_trainable = super().param_count(model)
            return trainable + 1, non_trainable

    class Stray(NumpyBackend):
        name = "stray"

        def export_params(self, model):
            return {**super().export_params(model), "stray/kernel": np.zeros(2, np.float32)}

    counts = [r for r in check_params(OneTooMany()) if r.check == "param count"]
    assert counts and all(r.status == "fail" and r.error == 1.0 for r in counts), describe(counts)
    trips = [r for r in check_params(Stray()) if r.check == "param round trip"]
    assert trips and all(r.status == "fail" for r in trips), describe(trips)
    assert all("names differ: ['stray/kernel']" in r.detail for r in trips), describe(trips)


def test_golden_files_verify_and_match_the_live_reference(tmp_path):
    rows = golden.check_golden(get("numpy"))
    assert len(rows) == 8 and not failing(rows), describe(failing(rows))
    manifest = json.loads((golden.GOLDEN_DIR / golden.MANIFEST).read_text())
    # Small enough to ship in the wheel (5.0 MB since the training moving statistics' starting
    # values are stored too).
    assert sum(f["bytes"] for f in manifest["files"].values()) < 6_000_000
    # Regenerating gives the same numbers to the float64 golden tolerance (1e-9): the files are
    # the reference, up to summation-order round-off.
    golden.generate(tmp_path)
    for name in manifest["files"]:
        committed, _ = golden.load(name)
        fresh, _ = golden.load(name, tmp_path)
        assert committed.keys() == fresh.keys(), name
        for k in committed:
            np.testing.assert_allclose(
                fresh[k], committed[k], rtol=1e-9, atol=1e-12, err_msg=f"{name}:{k}"
            )


def test_tampered_golden_file_is_detected(tmp_path):
    shutil.copytree(golden.GOLDEN_DIR, tmp_path / "g")
    path = tmp_path / "g" / "kpointwise.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    rows = golden.check_golden(get("numpy"), tmp_path / "g")
    bad = failing(rows)
    assert len(bad) == 1 and bad[0].status == "error" and bad[0].layer == "kpointwise.safetensors"
    assert "was modified: sha256" in bad[0].detail and str(path) in bad[0].detail


def test_a_golden_file_replaced_after_its_hash_check_is_not_loaded(tmp_path, monkeypatch):
    """``golden.load`` hashed the file, then opened it twice more for its metadata and tensors:
    a file replaced after the first open was loaded, unverified."""
    import io
    import os

    from safetensors.numpy import save_file

    shutil.copytree(golden.GOLDEN_DIR, tmp_path / "g")
    path = tmp_path / "g" / "interleave.safetensors"
    original, metadata = golden.load(path.name, tmp_path / "g")
    real_open = io.open

    def replaced_once_opened(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        if os.fspath(file) == str(path):  # the first open: replace the file behind it
            monkeypatch.setattr(io, "open", real_open)
            other = tmp_path / "other.safetensors"
            save_file({k: v + 1 for k, v in original.items()}, str(other), {"tampered": "1"})
            os.replace(other, path)
        return handle

    monkeypatch.setattr(io, "open", replaced_once_opened)
    tensors, loaded_metadata = golden.load(path.name, tmp_path / "g")
    assert loaded_metadata == metadata, f"golden.load read the metadata {loaded_metadata}"
    for k, v in original.items():
        assert np.array_equal(tensors[k], v), f"golden.load loaded the replacement's {k!r}"


def test_golden_kpointwise_file_with_cases_missing_is_an_error(tmp_path):
    from safetensors.numpy import save_file

    shutil.copytree(golden.GOLDEN_DIR, tmp_path / "g")
    tensors, metadata = golden.load("kpointwise.safetensors")
    dropped = sorted(metadata)[0]
    path = tmp_path / "g" / "kpointwise.safetensors"
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith(f"{dropped}/")},
        str(path),
        metadata={k: v for k, v in metadata.items() if k != dropped},
    )
    manifest_path = tmp_path / "g" / golden.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][path.name] = {"sha256": golden._sha256(path), "bytes": path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest))
    bad = failing(golden.check_golden(get("numpy"), tmp_path / "g"))
    assert len(bad) == 1 and bad[0].status == "error", describe(bad)
    assert f"missing ['{dropped}']" in bad[0].detail


def test_missing_golden_file_is_named(tmp_path):
    shutil.copytree(golden.GOLDEN_DIR, tmp_path / "g")
    (tmp_path / "g" / "network.safetensors").unlink()
    bad = failing(golden.check_golden(get("numpy"), tmp_path / "g"))
    assert (
        len(bad) == 1
        and "golden file missing" in bad[0].detail
        and "network.safetensors" in bad[0].detail
    )
    with pytest.raises(golden.GoldenError, match="manifest missing"):
        golden.load("network.safetensors", tmp_path)


@pytest.mark.parametrize(
    "manifest, fragment",
    [
        (b"\xff not json", "is no JSON"),
        (b"[]", "not listed with its sha256"),
        (b'{"files": {"network.safetensors": {"bytes": 1}}}', "not listed with its sha256"),
    ],
    ids=["garbage", "list", "no-sha256"],
)
def test_a_corrupt_golden_manifest_is_named(tmp_path, manifest, fragment):
    """These were rows reading "UnicodeDecodeError: ...", "AttributeError: 'list' object ..."
    and "KeyError: 'sha256'", which named neither the manifest nor the fault."""
    (tmp_path / golden.MANIFEST).write_bytes(manifest)
    shutil.copy(golden.GOLDEN_DIR / "network.safetensors", tmp_path)
    with pytest.raises(golden.GoldenError, match=fragment) as err:
        golden.load("network.safetensors", tmp_path)
    assert str(tmp_path / golden.MANIFEST) in str(err.value)


def test_runner_reports_a_missing_backend_as_not_installed(monkeypatch):
    """In the default run (every registered backend) a missing framework is listed, fails
    nothing, and the JSON agrees with itself: the row neither passed nor failed."""
    cupy = get("cupy")
    monkeypatch.setattr(type(cupy), "is_available", lambda self: False)
    monkeypatch.setattr(runner, "default_backends", lambda: ["cupy"])
    report = run()
    assert report.passed and report.rows[0].status == "not installed"
    assert "pip install 'gpconv[cupy]'" in report.rows[0].detail
    data = json.loads(json.dumps(report.to_dict()))
    assert data["backends"]["cupy"]["status"] == "not installed"
    assert [r["passed"] for r in data["results"]] == [None]
    assert data["passed"] is True


def test_runner_refuses_a_requested_backend_that_is_not_installed(monkeypatch):
    """Asked for by name, a missing framework is an error, not a pass of no checks."""
    cupy = get("cupy")
    monkeypatch.setattr(type(cupy), "is_available", lambda self: False)
    with pytest.raises(ImportError, match=r"backend 'cupy' .*pip install 'gpconv\[cupy\]'"):
        run(["cupy"])


@pytest.mark.parametrize(
    "late, error",
    [("typo.mod:X", ImportError), ("gpconv.conformance.mutants:NOPE", AttributeError),
     ("nosuch", ValueError), ("cupy", ImportError)],
)  # fmt: skip
def test_runner_resolves_every_backend_before_checking_any(monkeypatch, late, error):
    """A bad last --backend is reported at once, not after the minutes of the first's checks."""
    monkeypatch.setattr(type(get("cupy")), "is_available", lambda self: False)
    ran = []
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: ran.append("selfcheck") or [])
    monkeypatch.setattr(runner, "check_golden", lambda *a: ran.append("golden") or [])
    with pytest.raises(error) as raised:
        run(["numpy", late])
    assert ran == []
    assert late.split(":")[-1] in str(raised.value)  # the message names what was asked for


def test_only_the_registered_reference_checks_itself(monkeypatch, tmp_path):
    """An adapter that merely calls itself "numpy" (a subclass of the reference that kept its
    name) used to get the reference's self-check instead of the comparisons, and pass."""
    (tmp_path / "lookalike.py").write_text(
        "from gpconv.conformance.mutants import INTERLEAVE_TRANSPOSED as M\n"
        "X = type(M)('numpy', M._patches)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = []
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: ran.append("selfcheck") or [])
    monkeypatch.setattr(runner, "run_backend_checks", lambda b, *a: ran.append(b.name) or [])
    monkeypatch.setattr(runner, "check_golden", lambda *a: [])
    run(["lookalike:X"])
    assert ran == ["numpy"]  # compared with the reference, not self-checked
    ran.clear()
    run(["numpy", "numpy"])  # the same backend twice is checked once
    assert ran == ["selfcheck"]
    with pytest.raises(ValueError, match="distinct names.*'numpy' and 'lookalike:X'"):
        run(["numpy", "lookalike:X"])  # two rows named numpy would merge


INTERFACE = ("build", "load_params", "export_params", "forward", "loss_and_grads",
             "kpointwise", "interleave", "param_count")  # fmt: skip


def test_an_unavailable_backend_refuses_every_entry_point(monkeypatch):
    """``get()`` hands out adapters of missing frameworks (for the report); using one must fail
    at once with the pip command, not build a NumPy model (cupy inherits the reference's) or
    fail later with a bare ModuleNotFoundError."""
    for name in ("cupy", "torch", "tensorflow"):
        monkeypatch.setattr(type(get(name)), "is_available", lambda self: False)
    arch = core_arch.kefficientnet("b0", 10, 16, skip_stride_cnt=3)
    for name in ("cupy", "torch", "tensorflow"):
        backend = get(name)
        with pytest.raises(
            ImportError, match=rf"backend '{name}' .*pip install 'gpconv\[{name}\]'"
        ):
            backend.build(arch)
        for method in INTERFACE:  # the check comes before the arguments are looked at
            with pytest.raises(ImportError, match=f"backend '{name}'"):
                getattr(backend, method)()


def test_a_backend_missing_its_module_says_so_before_not_implemented():
    class Partial(Backend):
        name, requires, extra = "partial", ("no_such_module_for_gpconv",), "partial"

        def build(self, arch):
            return "built"

    with pytest.raises(
        ImportError, match=r"cannot import no_such_module_for_gpconv\): pip install"
    ):
        Partial().build(None)
    with pytest.raises(ImportError, match="backend 'partial'"):
        Partial().forward(None, None)  # not implemented, but the missing module comes first
    assert type(Partial()).build.__name__ == "build"


def test_reference_model_repr_is_short_and_names_the_model():
    # The dataclass repr used to print every parameter array (~660k characters for B0).
    model = get("numpy").build(core_arch.kefficientnet("b0", 10))
    text = repr(model)
    assert len(text) < 200, f"repr(ReferenceModel) is {len(text):,} characters: {text[:120]}..."
    n = len(model.params)
    for fragment in ("kefficientnet-b0-16ch", f"{n} arrays", "float64"):
        assert fragment in text, (
            f"repr(ReferenceModel) = {text!r}, which does not mention {fragment!r}"
        )


def test_reference_param_count_is_counted_from_the_model_not_the_architecture():
    # It returned arch.param_count(), which the param-count check compares it with: a tautology
    # for the numpy and cupy backends.
    backend = get("numpy")
    model = backend.build(core_arch.kefficientnet("b0", 10))
    assert backend.param_count(model) == (639_702, 45_632)
    del model.params["predictions/bias"]
    assert backend.param_count(model) == (639_692, 45_632)


def test_the_reference_backend_refuses_integer_images_like_the_framework_ones():
    """It used to cast 0-255 uint8 images to float64 silently, where torch and TF refuse them."""
    backend = get("numpy")
    arch = core_arch.by_name("kefficientnet-b0", num_classes=3, skip_stride_cnt=3)
    model = backend.build(arch)
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="floating images, received x.dtype=uint8"):
        backend.forward(model, images)
    with pytest.raises(TypeError, match="floating images"):
        backend.loss_and_grads(model, images, np.array([0]))
    with pytest.raises(TypeError, match="integer labels"):
        backend.loss_and_grads(model, images.astype(np.float32), np.array([0.0]))


def test_a_gradient_zero_in_exact_arithmetic_passes_at_float32_round_off():
    """Drawn by hypothesis on an H100 (CuPy, core kPointwise in float32): conv/bias before a
    training-mode BN has gradient 0, and a batch of 4 pixels left float32 round-off of 3.8e-6
    there, which the old floor (1e-3 of the largest gradient norm) called a failure. The same
    numbers through NumPy in float32 must pass every row."""
    from gpconv.core.pointwise import KPointwise, KPointwiseSpec

    a = np.array
    spec = KPointwiseSpec(2, 2, 2, bn=True, activation="swish", bias=True)
    params = {
        "conv/kernel": a([[[[-0.46088594, -0.12354378]]]]),
        "conv/bias": a([0.14825712, -0.18296041]),
        "bn/gamma": a([0.99938381, 0.82158881]),
        "bn/beta": a([0.07758719, -0.211806]),
        "bn/moving_mean": a([-0.03436944, 0.02101729]),
        "bn/moving_variance": a([1.41170526, 0.89392292]),
        "conv2/kernel": a([[[[0.22390184, 0.361011]]]]),
        "conv2/bias": a([0.01787134, 0.10068568]),
        "bn2/gamma": a([1.19183695, 0.80402911]),
        "bn2/beta": a([-0.07977957, -0.02033325]),
        "bn2/moving_mean": a([0.07479598, 0.08509673]),
        "bn2/moving_variance": a([0.57463181, 0.29755825]),
    }
    x = a([[[[-0.79782289, -0.58423823], [-0.23792338, -0.13181505],
             [2.05811453, -0.50640368], [-0.28872436, 0.45857772]]]])  # fmt: skip
    dy = a([[[[-0.95307404, -0.36862716], [0.01331848, 0.77414596],
              [-1.31601489, 1.3714695], [-0.35245737, 0.16941643]]]])  # fmt: skip
    y, cache = KPointwise.forward(spec, params, x, training=True)
    dx, grads = KPointwise.backward(cache, dy)
    assert np.linalg.norm(grads["conv/bias"]) < 1e-12, "the case is a zero gradient"
    ref = {"spec": spec, "params": params, "x": x, "dy": dy, "y": y, "dx": dx, "grads": grads,
           "moving_stats": cache["moving_stats"], "training": True}  # fmt: skip
    rows = compare_kpointwise(Float32Numpy(), ref)
    assert [r for r in rows if r.status != "pass"] == []


# --- what a third-party adapter sees (docs/adding-a-backend.md) -------------------------------


class _NCHW(NumpyBackend):
    """An adapter that hands back channels-first arrays: the commonest slip of a torch port."""

    name = "nchw"

    def kpointwise(self, *a, **k):
        out = super().kpointwise(*a, **k)
        return {**out, "y": np.moveaxis(out["y"], -1, 1)}


def test_an_unimplemented_method_is_named_in_its_row():
    # The row read "NotImplementedError: " and nothing else.
    class Half(Backend):
        name, requires = "half", ("numpy",)

    rows = run_backend_checks_rows(Half(), only=("interleave",))
    assert [r.status for r in rows] == ["error"], describe(rows)
    assert "Half.interleave() is not implemented" in rows[0].detail, describe(rows)


def run_backend_checks_rows(backend, only):
    from gpconv.conformance.checks import run_backend_checks

    return list(run_backend_checks(backend, only=only))


def test_a_backend_class_instead_of_an_instance_is_named(monkeypatch, tmp_path):
    # `--backend mod:MyBackend` said "... received type".
    (tmp_path / "classonly.py").write_text(
        "from gpconv.backends.numpy_reference import NumpyBackend\n"
        "class MyBackend(NumpyBackend):\n    name = 'mine'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    message = r"received the class MyBackend: .*BACKEND = MyBackend\(\)"
    with pytest.raises(ValueError, match=message):
        runner.resolve("classonly:MyBackend")


def test_a_nameless_backend_is_refused_before_any_check(monkeypatch, tmp_path):
    # Its rows had an empty backend column, and could not be joined to its report entry.
    (tmp_path / "nameless.py").write_text(
        "from gpconv.backends.numpy_reference import NumpyBackend\n"
        "class Nameless(NumpyBackend):\n    name = ''\n"
        "BACKEND = Nameless()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"nameless:BACKEND to have a name .*received name=''"):
        runner.resolve("nameless:BACKEND")


def test_the_interleave_check_is_immune_to_a_backend_writing_into_its_input():
    """The reference was computed after the backend's call, from the same array: a backend
    that zeroed its input and returned it passed, one that shuffled in place (out= style,
    correct) failed with a wrong hint."""

    class ZeroesInput(NumpyBackend):
        name = "zeroes-input"

        def interleave(self, x, groups):
            x[...] = 0
            return x

    class ShufflesInPlace(NumpyBackend):
        name = "shuffles-in-place"

        def interleave(self, x, groups):
            x[...] = np.asarray(super().interleave(x, groups)).copy()
            return x

    class ZeroesIdentityCases(NumpyBackend):
        # For G == 1 and G == C the interleave is the identity, and the reference may be a
        # NumPy view of x: the backend must get a copy even there.
        name = "zeroes-identity-cases"

        def interleave(self, x, groups):
            if groups in (1, x.shape[-1]):
                x[...] = 0
                return x
            return super().interleave(x, groups)

    assert any(g in (1, c) for c, g in cases.INTERLEAVE_CASES)
    assert [r.status for r in check_interleave(ZeroesInput())] == ["fail"]
    assert [r.status for r in check_interleave(ZeroesIdentityCases())] == ["fail"]
    assert [r.status for r in check_interleave(ShufflesInPlace())] == ["pass"]


def test_a_string_for_an_array_is_an_error_naming_the_method():
    # np.asarray took the string as a 0-d array; the row read "could not convert string to float".
    class Words(NumpyBackend):
        name = "words"

        def interleave(self, x, groups):
            return "not an array"

    rows = run_backend_checks_rows(Words(), only=("interleave",))
    assert [r.status for r in rows] == ["error"], describe(rows)
    assert "Words.interleave() to return numeric arrays" in rows[0].detail, describe(rows)
    # like every error row, it names the layer and the configuration (it read "layer -" and none)
    assert (rows[0].layer, rows[0].config) == ("interleave", "C=12 G=3"), describe(rows)


def test_a_crashing_kpointwise_names_the_mode_of_each_row():
    # Both modes of a configuration gave two identical rows.
    class Crashes(NumpyBackend):
        name = "crashes"

        def kpointwise(self, *a, **k):
            raise RuntimeError("boom")

    rows = check_kpointwise(Crashes())
    configs = [r.config for r in rows]
    assert len(set(configs)) == len(configs) == 2 * len(cases.KPOINTWISE_QUICK), configs
    assert configs[0].endswith("training=False") and configs[1].endswith("training=True")


def test_a_wrong_return_value_is_an_error_naming_the_method():
    # These were "KeyError: 'moving_stats'" and "TypeError: 'int' object is not iterable".
    class Wrong(NumpyBackend):
        name = "wrong"

        def kpointwise(self, *a, **k):
            out = super().kpointwise(*a, **k)
            del out["moving_stats"]
            return out

        def param_count(self, model):
            return sum(super().param_count(model))

    rows = check_kpointwise(Wrong())
    assert rows and all(r.status == "error" for r in rows), describe(rows)
    assert (
        "Wrong.kpointwise() to return a dict with keys ['y', 'dx', 'grads', 'moving_stats']"
        in (rows[0].detail)
        and "without ['moving_stats']" in rows[0].detail
    ), describe(rows)
    rows = check_params(Wrong())
    assert all(r.status == "error" for r in rows), describe(rows)
    assert "Wrong.param_count() to return (trainable, non_trainable) integers, received 685334" in (
        rows[0].detail  # 639,702 + 45,632: kEffNet-B0 16ch, 10 classes (DESIGN.md §1)
    ), describe(rows)


def test_a_method_returning_none_is_an_error_naming_it():
    # An adapter whose interleave body was left as ``...`` failed as "shape () vs reference
    # (2, 3, 3, 12)"; logits of None failed as the network diverging at "logits".
    class Unfinished(NumpyBackend):
        name = "unfinished"

        def interleave(self, x, groups):
            return None

        def forward(self, model, x, training=False):
            return {"logits": None}

    rows = run_backend_checks_rows(Unfinished(), only=("interleave", "network"))
    details = {r.check: r.detail for r in rows if r.status == "error"}
    assert (
        "Unfinished.interleave() to return an (N, H, W, C) array, received None"
        in (details["interleave order"])  # the check's name in its passing row too
    ), describe(rows)
    assert (
        "Unfinished.forward() to return arrays for ['logits'], received None"
        in (details["network"])
    ), describe(rows)


def test_channels_first_outputs_are_named_and_blamed_on_no_trap():
    # A (N, C, H, W) output was reported as a shape mismatch "likely" caused by the residual or
    # BN epsilon.
    bad = failing(check_kpointwise(_NCHW()))
    assert bad and {r.check for r in bad} == {"kpointwise forward"}, describe(bad)
    for row in bad:
        assert "channels-first" in row.detail and "likely trap" not in row.detail, describe([row])


def test_kpointwise_failures_name_only_the_traps_that_fit_the_layer():
    # Every row blamed "the residual adds the non-interleaved y1; BN epsilon 1e-3", also for a
    # plain 1x1 conv (G=1), which has neither a residual nor an interleave.
    bad = failing(check_kpointwise(mutants.BN_EPS_1E5))
    plain = [r for r in bad if r.check == "kpointwise forward" and "G=1 " in r.config]
    assert plain, describe(bad)
    for row in plain:
        assert "epsilon" in row.detail, describe([row])
        assert "residual" not in row.detail and "interleave" not in row.detail, describe([row])
    bad = failing(check_kpointwise(mutants.RESIDUAL_ON_INTERLEAVED))
    assert all("non-interleaved y1" in r.detail for r in bad if r.check == "kpointwise forward")


def test_trap_hints_fit_the_layer_and_the_mode():
    """A second conv without an interleave adds z = y1: no residual trap to name. Dropout
    applied whatever the mode fits a dropping block only in inference (in training it is
    expected)."""
    from gpconv.conformance.traps import TRAPS, _layer_traps, layer_traps

    spec = KPointwiseSpec(16, 4, 4)  # one channel per group: nothing to interleave
    assert spec.has_second_conv and not spec.interleaves
    assert TRAPS["residual"] not in _layer_traps(spec)
    assert TRAPS["residual"] in _layer_traps(KPointwiseSpec(32, 8, 2))
    arch = core_arch.kefficientnet("b0", 10, 16, 3)
    block = next(b for b in arch.blocks if b.residual and b.drop_rate > 0)
    assert TRAPS["training only"] in layer_traps(arch, block.name, training=False)
    assert TRAPS["training only"] not in layer_traps(arch, block.name, training=True)
    assert TRAPS["training only"] not in layer_traps(arch, "logits", training=True)


def test_kpointwise_moving_stats_of_a_diverged_forward_are_not_blamed_on_momentum():
    # A transposed interleave changes the second BN's input, and its statistics were blamed on
    # Keras's momentum and biased variance.
    bad = [r for r in failing(check_kpointwise(mutants.INTERLEAVE_TRANSPOSED))]
    stats = [r for r in bad if r.check == "bn moving stats"]
    assert stats, describe(bad)
    for row in stats:
        assert "forward pass diverges first" in row.detail and "momentum" not in row.detail


def _symmetric_stride2_padding():
    from gpconv.core.ops import conv

    original = conv.pad_amounts

    def pad_amounts(size, kernel, stride, padding):
        # torchvision's port: padding=k//2 on stride-2 convs; the stride-1 stem of a
        # skip_stride_cnt network keeps Keras's padding, so the stem stays right.
        if padding == "correct" and stride == 2:
            return (kernel // 2, kernel // 2)
        return original(size, kernel, stride, padding)

    return [(conv, "pad_amounts", pad_amounts)]


def test_symmetric_stride2_depthwise_padding_is_named_at_its_block(monkeypatch):
    # 32x32 with skip_stride_cnt=3: block4a sees 31x31 (odd: both paddings agree); block6a sees
    # 16x16 (even: correct_pad (1, 2) vs symmetric (2, 2) for k=5). It was traced to block6a with
    # no trap named. (At 96x96 the stem strides too, and diverges first.)
    monkeypatch.setattr(
        cases, "NETWORKS_QUICK", tuple(n for n in cases.NETWORKS_QUICK if n.size == 32)
    )
    m = mutants.MutantBackend("mutant-stride2-symmetric", _symmetric_stride2_padding)
    logits = [r for r in failing(check_network(m)) if r.check == "network logits"]
    assert logits and all(r.layer == "block6a" for r in logits), describe(logits)
    assert all("correct_pad" in r.detail for r in logits), describe(logits)


def test_symmetric_3x3_depthwise_padding_is_caught_at_even_sizes(monkeypatch):
    """Symmetric padding in the stride-2 3x3 depthwise convs only passed (error 3e-14): at
    32x32 with skip 3 the one such block that strides (block4a) sees 31x31, and for k=3 on an
    odd size correct_pad is (1, 1). The 96x96 network without skipped strides pads 48x48 at
    block2a, (0, 1) against (1, 1)."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", (cases.EVEN_STRIDES,))
    rows = check_network(mutants.SYMMETRIC_DEPTHWISE_3X3)
    logits = [r for r in failing(rows) if r.check == "network logits"]
    assert [r.layer for r in logits] == ["block2a"], describe(rows)
    assert "96x96 skip=-1" in logits[0].config, describe(logits)
    assert "likely trap: stride-2 depthwise: TF 'correct_pad'" in logits[0].detail, describe(logits)


# The golden network in inference only: its case is the one earlier tests cached.
INFERENCE_ONLY = (replace(cases.NETWORKS_QUICK[0], modes=(False,)),)
INFERENCE_TRAP = "likely trap: inference (training=False) normalises with the moving statistics"


def test_depthwise_bn_with_batch_statistics_in_inference_is_caught(monkeypatch):
    """A depthwise BN normalising with the batch's statistics in inference passed the logits of
    EfficientNet-B0, and failed kEffNet-B0's at block7a blaming the interleave: the moving
    statistics are calibrated to the batch statistics of the case's images. On the first image
    twice over (another batch) it gives other logits than for that image in the case's batch:
    both rows now name the trap."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    rows = check_network(mutants.DEPTHWISE_BN_BATCH_STATISTICS)
    logits = {r.check: r for r in rows if r.check.startswith("network logits")}
    alone = logits["network logits per image"]
    assert not alone.passed and alone.layer == "block1a", describe(rows)
    assert alone.config.endswith("inference (image 0 twice)"), describe([alone])
    assert not logits["network logits"].passed, describe(rows)
    assert all(INFERENCE_TRAP in r.detail for r in logits.values()), describe(rows)


def test_loss_rows_after_logits_right_only_for_their_own_batch_name_the_inference_trap(
    monkeypatch,
):
    """EfficientNet-B0's logits pass with a depthwise BN on batch statistics (the case's images
    are the ones its moving statistics are calibrated to) while the per-image row fails: its
    failing gradient row then names the inference trap, not a diverged forward pass that the
    logits row contradicts."""
    (eff,) = [n for n in cases.NETWORKS_QUICK if n.model == "efficientnet-b0"]
    monkeypatch.setattr(cases, "NETWORKS_QUICK", (replace(eff, modes=(False,)),))
    rows = {r.check: r for r in check_network(mutants.DEPTHWISE_BN_BATCH_STATISTICS)}
    assert rows["network logits"].passed and not rows["network logits per image"].passed
    assert not rows["network gradients"].passed, describe(rows.values())
    for row in (r for r in rows.values() if r.check in ("network loss", "network gradients")):
        assert row.passed or INFERENCE_TRAP in row.detail, describe([row])
        assert "diverges first" not in row.detail, describe([row])


def test_drop_connect_in_inference_is_caught_and_named(monkeypatch):
    """Drop-connect applied with training=False was traced to block2b (B0's first block that
    drops) blaming kEffNet's interleave and residual (EfficientNet's: no trap)."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    bad = failing(check_network(mutants.DROP_CONNECT_IN_INFERENCE))
    logits = [r for r in bad if r.check == "network logits"]
    assert [r.layer for r in logits] == ["block2b"], describe(bad)
    assert "drop-connect and the head's dropout act in training only" in logits[0].detail


@pytest.mark.parametrize(
    ("mutant", "layer", "named"),
    [
        (mutants.SQUEEZE_BY_MAX, "block1a", "the squeeze a global average pool (not max)"),
        (mutants.TOP_BN_EPS_1E5, "top", "BN epsilon 1e-3 (not 1e-5)"),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_squeeze_excite_and_top_epsilon_traps_are_named(monkeypatch, mutant, layer, named):
    """Both were caught at their layer, the squeeze blamed on the interleave and residual, the
    top's epsilon on its activation."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    bad = failing(check_network(mutant))
    logits = [r for r in bad if r.check == "network logits"]
    assert [r.layer for r in logits] == [layer], describe(bad)
    assert named in logits[0].detail, describe(logits)


EPSILON_TRAPS = {
    "depthwise": "likely trap: the depthwise conv's BN epsilon 1e-3 (not 1e-5)",
    "kPointwise": "likely trap: the BNs inside kPointwise: BN epsilon 1e-3 (not 1e-5)",
    "block": "likely trap: every BN of the MBConv blocks (depthwise and kPointwise): BN epsilon",
}
EPSILON_MUTANTS = {
    "depthwise": mutants.DEPTHWISE_BN_EPS_1E5,
    "kPointwise": mutants.KPOINTWISE_BN_EPS_1E5,
    "block": mutants.BLOCK_BN_EPS_1E5,
}


@pytest.mark.parametrize("which", sorted(EPSILON_MUTANTS))
def test_a_bn_epsilon_of_one_layer_kind_is_named_at_its_block(monkeypatch, which):
    """PyTorch's BN epsilon 1e-5 in the depthwise BNs alone, or in kPointwise's alone (the
    stem's right), was traced to block1a blaming the interleave, the residual and the
    squeeze-excite, and its drop-connect branch row blamed drop-connect in a block without
    residual: a block's hint left epsilon out, as the stem's BN would diverge first if every BN
    had it. The reference's block with that epsilon in those BNs, on the backend's input to
    it, gives the backend's output: in inference (network logits) and in training
    (drop-connect branch) the rows name those BNs' epsilon, and not the other kind's."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    mutant = EPSILON_MUTANTS[which]
    bad = failing(check_network(mutant) + check_drop_connect(mutant))
    located = [r for r in bad if r.check.startswith(("network logits", "drop-connect branch"))]
    assert [(r.check, r.layer) for r in located] == [
        ("network logits", "block1a"),
        ("network logits per image", "block1a"),
        ("drop-connect branch", "block1a"),
    ], describe(bad)
    others = [t for k, t in EPSILON_TRAPS.items() if k != which]
    for row in located:
        assert f"its {which} BN epsilon 1e-5 gives it within" in row.detail, describe([row])
        assert EPSILON_TRAPS[which] in row.detail, describe([row])
        assert "interleave" not in row.detail and not any(t in row.detail for t in others)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("which", sorted(EPSILON_MUTANTS))
def test_epsilon_fits_that_epsilon_in_one_layer_kind_in_float32_too(which, training):
    """The symptom test behind the hint, on kEffNet-B0's block2a (an expanding kPointwise and a
    projecting one with a second conv and BN): the block with one kind's BN epsilon 1e-5 (or
    every BN's), rounded to float32, fits that kind; the right block fits none."""
    from gpconv.conformance.traps import epsilon_fits
    from gpconv.core import network

    ref = cases.network_case(INFERENCE_ONLY[0], False, 0)
    blocks = ref["arch"].blocks
    block, params = blocks[1], ref["params"]
    assert block.project.has_second_conv and block.expand is not None, block
    x = ref["intermediates"][blocks[0].name]
    right = network.block_forward(block, params, x, training)
    with EPSILON_MUTANTS[which]._broken():
        wrong = network.block_forward(block, params, x, training)
    with mutants.BN_EPS_1E5._broken():
        every_bn = network.block_forward(block, params, x, training)
    symptom, trap = epsilon_fits(block, params, x, wrong.astype(np.float32), training)
    assert f"{which} BN epsilon 1e-5" in symptom and EPSILON_TRAPS[which][13:] in trap
    assert epsilon_fits(block, params, x, right, training) == ("", "")
    symptom, trap = epsilon_fits(block, params, x, every_bn.astype(np.float32), training)
    assert "block BN epsilon 1e-5" in symptom and EPSILON_TRAPS["block"][13:] in trap


LOGITS_TRAP = "likely trap: forward returns logits (no softmax, no log-softmax, in either mode)"


@pytest.mark.parametrize(
    ("mutant", "training", "symptom", "failed"),
    [
        (
            mutants.SOFTMAX_IN_INFERENCE,
            False,
            "every row of the logits >= 0 and summing to 1",
            {"network logits", "network logits per image", "network loss", "network gradients"},
        ),
        (
            mutants.SOFTMAX_OUTPUT,
            True,
            "every row of the logits >= 0 and summing to 1",
            {"network logits", "network loss", "network gradients", "head dropout mask"},
        ),
        # The softmax cross-entropy of log-softmax outputs is that of the logits: the loss and
        # every gradient are right, only the logits are not.
        (
            mutants.LOG_SOFTMAX_OUTPUT,
            True,
            "the exp of every row of the logits summing to 1",
            {"network logits", "head dropout mask"},
        ),
    ],
    ids=["softmax-in-inference", "softmax-output", "log-softmax-output"],
)
def test_probabilities_returned_for_logits_are_named(
    monkeypatch, mutant, training, symptom, failed
):
    """A model ending in a softmax (Keras applications' default classifier_activation) was
    traced to its logits with no trap named in training, and in inference with "drop-connect
    and the head's dropout act in training only"; the head-dropout rows, which read the dropped
    features off the softmax gradient, blamed the head's dropout. Each now names the logits."""
    network = replace(cases.NETWORKS_QUICK[0], modes=(training,))
    monkeypatch.setattr(cases, "NETWORKS_QUICK", (network,))
    only = ("network", "head-dropout") if training else ("network",)
    rows = run_backend_checks_rows(mutant, only=only)
    bad = failing(rows)
    for row in (r for r in rows if r.passed):  # a symptom note only where the row fails
        assert "summing to 1" not in row.detail, describe([row])
    assert {r.check for r in bad} - {"head dropout rate"} == failed, describe(bad)
    named = [r for r in bad if r.check.startswith(("network logits", "head dropout"))]
    for row in named:
        assert symptom in row.detail and LOGITS_TRAP in row.detail, describe([row])
        assert "training only" not in row.detail and "head dropout:" not in row.detail
    # The loss and gradients of logits that diverged say so, rather than nothing.
    for row in (r for r in bad if r.check in ("network loss", "network gradients")):
        assert "the forward pass diverges first (network logits)" in row.detail, describe([row])


def test_returns_probabilities_names_what_the_rows_sum_to():
    from gpconv.conformance.traps import returns_probabilities

    z = np.random.default_rng(0).standard_normal((4, 10)) * 3
    log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    found = [returns_probabilities(v.astype(np.float32), z) for v in (np.exp(log_p), log_p, z)]
    assert found[0].endswith(": softmax probabilities"), found
    assert found[1].endswith(": log-softmax log-probabilities"), found
    assert found[2] == "", found
    # No symptom where the reference's logits are probabilities too, or a row is off.
    assert returns_probabilities(np.exp(log_p), np.exp(log_p)) == ""
    one_off = np.exp(log_p)
    one_off[0] *= 1.001
    assert returns_probabilities(one_off, z) == ""


def test_a_swish_with_a_beta_is_named_at_the_stem_and_in_kpointwise(monkeypatch):
    """Swish as x * sigmoid(1.5 x) was caught at the stem with a hint naming only its padding and
    BN epsilon, and in kPointwise layers with swish with one naming their interleave or none."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", INFERENCE_ONLY)
    bad = failing(check_network(mutants.SWISH_BETA))
    logits = [r for r in bad if r.check == "network logits"]
    assert [r.layer for r in logits] == ["stem"], describe(bad)
    assert "swish = x * sigmoid(x)" in logits[0].detail, describe(logits)
    rows = [r for r in check_kpointwise(mutants.SWISH_BETA) if r.check == "kpointwise forward"]
    failed = {r.config for r in rows if not r.passed}
    assert failed == {r.config for r in rows if "act=swish" in r.config}, describe(rows)
    for row in rows:
        assert ("swish = x * sigmoid(x)" in row.detail) == (not row.passed), describe([row])


def test_an_adapter_module_that_is_not_found_says_how_to_make_it_importable(monkeypatch, tmp_path):
    # `gpconv check --backend mypackage.adapter:BACKEND` run next to mypackage/ said only
    # "No module named 'mypackage'": the console script does not look in the current folder.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImportError, match=r"No module named 'nosuchpkg'\).*PYTHONPATH"):
        runner.resolve("nosuchpkg.adapter:BACKEND")
    # A dependency the adapter imports is the adapter's problem: no hint about its folder.
    (tmp_path / "needsdep.py").write_text("import nosuchdependency\nBACKEND = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"'nosuchdependency'\)$"):
        runner.resolve("needsdep:BACKEND")


# --- the error measures behind every verdict ---------------------------------------------------


def test_default_tolerances_are_design_section_4():
    """DESIGN.md §4, each just inside (passes) and just outside (fails): per layer
    ``|a - e| <= 1e-5 + 1e-4 |e|`` element-wise; logits ``max|Δ| <= 1e-3 max(1, max|e|)``;
    gradients ``||a - e|| / ||e|| <= 1e-3``."""

    def verdicts(measure, expected, off):
        """``(inside, outside)``: whether ``expected + 0.9 off`` and ``+ 1.1 off`` pass."""
        return measure(expected + 0.9 * off, expected).ok, measure(
            expected + 1.1 * off, expected
        ).ok

    e = np.array([0.0, 10.0, -200.0])
    for i in range(e.size):  # one element at a time: each has its own allowance
        off = (1e-5 + 1e-4 * np.abs(e)) * (np.arange(e.size) == i)
        got = verdicts(results.allclose, e, off)
        assert got == (True, False), f"allclose (inside, outside) = {got} [e={e[i]}]"
    for logits, scale in ((np.array([[0.2, -0.3]]), 1.0), (np.array([[0.5, -40.0]]), 40.0)):
        got = verdicts(results.scaled_max, logits, np.full(logits.shape, 1e-3 * scale))
        assert got == (True, False), f"scaled_max (inside, outside) = {got} [logits={logits}]"
    g = np.random.default_rng(0).standard_normal(50)
    off = np.random.default_rng(1).standard_normal(50)
    got = verdicts(results.relative_norm, g, off * 1e-3 * np.linalg.norm(g) / np.linalg.norm(off))
    assert got == (True, False), f"relative_norm (inside, outside) = {got} [||off|| = 1e-3 ||g||]"


def test_moving_stats_error_sees_an_unbiased_variance_the_values_hide():
    """With m = 200 values per channel, PyTorch's unbiased variance moves Keras's update
    ``r' = 0.99 r + 0.01 b`` by ``0.01 b / 199``, inside rtol 1e-4 on ``r'``; the batch statistic
    it implies, ``(r' - 0.99 r) / 0.01``, moves by ``b / 199``, which the check must see.
    float32 round-off of the right update must still pass."""
    x = np.random.default_rng(0).standard_normal((200, 4))
    previous = np.full(4, 0.5)  # away from the batch variance (~1)
    keras = 0.99 * previous + 0.01 * x.var(axis=0)
    unbiased = 0.99 * previous + 0.01 * x.var(axis=0, ddof=1)
    assert results.allclose(unbiased, keras).ok, "the values alone should not tell them apart"
    cmp = results.moving_stats_error(unbiased, keras, previous)
    assert not cmp.ok, f"unbiased running variance passed: {cmp}"
    assert results.moving_stats_error(keras.astype(np.float32), keras, previous).ok


def test_gradient_errors_judge_small_gradients_down_to_the_floor():
    """A missing gradient is infinitely wrong; a gradient 1e-4 the size of the largest with its
    sign flipped is wrong (it is measured against 1e-2 of the largest, not the largest); an
    error at float32 round-off of the largest (a gradient that is zero in exact arithmetic)
    passes."""
    big, small = np.ones(100), np.full(4, 1e-4 * 10 / 2)  # norms 10 and 1e-4 * 10
    expected = {"big": big, "small": small}
    missing = results.gradient_errors({"big": big}, expected)
    assert missing["big"].ok and missing["small"].error == float("inf"), (
        f"gradient_errors without 'small': {missing}, but 'small' should be infinitely wrong"
    )
    flipped = results.gradient_errors({"big": big, "small": -small}, expected)
    assert not flipped["small"].ok, f"a sign-flipped small gradient passed: {flipped['small']}"
    zero = {"big": big, "small": np.zeros(4)}
    roundoff = results.gradient_errors({"big": big, "small": np.full(4, 1e-7)}, zero)
    assert roundoff["small"].ok, f"round-off of ~2e-8 the largest gradient failed: {roundoff}"


class _Perturbed(NumpyBackend):
    """The float64 reference with one output slightly off, every other one exact:

    * ``kp dx`` / ``kp moving stats``: kPointwise ``dx`` or moving statistics times ``1 + 1e-6``
      (inside float32 tolerances, far outside the 1e-9 a float64 backend owes the golden files);
    * ``dense grad``: the network's ``predictions/kernel`` gradient reversed (its norm unchanged,
      its entries wrong: a layout slip);
    * ``dense grad norm``: the same gradient plus 1% of its norm orthogonal to the golden file's
      sketch direction (its projection on that direction unchanged, its norm not);
    * ``input dx``: the network's input gradient 1% off (every parameter gradient right);
    * ``export``: exported parameters 1e-6 off (a round trip that is not bit-exact);
    * ``inference logits`` / ``loss`` / ``golden dx``: that network output times ``1 + 1e-6``,
      and ``interleave``: ``+ 1e-7`` (a permutation, exact in any precision), each inside every
      float32 tolerance and far outside the float64 golden ones."""

    def __init__(self, what: str):
        self.what = what
        self.name = f"mutant-{what.replace(' ', '-')}"

    def forward(self, *a, **k):
        out = super().forward(*a, **k)
        if self.what == "inference logits" and not k.get("training", False):
            out = {**out, "logits": out["logits"] * (1 + 1e-6)}
        return out

    def interleave(self, x, groups):
        y = super().interleave(x, groups)
        return y + 1e-7 if self.what == "interleave" else y

    def kpointwise(self, *a, **k):
        out = super().kpointwise(*a, **k)
        if self.what == "kp dx":
            out["dx"] = out["dx"] * (1 + 1e-6)
        if self.what == "kp moving stats":
            out["moving_stats"] = {s: v * (1 + 1e-6) for s, v in out["moving_stats"].items()}
        return out

    def loss_and_grads(self, *a, **k):
        out = super().loss_and_grads(*a, **k)
        if self.what == "dense grad":
            g = out["grads"]["predictions/kernel"]
            out["grads"] = {**out["grads"], "predictions/kernel": g.ravel()[::-1].reshape(g.shape)}
        if self.what == "dense grad norm":
            g = np.asarray(out["grads"]["predictions/kernel"], np.float64)
            d = golden._direction(g.shape, "predictions/kernel")
            u = np.random.default_rng(0).standard_normal(g.shape)
            u -= np.sum(u * d) / np.sum(d * d) * d
            g = g + 0.01 * np.linalg.norm(g) * u / np.linalg.norm(u)
            out["grads"] = {**out["grads"], "predictions/kernel": g}
        if self.what == "input dx":
            out["dx"] = np.asarray(out["dx"]) * 1.01
        if self.what == "golden dx":
            out["dx"] = np.asarray(out["dx"]) * (1 + 1e-6)
        if self.what == "loss":
            out["loss"] = out["loss"] * (1 + 1e-6)
        return out

    def export_params(self, model):
        out = super().export_params(model)
        return {k: v * (1 + 1e-6) for k, v in out.items()} if self.what == "export" else out


@pytest.mark.parametrize(
    ("what", "layer"),
    [
        ("kp dx", "kpointwise"),
        ("kp moving stats", "kpointwise"),
        ("dense grad", "gradients"),
        ("dense grad norm", "gradients"),
        ("inference logits", "logits (inference)"),
        ("loss", "loss"),
        ("golden dx", "dx"),
        ("interleave", "interleave"),
    ],
)
def test_every_golden_comparison_can_fail(what, layer):
    bad = failing(golden.check_golden(_Perturbed(what)))
    assert bad and all(r.layer.startswith(layer) for r in bad), describe(bad)


class _Float32MovingVariance(Float32Numpy):
    """The float32 reference (float32 golden tolerances) whose exported moving variances are
    ``1 + 5e-5`` times the right ones."""

    name = "float32-moving-variance"

    def export_params(self, model):
        out = super().export_params(model)
        return {k: v * (1 + 5e-5) if k.endswith("moving_variance") else v for k, v in out.items()}


def test_golden_moving_statistics_are_judged_on_the_batch_statistic_they_imply():
    """Keras's update ``r' = 0.99 r + 0.01 b``: an ``r'`` off by 5e-5 relative is inside the
    1e-4 output tolerance but puts the implied batch statistic ``b = (r' - 0.99 r) / 0.01``
    off by ~100 x 5e-5 = 5e-3 relative, five times the 1e-3 it is allowed (results.
    moving_stats_error). The golden network's moving-statistics row must fail; every other
    golden row (computed before the export) passes in float32."""
    bad = failing(golden.check_golden(_Float32MovingVariance()))
    assert [r.layer.split(" (")[0] for r in bad] == ["moving stats"], describe(bad)


@pytest.mark.parametrize(
    ("what", "check", "failure"),
    [
        ("input dx", check_network, "network gradients input"),
        ("export", check_params, "param round trip"),
    ],
)
def test_the_input_gradient_and_the_exported_values_are_checked(monkeypatch, what, check, failure):
    """Nothing else depends on them: no parameter gradient on the input gradient, no output on
    an export. One network (the golden one, whose reference case earlier tests cached) suffices."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    bad = failing(check(_Perturbed(what)))
    assert bad and all(f"{r.check} {r.layer}".startswith(failure) for r in bad), describe(bad)


# --- implementations: gpconv check --impl --------------------------------------------------


class TwoImplBackend(NumpyBackend):
    """The reference with a choice of interleave: ``"good"`` (the default) or ``"transposed"``
    (a porting trap), to check that every implementation is checked under its own name."""

    name = "twoimpl"
    impls = ("good", "transposed")

    def __init__(self, impl: str = "good") -> None:
        self.impl = impl

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        from gpconv.core import deinterleave

        good = super().interleave(x, groups)
        return good if self.impl == "good" else deinterleave(np.asarray(x), groups)


TWO_IMPL = TwoImplBackend()


def test_each_implementation_is_checked_under_its_own_name(monkeypatch):
    monkeypatch.setattr(runner, "check_golden", lambda backend: [])  # not what is tested here
    spec = f"{__name__}:TWO_IMPL"
    selected = runner.select([spec, "numpy"], ["all"])
    assert [(n, b.name, b.impl, skip) for n, b, skip in selected] == [
        (spec, "twoimpl", "good", ""),
        (spec, "twoimpl[impl=transposed]", "transposed", ""),
        ("numpy", "numpy", "", ""),  # one implementation: checked as it is
    ]
    monkeypatch.setattr(runner, "run_backend_checks", lambda b, seed, full: check_interleave(b))
    report = run([spec], impls=["all"])
    verdicts = {r.backend: r.passed for r in report.rows}
    assert verdicts == {"twoimpl": True, "twoimpl[impl=transposed]": False}
    assert report.backends["twoimpl[impl=transposed]"]["impl"] == "transposed"
    text = format_report(report)
    assert f"reproduce: gpconv check --backend {spec} --impl transposed --quick" in text
    only_default = run([spec])
    assert only_default.passed and list(only_default.backends) == ["twoimpl"]


class MissingTwoImplBackend(TwoImplBackend):
    name = "missing2"
    requires = ("gpconv_no_such_module",)


MISSING_TWO_IMPL = MissingTwoImplBackend()


def test_a_backend_that_is_not_installed_is_listed_once_whatever_the_impls(monkeypatch):
    """``--impl all`` listed a missing framework once per implementation it would have."""
    spec = f"{__name__}:MISSING_TWO_IMPL"
    monkeypatch.setattr(runner, "default_backends", lambda: [spec, "numpy"])
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: [])
    monkeypatch.setattr(runner, "check_golden", lambda backend: [])
    report = run(None, impls=["all"])
    assert list(report.backends) == ["missing2", "numpy"]
    assert report.backends["missing2"]["status"] == runner.NOT_INSTALLED
    assert [r.backend for r in report.rows] == ["missing2"]


class OtherImplBackend(TwoImplBackend):
    name = "otherimpl"
    impls = ("fast", "slow")


OTHER_IMPL = OtherImplBackend("fast")


def test_a_default_backend_without_the_implementation_is_listed_as_not_checked(monkeypatch):
    """``gpconv check --impl X`` dropped every backend without an implementation X from the
    report without a word: a reader saw no torch row and could not tell why."""
    specs = [f"{__name__}:TWO_IMPL", f"{__name__}:OTHER_IMPL"]
    monkeypatch.setattr(runner, "default_backends", lambda: specs)
    monkeypatch.setattr(runner, "check_golden", lambda backend: [])
    monkeypatch.setattr(runner, "run_backend_checks", lambda b, seed, full: check_interleave(b))
    report = run(None, impls=["transposed"])
    assert list(report.backends) == ["twoimpl[impl=transposed]", "otherimpl"]
    skipped = report.backends["otherimpl"]
    assert skipped["status"] == "not checked" and "impl" not in skipped
    assert skipped["reason"] == (
        "backend 'otherimpl' has no implementation transposed (it has fast, slow)"
    )
    assert not report.passed  # the transposed interleave still fails; the skip fails nothing
    row = report.rows[-1].to_dict()
    assert (row["backend"], row["status"], row["passed"]) == ("otherimpl", "not checked", None)
    text = format_report(report)
    assert re.search(
        r"^otherimpl +- .* not checked — backend 'otherimpl' has no implem", text, re.M
    )
    assert run(None, impls=["good"]).passed  # checked: twoimpl's good; not checked: otherimpl


@pytest.mark.parametrize(
    "names, impls, message",
    [
        (["numpy"], ["matmul"], r"--impl all or an implementation .*none has a choice"),
        (
            [f"{__name__}:TWO_IMPL"],
            ["bogus"],
            r"twoimpl: good, transposed\), received --impl bogus",
        ),
        ([f"{__name__}:TWO_IMPL", "torch"], ["channels_last"], r"backend 'twoimpl' \(good, "),
    ],
    ids=["no-choice", "unknown", "named-backend-lacks-it"],
)
def test_an_implementation_that_cannot_be_checked_is_refused_before_any_check(
    monkeypatch, names, impls, message
):
    monkeypatch.setattr(runner, "run_selfcheck", lambda *a: pytest.fail("a check ran"))
    with pytest.raises(ValueError, match=message):
        run(names, impls=impls)


def test_with_impl_needs_no_framework_and_refuses_what_a_backend_lacks():
    assert get("torch").with_impl("matmul").name == "torch[impl=matmul]"  # torch not imported
    assert get("torch").with_impl("auto").name == "torch"
    with pytest.raises(ValueError, match=r"backend 'numpy' \(none: it has one implementation\)"):
        get("numpy").with_impl("matmul")


@pytest.mark.parametrize(
    "adapter, argument",
    [
        ("gpconv.backends.torch.adapter:TorchBackend", "impl"),
        ("gpconv.backends.tensorflow.adapter:TensorFlowBackend", "impl"),
        ("gpconv.backends.cupy.adapter:CupyBackend", "kpointwise_impl"),
    ],
)
def test_an_unknown_impl_is_refused_by_the_constructor(adapter, argument):
    """``TorchBackend("matmull")`` was accepted and failed only when a model was built (the
    TensorFlow adapter's too); none of these constructors needs its framework."""
    import importlib

    module, _, cls = adapter.partition(":")
    backend_class = getattr(importlib.import_module(module), cls)
    with pytest.raises(ValueError, match=rf"Expected {argument} of backend .*'matmull'"):
        backend_class("matmull")
    default = backend_class()
    assert default.impl == backend_class.impls[0]


def test_with_impl_keeps_a_name_set_by_the_constructor():
    """An adapter may name itself in ``__init__``: the class's name was "" there."""

    class Named(TwoImplBackend):
        name = ""

        def __init__(self, impl: str = "good") -> None:
            super().__init__(impl)
            self.name = "named"

    assert Named().with_impl("transposed").name == "named[impl=transposed]"
    assert Named().with_impl("good").name == "named"


def test_an_exception_inside_build_names_the_method():
    # The row read "RuntimeError: boom": nothing said that build() had failed.
    class Crashes(NumpyBackend):
        name = "crashes"

        def build(self, arch):
            raise RuntimeError("boom")

    rows = check_params(Crashes())
    assert rows and all(r.status == "error" for r in rows), describe(rows)
    assert all(r.detail == "Crashes.build() raised RuntimeError: boom" for r in rows), describe(
        rows
    )


class _NotNumpy:
    """What NumPy cannot read, like a torch tensor that requires grad."""

    def __array__(self, *args, **kwargs):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad")


def test_arrays_numpy_cannot_read_are_named_with_their_method_and_key():
    # Exports and gradients as torch tensors requiring grad failed with torch's own
    # RuntimeError, naming neither the method nor the parameter.
    class Tensors(NumpyBackend):
        name = "tensors"

        def export_params(self, model):
            return {k: _NotNumpy() for k in super().export_params(model)}

    rows = check_params(Tensors())
    assert rows and all(r.status == "error" for r in rows), describe(rows)
    assert rows[0].detail.startswith(
        "TypeError: Expected Tensors.export_params() to return NumPy-convertible arrays, "
        "received 'stem_conv/kernel': _NotNumpy (RuntimeError: Can't call numpy()"
    ), describe(rows)

    class Grads(NumpyBackend):
        name = "grads"

        def kpointwise(self, *args, **kwargs):
            out = super().kpointwise(*args, **kwargs)
            return {**out, "grads": {**out["grads"], "conv/kernel": _NotNumpy()}}

    rows = check_kpointwise(Grads())
    assert rows and all(r.status == "error" for r in rows), describe(rows)
    assert (
        "Grads.kpointwise() to return NumPy-convertible arrays, received grads['conv/kernel']"
        in (rows[0].detail)
    ), describe(rows)


def test_a_forward_without_an_intermediate_is_an_error_naming_it():
    # docs/adding-a-backend.md asks for every intermediate, but one left out passed: a
    # divergence there could not be located.
    class NoTop(NumpyBackend):
        name = "notop"

        def forward(self, model, x, training=False):
            out = super().forward(model, x, training)
            del out["top"]
            return out

    rows = [r for r in check_network(NoTop()) if r.status != "pass"]
    assert len(rows) == 2 and all(r.status == "error" for r in rows), describe(rows)
    assert all(
        "NoTop.forward() to return a dict with keys ['stem', <each block>, 'top', 'logits'], "
        "received one without ['top']" in r.detail
        for r in rows
    ), describe(rows)


def test_gradients_and_statistics_under_other_names_are_named_as_missing():
    # Gradients keyed by global (or framework) names failed as "shape () vs reference (24,)".
    class Renamed(NumpyBackend):
        name = "renamed"

        def kpointwise(self, *args, **kwargs):
            out = super().kpointwise(*args, **kwargs)
            grads = {f"block1a/{k}": v for k, v in out["grads"].items()}
            stats = {f"block1a/{k}": v for k, v in out["moving_stats"].items()}
            return {**out, "grads": grads, "moving_stats": stats}

    bad = failing(
        compare_kpointwise(Renamed(), cases.kpointwise_case(cases.KPOINTWISE_QUICK[0], True, 0))
    )
    assert [r.check for r in bad] == ["kpointwise backward", "bn moving stats"], describe(bad)
    received = "returned (received ['block1a/bn/beta', 'block1a/bn/gamma', 'block1a/conv/kernel'])"
    assert bad[0].detail.startswith("no 'bn/") and received in bad[0].detail, describe(bad)
    received = "returned (received ['block1a/bn/moving_mean', 'block1a/bn/moving_variance'])"
    assert bad[1].detail.startswith("no 'bn/moving_") and received in bad[1].detail, describe(bad)
    assert all("likely trap" not in r.detail for r in bad), describe(bad)


HEAD_DROPOUT_TRAP = "kept features scaled by 1 / (1 - rate)"


@pytest.mark.parametrize(
    "mutant",
    [mutants.HEAD_DROPOUT_PER_SAMPLE, mutants.HEAD_DROPOUT_UNSCALED, mutants.HEAD_DROPOUT_B7_RATE],
    ids=lambda m: m.name,
)
def test_head_dropout_that_draws_scales_or_rates_wrongly_is_caught(mutant):
    """The training checks run without the head's dropout and the drop-connect check with it at
    0, so a mask per sample, unscaled kept features or B7's rate for B0 passed every check. The
    head-dropout rows read the dropped-out features off the dense kernel's gradient."""
    bad = failing(run_backend_checks_rows(mutant, only=("head-dropout",)))
    assert bad and all(r.layer == "top_dropout" for r in bad), describe(bad)
    assert all(HEAD_DROPOUT_TRAP in r.detail for r in bad), describe(bad)
    if mutant is mutants.HEAD_DROPOUT_PER_SAMPLE:  # every feature kept, or every one dropped
        assert [r.check for r in bad] == ["head dropout rate"], describe(bad)
    else:  # kept features at 1 or at 1 / (1 - 0.5), not at 1 / (1 - 0.2)
        assert "features neither 0 (dropped) nor pooled / (1 - rate)" in bad[0].detail


def _head_dropout_at(rate_drawn: float) -> list:
    # The head's mask drawn at another rate, the kept features still scaled by 1 / (1 - rate).
    from gpconv.core import network

    drawn = network._dropout_mask

    def mask(xp, like, shape, rate, site, masks, rng):
        return drawn(
            xp, like, shape, rate_drawn if site == "top_dropout" else rate, site, masks, rng
        )

    return [(network, "_dropout_mask", mask)]


def test_head_dropout_dropping_too_few_features_is_caught():
    """Only too many dropped (B7's rate) was tested: a share test of |share - rate| that had
    lost its absolute value would have passed a backend dropping 2% instead of 20%."""
    few = mutants.MutantBackend("mutant-head-dropout-2pc", lambda: _head_dropout_at(0.02))
    bad = failing(run_backend_checks_rows(few, only=("head-dropout",)))
    assert [r.check for r in bad] == ["head dropout rate"], describe(bad)


def test_head_dropout_logits_that_are_not_the_gradients_features_are_caught():
    """Logits shifted by a constant leave the softmax, so the gradient, unchanged: only the
    'logits are h W + b' part of the mask row can see them."""

    class Shifted(NumpyBackend):
        name = "shifted-logits"

        def loss_and_grads(self, model, x, labels, training=True):
            out = super().loss_and_grads(model, x, labels, training=training)
            return {**out, "logits": np.asarray(out["logits"]) + 5.0}

    bad = failing(run_backend_checks_rows(Shifted(), only=("head-dropout",)))
    assert [r.check for r in bad] == ["head dropout mask"], describe(bad)
    assert "the logits are not h W + b" in bad[0].detail, describe(bad)


@pytest.mark.parametrize("name", ["numpy", "torch", "tensorflow"])
def test_head_dropout_of_the_backends_passes(name):
    from gpconv.conformance.runner import resolve

    backend = resolve(name)
    if not backend.is_available():
        pytest.skip(f"{name} is not installed")
    rows = run_backend_checks_rows(backend, only=("head-dropout",))
    assert [r.check for r in rows] == ["head dropout mask", "head dropout rate"], describe(rows)
    assert not failing(rows), describe(rows)


@pytest.mark.parametrize(
    ("mutant", "layer", "symptom"),
    [
        (mutants.DROP_CONNECT_IN_EVERY_BLOCK, "block2a", "no drop-connect here"),
        (mutants.DROP_CONNECT_LAST_RATE, "block6d", NEITHER),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_drop_connect_is_checked_in_every_block(monkeypatch, mutant, layer, symptom):
    """Only block2b, the first block that drops, was checked: drop-connect in a block without
    the residual (dropped with probability 1/32 per copy in block2a: caught in 40% of runs) and
    a schedule wrong at the last residual block passed. Every block is now checked on the
    backend's own input to it."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    bad = failing(run_backend_checks_rows(mutant, only=("drop-connect",)))
    branch = [r for r in bad if r.check == "drop-connect branch"]
    assert [r.layer for r in branch] == [layer], describe(bad)
    assert symptom in branch[0].detail, describe(bad)


def test_intermediates_are_checked_when_the_logits_agree(monkeypatch):
    """Intermediates were compared only to trace a failure: a forward returning the top's
    channels-first (an NCHW framework's tensor not permuted back) passed, and would have blamed
    the top for a divergence elsewhere. The inference logits row now checks every one."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    bad = failing(check_network(mutants.CHANNELS_FIRST_TOP))
    assert [(r.check, r.layer) for r in bad] == [("network logits", "top")], describe(bad)
    assert bad[0].config.endswith(" inference"), describe(bad)
    assert "the logits agree, but forward()'s 'top' is not the reference's" in bad[0].detail
    assert "shape (2, 1280, 8, 8) vs reference (2, 8, 8, 1280): channels-first" in bad[0].detail


def test_a_backend_right_only_for_batches_of_two_is_caught(monkeypatch):
    """Every network check ran batches of 2, the golden files' size: a loss divided by the
    batch size of the first trace passed. Training now runs the case's images twice over."""
    monkeypatch.setattr(cases, "NETWORKS_QUICK", cases.NETWORKS_QUICK[:1])
    bad = failing(check_network(mutants.TRACED_BATCH_LOSS))
    assert {r.check for r in bad} == {"network loss", "network gradients"}, describe(bad)
    assert all(r.config.endswith("batch=4 training") for r in bad), describe(bad)
