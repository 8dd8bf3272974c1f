"""Cases and the float64 reference for ``FusedGroupedPointwise``, shared by the CPU emulation
tests (test_cupy_kernels.py) and the GPU tests (test_cupy.py).

The reference is core's ``GroupedPointwise`` with explicit ``interleave``/``deinterleave`` passes
around it: exactly what the fused kernels must equal without running those passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gpconv.core.pointwise import GroupedPointwise, deinterleave, interleave


@st.composite
def conv_cases(draw: Any, max_group_channels: int = 12, max_groups: int = 6) -> dict[str, Any]:
    """``{lead, cin, cout, groups, bias, interleave_input, interleave_output, seed}``; ``lead``
    is the ``(N, H, W)`` of the input (``N`` may be 0: no rows)."""
    groups = draw(st.integers(1, max_groups))
    return {
        "lead": (draw(st.integers(0, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "cin": groups * draw(st.integers(1, max_group_channels)),
        "cout": groups * draw(st.integers(1, max_group_channels)),
        "groups": groups,
        "bias": draw(st.booleans()),
        "interleave_input": draw(st.booleans()),
        "interleave_output": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def label(case: dict[str, Any]) -> str:
    """One line naming the case, for assertion messages."""
    return (
        f"[{case['lead']} {case['cin']}->{case['cout']} G={case['groups']} bias={case['bias']} "
        f"interleave_input={case['interleave_input']} "
        f"interleave_output={case['interleave_output']}]"
    )


def inputs(case: dict[str, Any], dtype: Any = np.float64) -> dict[str, Any]:
    """``x``, ``kernel``, ``bias`` (or None) and ``dy`` as NumPy arrays of ``dtype``."""
    rng = np.random.default_rng(case["seed"])
    g, cin, cout = case["groups"], case["cin"], case["cout"]
    return {
        "x": rng.standard_normal((*case["lead"], cin)).astype(dtype),
        "kernel": rng.standard_normal((1, 1, cin // g, cout)).astype(dtype),
        "bias": rng.standard_normal(cout).astype(dtype) if case["bias"] else None,
        "dy": rng.standard_normal((*case["lead"], cout)).astype(dtype),
    }


def reference(case: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
    """``y``, ``dx``, ``kernel`` and ``bias`` gradients of core's conv with the interleaves run
    as separate passes, in float64."""
    a = {k: None if v is None else np.asarray(v, np.float64) for k, v in arrays.items()}
    g = case["groups"]
    x = interleave(a["x"], g) if case["interleave_input"] else a["x"]
    y, cache = GroupedPointwise.forward(x, a["kernel"], a["bias"], g)
    dy = deinterleave(a["dy"], g) if case["interleave_output"] else a["dy"]
    dx, grads = GroupedPointwise.backward(cache, dy)
    return {
        "y": interleave(y, g) if case["interleave_output"] else y,
        "dx": deinterleave(dx, g) if case["interleave_input"] else dx,
        **grads,
    }


def run_fused(
    op: Any, case: dict[str, Any], arrays: dict[str, Any], to_device: Callable[[Any], Any]
) -> dict[str, Any]:
    """``op.forward``/``op.backward`` (``FusedGroupedPointwise``) on ``arrays`` moved with
    ``to_device``; results as returned (device arrays)."""
    dev = {k: None if v is None else to_device(v) for k, v in arrays.items()}
    y, cache = op.forward(
        dev["x"],
        dev["kernel"],
        dev["bias"],
        case["groups"],
        interleave_input=case["interleave_input"],
        interleave_output=case["interleave_output"],
    )
    dx, grads = op.backward(cache, dev["dy"])
    return {"y": y, "dx": dx, **grads}


def assert_matches(
    got: dict[str, Any], ref: dict[str, Any], case: dict[str, Any], rtol: float, atol: float
) -> None:
    """Every output finite, of the reference's shape and within ``rtol``/``atol`` (``atol``
    scaled by the reference's largest magnitude)."""
    assert set(got) == set(ref), f"outputs {sorted(got)} but expected {sorted(ref)} {label(case)}"
    for name, want in ref.items():
        have = np.asarray(got[name], np.float64)
        assert have.shape == want.shape, f"{name}.shape={have.shape}, want {want.shape}"
        assert np.isfinite(have).all(), f"{name} has non-finite elements {label(case)}"
        scale = float(np.abs(want).max()) if want.size else 1.0
        np.testing.assert_allclose(
            have, want, rtol=rtol, atol=atol * max(1.0, scale), err_msg=f"{name} {label(case)}"
        )
