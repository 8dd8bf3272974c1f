"""CuPy: the unchanged core on a CUDA device, and the fused grouped-pointwise kernels, checked
against the NumPy float64 reference.

Every test here needs a GPU and is skipped cleanly without one (see conftest.py). The same kernel
source is checked on the CPU, through an emulator, by test_cupy_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest
from fused_cases import assert_matches, conv_cases, inputs, reference, run_fused
from hypothesis import given

from gpconv.backends import get
from gpconv.backends.cupy import fused
from gpconv.backends.cupy.adapter import CupyBackend
from gpconv.backends.cupy.fused import FusedGroupedPointwise
from gpconv.conformance import strategies
from gpconv.conformance.checks import (
    check_interleave,
    check_kpointwise,
    check_network,
    compare_kpointwise,
)
from gpconv.conformance.golden import check_golden

pytestmark = pytest.mark.gpu

IMPLS = ("fused", "core")


def _failing(rows):
    return [
        f"{r.check} [{r.layer}] {r.config}: {r.error:.3g} > {r.tolerance:.3g} {r.detail}"
        for r in rows
        if not r.passed
    ]


def _host(tree: dict) -> dict:
    import cupy as cp

    return {k: cp.asnumpy(v) for k, v in tree.items()}


@pytest.fixture(scope="module")
def poisoned():
    """Fused kernel outputs start as NaN, so any element a kernel does not write is caught."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "POISON_OUTPUTS", True)
        yield


def test_cupy_backend_is_available_on_a_gpu():
    assert get("cupy").is_available()
    assert get("cupy").kpointwise_impl == "fused"


@pytest.mark.parametrize("impl", IMPLS)
def test_cupy_layers_match_the_reference(impl):
    backend = CupyBackend(kpointwise_impl=impl)
    rows = check_interleave(backend) + check_kpointwise(backend, full=True)
    assert not _failing(rows), _failing(rows)


@pytest.mark.parametrize("impl", IMPLS)
@given(ref=strategies.kpointwise_refs())
def test_cupy_kpointwise_properties(impl, ref):
    rows = compare_kpointwise(CupyBackend(kpointwise_impl=impl), ref)
    assert not _failing(rows), _failing(rows)


def test_cupy_networks_and_golden_files_match_the_reference():
    rows = check_network(get("cupy")) + check_golden(get("cupy"))
    assert not _failing(rows), _failing(rows)


def test_core_ops_run_on_cupy_arrays_unchanged():
    import cupy as cp

    from gpconv.core import GroupedPointwise, interleave

    x = np.random.default_rng(0).standard_normal((2, 3, 3, 12))
    w = np.random.default_rng(1).standard_normal((1, 1, 4, 6))
    y_gpu, _ = GroupedPointwise.forward(cp.asarray(x), cp.asarray(w))
    y_cpu, _ = GroupedPointwise.forward(x, w)
    assert isinstance(y_gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(y_gpu), y_cpu, rtol=1e-12)
    np.testing.assert_array_equal(cp.asnumpy(interleave(cp.asarray(x), 3)), interleave(x, 3))


# --- the fused kernels ---------------------------------------------------------------------------


@given(case=conv_cases())
def test_fused_grouped_pointwise_float64_matches_core(poisoned, case):
    import cupy as cp

    arrays = inputs(case, np.float64)
    got = _host(run_fused(FusedGroupedPointwise, case, arrays, cp.asarray))
    assert_matches(got, reference(case, arrays), case, rtol=1e-10, atol=1e-12)


@given(case=conv_cases())
def test_fused_grouped_pointwise_float32_matches_core(poisoned, case):
    import cupy as cp

    arrays = inputs(case, np.float32)
    got = _host(run_fused(FusedGroupedPointwise, case, arrays, cp.asarray))
    assert all(v.dtype == np.float32 for v in got.values()), {k: v.dtype for k, v in got.items()}
    assert_matches(got, reference(case, arrays), case, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(np.float64, 1e-10, 1e-12), (np.float32, 1e-4, 1e-5)]
)
@pytest.mark.parametrize(
    "cin, cout, groups",
    [(192, 192, 12), (1152, 192, 64), (192, 1152, 12), (40, 240, 2), (80, 80, 1)],
)
def test_fused_grouped_pointwise_at_network_scale(poisoned, dtype, rtol, atol, cin, cout, groups):
    """kEffNet-B0 layer shapes on 4x16x16 images: hundreds of blocks, several dW chunks."""
    import cupy as cp

    for ii in (False, True):
        for oi in (False, True):
            case = {
                "lead": (4, 16, 16),
                "cin": cin,
                "cout": cout,
                "groups": groups,
                "bias": True,
                "interleave_input": ii,
                "interleave_output": oi,
                "seed": 5,
            }
            arrays = inputs(case, dtype)
            got = _host(run_fused(FusedGroupedPointwise, case, arrays, cp.asarray))
            assert_matches(got, reference(case, arrays), case, rtol=rtol, atol=atol)


def test_fused_grouped_pointwise_with_rows_wider_than_48k_of_shared_memory(poisoned):
    """float64 rows of 2048 channels: 4 staged input rows plus 4 output rows need ~70 KB, above
    the default 48 KB, so the launch must opt in to more dynamic shared memory."""
    import cupy as cp

    case = {
        "lead": (1, 3, 3),
        "cin": 2048,
        "cout": 64,
        "groups": 2,
        "bias": False,
        "interleave_input": True,
        "interleave_output": True,
        "seed": 2,
    }
    arrays = inputs(case, np.float64)
    got = _host(run_fused(FusedGroupedPointwise, case, arrays, cp.asarray))
    assert_matches(got, reference(case, arrays), case, rtol=1e-10, atol=1e-12)


def test_fused_interleaved_output_equals_core_interleave_of_core_conv():
    import cupy as cp

    from gpconv.core import GroupedPointwise, interleave

    rng = np.random.default_rng(4)
    x = cp.asarray(rng.standard_normal((8, 8, 8, 192)), cp.float32)
    w = cp.asarray(rng.standard_normal((1, 1, 16, 1152)), cp.float32)
    b = cp.asarray(rng.standard_normal(1152), cp.float32)
    y_core, _ = GroupedPointwise.forward(x, w, b, 12)
    y_fused, _ = FusedGroupedPointwise.forward(x, w, b, 12, interleave_output=True)
    np.testing.assert_allclose(
        cp.asnumpy(y_fused),
        cp.asnumpy(interleave(y_core, 12)),
        rtol=1e-5,
        atol=1e-5,
        err_msg="192->1152 G=12",
    )
