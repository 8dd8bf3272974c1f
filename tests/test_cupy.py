"""CuPy: the unchanged core on a CUDA device, checked against the NumPy float64 reference.

Every test here needs a GPU and is skipped cleanly without one (see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from gpconv.backends import get
from gpconv.conformance import strategies
from gpconv.conformance.checks import (
    check_interleave,
    check_kpointwise,
    check_network,
    compare_kpointwise,
)
from gpconv.conformance.golden import check_golden

pytestmark = pytest.mark.gpu


def _failing(rows):
    return [
        f"{r.check} [{r.layer}] {r.config}: {r.error:.3g} > {r.tolerance:.3g} {r.detail}"
        for r in rows
        if not r.passed
    ]


def test_cupy_backend_is_available_on_a_gpu():
    assert get("cupy").is_available()


def test_cupy_layers_match_the_reference():
    rows = check_interleave(get("cupy")) + check_kpointwise(get("cupy"), full=True)
    assert not _failing(rows), _failing(rows)


@given(ref=strategies.kpointwise_refs())
def test_cupy_kpointwise_properties(ref):
    rows = compare_kpointwise(get("cupy"), ref)
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
    np.testing.assert_allclose(y_gpu.get(), y_cpu, rtol=1e-12)
    np.testing.assert_array_equal(interleave(cp.asarray(x), 3).get(), interleave(x, 3))
