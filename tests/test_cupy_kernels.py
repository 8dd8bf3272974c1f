"""The fused CuPy kernels, checked without a GPU.

* nvcc (when installed) compiles ``kernels.SOURCE`` to PTX for sm_90, both dtypes;
* g++ (when installed) compiles the *same source* behind a shim and ``kernel_emulator`` runs its
  launches on NumPy arrays (threads per block, ``__syncthreads`` as a barrier), standing in for
  ``kernels.launch``: ``FusedGroupedPointwise`` and ``FusedKPointwise`` — plans, argument types,
  index maps, reductions — are then compared with core's float64 reference on the CPU.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fused_cases import assert_matches, conv_cases, inputs, reference, run_fused
from helpers import tiny_architecture
from hypothesis import example, given
from hypothesis import strategies as st
from kernel_emulator import Emulator, launch_bounds

from gpconv.backends.cupy import adapter, fused, kernels
from gpconv.backends.cupy.adapter import CupyBackend
from gpconv.backends.cupy.fused import FusedGroupedPointwise, FusedKPointwise
from gpconv.backends.numpy_reference import NumpyBackend
from gpconv.conformance import cases, strategies
from gpconv.conformance.checks import check_interleave, check_kpointwise, compare_kpointwise
from gpconv.conformance.results import gradient_errors
from gpconv.core.arch import without_dropout
from gpconv.core.pointwise import GroupedPointwise, KPointwise, KPointwiseSpec

REAL_LAUNCH = kernels.launch  # before the emulator fixture swaps it in for the module

NEEDS_GXX = pytest.mark.skipif(
    shutil.which("g++") is None, reason="g++ not found: the CPU emulation of the kernels needs it"
)


@pytest.fixture(scope="module")
def emulator():
    """``kernels.launch`` replaced by the CPU emulator, outputs poisoned with NaN."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CPU emulation of the kernels needs it")
    em = Emulator()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "launch", em.launch)
        mp.setattr(fused, "POISON_OUTPUTS", True)
        yield em
    em.close()


# --- the source compiles for the GPU --------------------------------------------------------


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (CUDA toolkit)")
def test_kernel_source_compiles_to_ptx_for_sm90(tmp_path: Path) -> None:
    src = tmp_path / "gpw.cu"
    src.write_text(kernels.SOURCE)
    ptx = tmp_path / "gpw.ptx"
    cmd = ["nvcc", "-arch=sm_90", "--ptx", "-x", "cu", *kernels.DEFINES]
    result = subprocess.run(
        [*cmd, "-o", str(ptx), str(src)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"
    entries = {
        line.split()[2].split("(")[0] for line in ptx.read_text().splitlines() if ".entry" in line
    }
    assert entries == set(kernels.KERNEL_NAMES), f"PTX entries {sorted(entries)}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (CUDA toolkit)")
def test_kernels_assemble_for_sm90_without_spills(tmp_path: Path) -> None:
    """ptxas -v on the cubin: no kernel spills, and the dW kernel fits its largest block."""
    src = tmp_path / "gpw.cu"
    src.write_text(kernels.SOURCE)
    cmd = ["nvcc", "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-x", "cu", *kernels.DEFINES]
    result = subprocess.run(
        [*cmd, "-o", str(tmp_path / "gpw.cubin"), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"nvcc failed:\n{result.stderr}"
    info, name = {}, None
    for line in result.stderr.splitlines():
        if "Compiling entry function" in line:
            name = line.split("'")[1]
        elif name and "spill" in line:
            info.setdefault(name, {})["spills"] = "0 bytes spill stores, 0 bytes spill loads"
            info[name]["no_spills"] = info[name]["spills"] in line
        elif name and "Used" in line and "registers" in line:
            info.setdefault(name, {})["registers"] = int(line.split("Used")[1].split()[0])
    assert set(info) == set(kernels.KERNEL_NAMES), result.stderr
    for name, i in info.items():
        assert i.get("no_spills"), f"{name} spills:\n{result.stderr}"
    for suffix in ("f32", "f64"):
        regs = info[f"gpw_dweight_{suffix}"]["registers"]
        assert regs * kernels.DW_MAX_THREADS <= 65536, f"gpw_dweight_{suffix}: {regs} registers"


# --- launch plans ------------------------------------------------------------------------------


@given(
    m=st.integers(0, 10**7),
    weights=st.integers(1, 10**6),
    sms=st.integers(1, 200),
    threads=st.none() | st.integers(1, 10**5),
)
@example(m=2**22, weights=1, sms=200, threads=1)  # 65536 chunks of 64 rows would fit exactly
@example(m=10**6, weights=2**24 + 1, sms=132, threads=None)  # wider than PARTIAL_LIMIT: 1 chunk
def test_dweight_chunks_cover_every_row_once(m: int, weights: int, sms: int, threads) -> None:
    """Every row in exactly one chunk, at most gridDim.y's 65535 chunks, at least
    MIN_ROWS_PER_CHUNK rows per chunk (or all of them) and at most PARTIAL_LIMIT partial sums."""
    chunks, rows = kernels.dweight_chunks(m, weights, sms, threads)
    assert 1 <= chunks <= 65535 and rows >= 1, (chunks, rows)
    assert (chunks - 1) * rows < max(m, 1) <= chunks * rows, f"{chunks=} {rows=} [m={m}]"
    assert chunks * weights <= max(kernels.PARTIAL_LIMIT, weights), (chunks, weights)
    assert rows >= min(max(m, 1), kernels.MIN_ROWS_PER_CHUNK), f"{chunks=} {rows=} [m={m}]"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plans_pass_arguments_of_the_kernels_exact_c_types(emulator, dtype) -> None:
    x, dy = np.zeros((5, 12), dtype), np.zeros((5, 8), dtype)
    w, partial = np.zeros((3, 8), dtype), np.zeros((2, 24), dtype)
    plans = [
        kernels.forward_launch(x, w, w, False, dy, 4, True, False),
        kernels.dinput_launch(dy, np.zeros((2, 12), dtype), x, 4, False, True),
        kernels.dweight_launch(x, dy, partial, 3, 4, True, True),
    ]
    for plan in plans:
        kinds = "".join(
            "p" if isinstance(a, np.ndarray) else {4: "i", 8: "q"}[a.dtype.itemsize]
            for a in plan.args
        )
        assert kinds == emulator.signature(plan.name), plan.name


def _zeros(*shape: int, dtype=np.float64) -> np.ndarray:
    """A read-only zero-stride array of ``shape``: plans look at shapes only, never memory."""
    return np.broadcast_to(np.zeros((), dtype), shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cin, cout, groups",
    [
        (320, 1280, 20),  # kEffNet-B0's top conv: 1280 output channels
        (1280, 320, 20),  # its transpose: dx of 1280 channels
        (1152, 192, 64),  # the widest project conv
        (24, 171, 1),  # 513 dW threads: two blocks of 257 -> whole warps of 288
        (4096, 4096, 1),  # a staged dW row wider than 48 KiB
    ],
)
def test_launch_plans_stay_within_cudas_limits(cin, cout, groups, dtype) -> None:
    """What CUDA refuses, or launches without running every unit, checked on the plans of wide
    layers the emulated tests do not reach: blocks of whole warps, at most 1024 threads
    (forward/dx: one thread per output channel up to MAX_THREADS, so 1280 channels take several
    passes) and at most the dW kernel's __launch_bounds__; dW blocks covering every unit; dW
    staging at least one row and, where one row fits, at most the 48 KiB a block gets without
    opting in."""
    m, ci = 1000, cin // groups
    x, y = _zeros(m, cin, dtype=dtype), _zeros(m, cout, dtype=dtype)
    w = _zeros(ci, cout, dtype=dtype)
    for plan in (
        kernels.forward_launch(x, w, w, False, y, groups, True, False),
        kernels.dinput_launch(y, _zeros(cout // groups, cin, dtype=dtype), x, groups, True, False),
    ):
        assert 32 <= plan.block <= 1024 and plan.block % 32 == 0, (plan.name, plan.block)
        assert plan.grid[0] * kernels.ROWS_PER_BLOCK >= m, (plan.name, plan.grid)
    rows_per_chunk = 128
    partial = _zeros(-(-m // rows_per_chunk), ci * cout, dtype=dtype)
    plan = kernels.dweight_launch(x, y, partial, rows_per_chunk, groups, True, True)
    units = kernels.dweight_threads(cin, cout, groups)
    bound = launch_bounds().get(plan.name)  # without one, 512 threads may need too many registers
    assert bound is not None, f"{plan.name} declares no __launch_bounds__ for its blocks"
    assert plan.block % 32 == 0 and plan.block <= min(bound, 1024), (plan.block, bound)
    assert plan.grid[0] * plan.block >= units, f"{plan.grid=} {plan.block=} {units=}"
    assert plan.grid[1] == partial.shape[0], plan.grid
    rb = int(plan.args[5])
    row_bytes = plan.shared_mem // rb if rb else None
    assert rb >= 1 and plan.shared_mem == rb * row_bytes, (rb, plan.shared_mem)
    if row_bytes <= 48 * 1024:  # CUDA's default per block; more needs an opt-in
        assert plan.shared_mem <= 48 * 1024, (rb, row_bytes)
        assert rb == 16 or (rb + 1) * row_bytes > 48 * 1024, (rb, row_bytes)  # as many as fit
    else:
        assert rb == 1, (rb, row_bytes)


def test_row_counts_past_cudas_grid_limit_are_refused() -> None:
    """Row offsets in the kernels are 64-bit, so the one limit on M = N*H*W is gridDim.x <=
    2**31 - 1 blocks of 4 rows. Past it CUDA would fail the launch with a bare 'invalid
    argument'; the plan refuses it naming the limit. (Zero-stride views: no memory.)"""
    limit = 4 * (2**31 - 1)  # by hand: CUDA's maxGridSize[0] times ROWS_PER_BLOCK
    w = np.zeros((1, 1), np.float32)

    def rows(m: int) -> np.ndarray:
        return np.broadcast_to(np.zeros((1, 1), np.float32), (m, 1))

    fwd = kernels.forward_launch(rows(limit), w, w, False, rows(limit), 1, False, False)
    dx = kernels.dinput_launch(rows(limit), w, rows(limit), 1, False, False)
    assert fwd.grid == dx.grid == (2**31 - 1, 1), (fwd.grid, dx.grid)
    msg = f"Expected at most {limit} rows .* received {limit + 1} rows"
    with pytest.raises(ValueError, match=msg):
        kernels.forward_launch(rows(limit + 1), w, w, False, rows(limit + 1), 1, False, False)
    with pytest.raises(ValueError, match=msg):
        kernels.dinput_launch(rows(limit + 1), w, rows(limit + 1), 1, False, False)


def test_numpy_arrays_are_refused_before_reaching_cuda(monkeypatch) -> None:
    """FusedGroupedPointwise on NumPy arrays: a TypeError saying CuPy arrays are expected, not
    'No module named cupy' (or CuPy's 'Unsupported type' where it is installed)."""
    monkeypatch.setattr(kernels, "launch", REAL_LAUNCH)
    x, k = np.zeros((2, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"Expected CuPy arrays .* received numpy\.ndarray"):
        FusedGroupedPointwise.forward(x, k)


# --- the fused conv equals core's conv with separate interleave passes ------------------------


@given(case=conv_cases())
def test_fused_grouped_pointwise_float64_matches_core(emulator, case) -> None:
    arrays = inputs(case, np.float64)
    got = run_fused(FusedGroupedPointwise, case, arrays, np.asarray)
    assert_matches(got, reference(case, arrays), case, rtol=1e-10, atol=1e-12)


@given(case=conv_cases())
def test_fused_grouped_pointwise_float32_matches_core(emulator, case) -> None:
    arrays = inputs(case, np.float32)
    got = run_fused(FusedGroupedPointwise, case, arrays, np.asarray)
    assert all(v.dtype == np.float32 for v in got.values()), {k: v.dtype for k, v in got.items()}
    assert_matches(got, reference(case, arrays), case, rtol=1e-4, atol=1e-5)


def _assert_cores_gradient_dtypes(case: dict, arrays: dict) -> None:
    """The fused conv's outputs and gradients have core's dtypes and values (G = 4); those
    core returns in float64 are computed in float64 (the kernels' dtype is the widest one), so
    they match the float64 reference to its precision, not to float32's."""
    got = run_fused(FusedGroupedPointwise, case, arrays, np.asarray)
    y, cache = GroupedPointwise.forward(arrays["x"], arrays["kernel"], arrays["bias"], 4)
    dx, grads = GroupedPointwise.backward(cache, arrays["dy"])
    want = {"y": y.dtype, "dx": dx.dtype, **{k: g.dtype for k, g in grads.items()}}
    assert {k: got[k].dtype for k in want} == want
    ref = reference(case, arrays)
    assert_matches(got, ref, case, rtol=1e-4, atol=1e-5)
    wide = [k for k, dtype in want.items() if dtype == np.float64]
    assert_matches({k: got[k] for k in wide}, {k: ref[k] for k in wide}, case, 1e-10, 1e-12)


@pytest.mark.parametrize(
    ("forward_dtype", "dy_dtype"), [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_fused_gradients_take_cores_dtypes_for_a_dy_of_another_dtype(
    emulator, forward_dtype, dy_dtype
) -> None:
    """Core's gradients are ``result_type(forward's dtype, dy's)``; the fused backward returned
    the forward's dtype (float32 dx and kernel gradient for a float64 dy)."""
    case = dict(lead=(2, 3, 1), cin=12, cout=8, groups=4, bias=True, seed=3)
    case.update(interleave_input=True, interleave_output=True)
    arrays = inputs(case, forward_dtype)
    arrays["dy"] = arrays["dy"].astype(dy_dtype)
    _assert_cores_gradient_dtypes(case, arrays)


F32, F64 = np.float32, np.float64


@pytest.mark.parametrize(
    ("x_dtype", "kernel_dtype", "bias_dtype"),
    [(F32, F32, F64), (F32, F64, None), (F64, F32, None), (F64, F64, F32)],
)
def test_fused_gradients_take_cores_dtypes_for_mixed_forward_dtypes(
    emulator, x_dtype, kernel_dtype, bias_dtype
) -> None:
    """The kernels compute in the widest dtype; a float64 bias made dx and the kernel gradient
    float64 where core's are float32 (result_type(dy, kernel) and result_type(x, dy))."""
    case = dict(lead=(2, 3, 1), cin=12, cout=8, groups=4, bias=bias_dtype is not None, seed=5)
    case.update(interleave_input=True, interleave_output=False)
    arrays = inputs(case, np.float64)
    arrays["x"] = arrays["x"].astype(x_dtype)
    arrays["kernel"] = arrays["kernel"].astype(kernel_dtype)
    arrays["dy"] = arrays["dy"].astype(F32)
    if bias_dtype is not None:
        arrays["bias"] = arrays["bias"].astype(bias_dtype)
    _assert_cores_gradient_dtypes(case, arrays)


@pytest.mark.parametrize("flag", ["interleave_input", "interleave_output"])
@pytest.mark.parametrize("value", ["no", 0, None])
def test_fused_interleave_flags_must_be_bools(emulator, flag, value) -> None:
    """``interleave_input="no"`` interleaved (a truthy str)."""
    x, k = np.zeros((2, 4)), np.zeros((1, 1, 2, 4))
    with pytest.raises(TypeError, match=flag):
        FusedGroupedPointwise.forward(x, k, None, 2, **{flag: value})


class _OnDevice:
    """A NumPy array as the kernels' checks see a CuPy array on CUDA device ``device_id``."""

    def __init__(self, a: np.ndarray, device_id: int) -> None:
        self.a, self.device = a, SimpleNamespace(id=device_id)
        self.shape, self.dtype, self.flags, self.strides = a.shape, a.dtype, a.flags, a.strides


def test_launch_checks_refuse_arrays_the_kernel_would_misread() -> None:
    """The real launch passes raw pointers: an array on another GPU faulted (cudaErrorIllegal
    Address, the context lost) or read across the link; one of the wrong dtype or strides would
    be read as garbage. ``check_arrays`` runs before CuPy launches (and in the emulator)."""
    x, w, y = np.zeros((4, 6)), np.zeros((3, 6)), np.zeros((4, 6))
    plan = kernels.forward_launch(x, w, w, False, y, 2, False, False)
    on = [_OnDevice(a, 1) if isinstance(a, np.ndarray) else a for a in plan.args]
    kernels.check_arrays(dataclasses.replace(plan, args=tuple(on)), device_id=1)
    with pytest.raises(ValueError, match=r"argument 0 .* current CUDA device 0, received it on "):
        kernels.check_arrays(dataclasses.replace(plan, args=tuple(on)), device_id=0)
    swapped = (np.zeros((4, 6), np.float32), *plan.args[1:])
    with pytest.raises(TypeError, match=r"argument 0 .* to be float64, received float32"):
        kernels.check_arrays(dataclasses.replace(plan, args=swapped))
    strided = (np.zeros((6, 4)).T, *plan.args[1:])
    with pytest.raises(ValueError, match="argument 0 .* C-contiguous"):
        kernels.check_arrays(dataclasses.replace(plan, args=strided))


@pytest.mark.parametrize(
    "case",
    [  # kEffNet-like shapes wider than a warp, so blocks have several passes and bank strides
        {"cin": 192, "cout": 192, "groups": 12},
        {"cin": 576, "cout": 96, "groups": 32},
        {"cin": 48, "cout": 288, "groups": 3},
    ],
)
def test_fused_grouped_pointwise_on_wide_layers(emulator, case) -> None:
    for ii in (False, True):
        for oi in (False, True):
            c = dict(case, lead=(2, 3, 1), bias=True, interleave_input=ii, interleave_output=oi)
            c["seed"] = 7
            arrays = inputs(c, np.float64)
            got = run_fused(FusedGroupedPointwise, c, arrays, np.asarray)
            assert_matches(got, reference(c, arrays), c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dweight_over_many_staged_row_steps_and_blocks(emulator, dtype) -> None:
    """182 rows in 2 chunks of 91: each dW block stages 16 rows at a time (a partial last step),
    Ci = 20 leaves a partial tile of inputs, 2 dW blocks share a chunk, and forward/dx threads
    produce several output channels each (Cout = 320 > 256 threads)."""
    plan = kernels.dweight_launch(
        np.zeros((182, 40), dtype), np.zeros((182, 320), dtype), np.zeros((2, 6400), dtype),
        91, 2, True, True,
    )  # fmt: skip
    assert plan.grid == (2, 2) and plan.args[5] == 16, (plan.grid, plan.args[5])
    for ii in (False, True):
        for oi in (False, True):
            c = {"lead": (2, 13, 7), "cin": 40, "cout": 320, "groups": 2, "bias": True}
            c.update(interleave_input=ii, interleave_output=oi, seed=11)
            arrays = inputs(c, dtype)
            got = run_fused(FusedGroupedPointwise, c, arrays, np.asarray)
            tol = (1e-10, 1e-12) if dtype == np.float64 else (1e-4, 1e-5)
            assert_matches(got, reference(c, arrays), c, *tol)


def _guarded(a: np.ndarray, pad: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``a`` copied into the middle of a NaN buffer: (buffer, the view holding ``a``)."""
    buf = np.full(a.size + 2 * pad, np.nan, a.dtype)
    view = buf[pad : pad + a.size].reshape(a.shape)
    view[...] = a
    return buf, view


def test_kernels_touch_nothing_outside_their_arrays(emulator) -> None:
    """Inputs sit between NaN guards (an out-of-bounds read would poison the result) and so do
    outputs (an out-of-bounds write would overwrite a guard)."""
    case = {
        "lead": (1, 3, 3),
        "cin": 24,
        "cout": 36,
        "groups": 6,
        "bias": True,
        "interleave_input": True,
        "interleave_output": True,
        "seed": 3,
    }
    a = inputs(case, np.float64)
    ref = reference(case, a)
    g, m = case["groups"], 9
    bufs = {}
    for name, arr in {
        "x": a["x"].reshape(m, -1),
        "w": a["kernel"].reshape(4, 36),
        "b": a["bias"],
        "dy": a["dy"].reshape(m, -1),
        "y": np.zeros((m, 36)),
        "dx": np.zeros((m, 24)),
        "partial": np.zeros((2, 4 * 36)),
    }.items():
        bufs[name] = _guarded(arr)
    v = {k: view for k, (_, view) in bufs.items()}
    for name in ("y", "dx", "partial"):
        v[name][...] = np.nan
    bufs["wf"] = _guarded(kernels.forward_weights(v["w"], g, True))
    bufs["wd"] = _guarded(kernels.dinput_weights(v["w"], g, True))
    v = {k: view for k, (_, view) in bufs.items()}
    kernels.launch(kernels.forward_launch(v["x"], v["wf"], v["b"], True, v["y"], g, True, True))
    kernels.launch(kernels.dinput_launch(v["dy"], v["wd"], v["dx"], g, True, True))
    kernels.launch(kernels.dweight_launch(v["x"], v["dy"], v["partial"], 5, g, True, True))
    np.testing.assert_allclose(v["y"], ref["y"].reshape(m, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v["dx"], ref["dx"].reshape(m, -1), rtol=1e-12, atol=1e-12)
    dw = v["partial"].sum(axis=0).reshape(ref["kernel"].shape)
    np.testing.assert_allclose(dw, ref["kernel"], rtol=1e-12, atol=1e-12)
    for name, (buf, view) in bufs.items():
        outside = np.concatenate([buf[:64], buf[64 + view.size :]])
        assert np.isnan(outside).all(), f"a kernel wrote outside {name}"


@NEEDS_GXX
def test_a_wrong_index_map_is_caught() -> None:
    """The emulation has teeth: the kernels with the inverse map's roles swapped disagree."""
    good = "return (p % b) * a + p / b;"
    assert good in kernels.SOURCE
    mutant = Emulator(kernels.SOURCE.replace(good, "return (p % a) * b + p / a;"))
    case = {
        "lead": (1, 2, 2),
        "cin": 12,
        "cout": 18,
        "groups": 3,
        "bias": False,
        "interleave_input": False,
        "interleave_output": True,
        "seed": 0,
    }
    arrays = inputs(case)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kernels, "launch", mutant.launch)
            got = run_fused(FusedGroupedPointwise, case, arrays, np.asarray)
    finally:
        mutant.close()
    with pytest.raises(AssertionError):
        assert_matches(got, reference(case, arrays), case, rtol=1e-10, atol=1e-12)


@NEEDS_GXX
def test_the_emulator_refuses_what_a_gpu_would() -> None:
    """A read past the end of an input may land in rows that are never written, so neither the
    results nor the NaN guards show it: the emulator's checked ``__ldg`` must (here the kernel is
    handed 5 rows of a plan for 8). So must it refuse launches CUDA refuses: an empty grid (no
    rows), more than 1024 threads, or a dW block above the kernel's ``__launch_bounds__``."""
    x, w, y = np.ones((8, 8)), np.ones((4, 8)), np.zeros((8, 8))
    plan = kernels.forward_launch(x, w, w, False, y, 2, False, False)
    em = Emulator()
    try:
        em.launch(plan)
        np.testing.assert_array_equal(y, np.full((8, 8), 4.0))
        short = dataclasses.replace(plan, args=(x[:5], *plan.args[1:]))
        with pytest.raises(RuntimeError, match="global read outside every argument array"):
            em.launch(short)
        for bad in (dict(grid=(0, 1)), dict(block=1056)):
            with pytest.raises(RuntimeError, match="outside CUDA's limits"):
                em.launch(dataclasses.replace(plan, **bad))
        dw = kernels.dweight_launch(x, y, np.zeros((1, 32)), 8, 2, False, False)
        with pytest.raises(RuntimeError, match=r"above the kernel's __launch_bounds__\(512\)"):
            em.launch(dataclasses.replace(dw, block=544))
    finally:
        em.close()


def test_poisoned_outputs_start_as_nan(emulator) -> None:
    """``POISON_OUTPUTS`` (set by the emulator fixture) is what makes an element a kernel fails to
    write show up: ``np.empty`` may hand back memory that already holds the right answer."""
    for dtype in (np.float32, np.float64):
        out = fused._empty(np, (3, 5), dtype, np.zeros(1))
        assert out.dtype == dtype and np.isnan(out).all(), out


# --- validation is core's ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, kernel_shape, bias_shape, groups",
    [
        ((2, 12), (1, 1, 5, 8), None, None),  # Ci does not divide Cin
        ((2, 12), (1, 1, 4, 8), None, 2),  # groups disagree with the kernel
        ((2, 12), (1, 1, 4, 10), None, 3),  # groups do not divide Cout
        ((2, 12), (3, 3, 4, 8), None, None),  # not 1x1
        ((2, 12), (1, 1, 4, 8), (7,), None),  # bias length
        ((), (1, 1, 4, 8), None, None),  # no channel axis
    ],
)
def test_bad_input_fails_exactly_as_in_core(x_shape, kernel_shape, bias_shape, groups) -> None:
    x, k = np.zeros(x_shape), np.zeros(kernel_shape)
    b = None if bias_shape is None else np.zeros(bias_shape)
    with pytest.raises((ValueError, TypeError)) as want:
        GroupedPointwise.forward(x, k, b, groups)
    with pytest.raises(type(want.value)) as got:
        FusedGroupedPointwise.forward(x, k, b, groups)
    assert str(got.value) == str(want.value)


def test_unsupported_dtypes_are_refused_naming_each_argument() -> None:
    with pytest.raises(
        TypeError,
        match=r"float32 or float64 .* received x\.dtype=float16, kernel\.dtype=float16, "
        r"bias\.dtype=float16$",
    ):
        FusedGroupedPointwise.forward(
            np.zeros((2, 4), np.float16), np.zeros((1, 1, 4, 4), np.float16), np.zeros(4, "f2")
        )


def test_dy_of_another_library_fails_as_in_core(emulator) -> None:
    """A dy from another array library than the forward's arrays: core names dy and the
    forward's arrays; the fused op must too (it said 'arg0', 'arg1')."""
    xps = pytest.importorskip("array_api_strict")
    x, k = np.ones((2, 8)), np.ones((1, 1, 4, 8))
    dy = xps.ones((2, 8), dtype=xps.float64)
    for op in (GroupedPointwise, FusedGroupedPointwise):
        _, cache = op.forward(x, k)
        with pytest.raises(TypeError, match="cannot be mixed") as got:
            op.backward(cache, dy)
        assert f"{op.__name__}.forward's arrays: numpy.ndarray, dy: " in str(got.value)


@pytest.mark.parametrize("training", ["no", 1, None])
def test_kpointwise_training_flag_is_checked_as_in_core(emulator, training) -> None:
    """Without BN nothing else looks at ``training``: core refuses a non-bool, so must fused."""
    spec = KPointwiseSpec(8, 8, 2, bn=False)
    params = {k: np.ones(shape) for k, (shape, _) in spec.param_shapes().items()}
    x = np.ones((2, 8))
    with pytest.raises(TypeError) as want:
        KPointwise.forward(spec, params, x, training=training)
    with pytest.raises(TypeError) as got:
        FusedKPointwise.forward(spec, params, x, training=training)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("cin, cout", [(8, 8), (8, 16)])  # with and without a second conv
def test_fused_kpointwise_bad_dy_fails_exactly_as_in_core(emulator, cin, cout) -> None:
    spec = KPointwiseSpec(cin, cout, 2)
    params = {k: np.ones(shape) for k, (shape, _) in spec.param_shapes().items()}
    x = np.ones((2, 3, 3, cin))
    bad = (np.ones((2, 3, 3, cout + 1)), np.ones((2, 3, 4, cout)), np.ones((2, 3, 3, cout), int))
    for dy in bad:
        with pytest.raises((ValueError, TypeError)) as want:
            KPointwise.backward(KPointwise.forward(spec, params, x)[1], dy)
        with pytest.raises(type(want.value)) as got:
            FusedKPointwise.backward(FusedKPointwise.forward(spec, params, x)[1], dy)
        assert str(got.value) == str(want.value).replace("KPointwise", "FusedKPointwise")


def test_kpointwise_bad_input_fails_exactly_as_in_core() -> None:
    spec = KPointwiseSpec(8, 8, 2)
    params = {"conv/kernel": np.zeros((1, 1, 4, 8))}
    for x in (np.zeros((2, 8)), np.zeros((2, 6))):
        with pytest.raises(ValueError) as want:
            KPointwise.forward(spec, params, x)
        with pytest.raises(ValueError) as got:
            FusedKPointwise.forward(spec, params, x)
        assert str(got.value) == str(want.value)


# --- kPointwise on the fused kernels ---------------------------------------------------------


class EmulatedFusedBackend(NumpyBackend):
    """The reference backend with its kPointwise replaced by ``FusedKPointwise`` (float64)."""

    name = "fused (CPU emulation)"

    def kpointwise(self, spec, params, x, dy, training=False):
        p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        y, cache = FusedKPointwise.forward(spec, p, np.asarray(x, np.float64), training)
        dx, grads = FusedKPointwise.backward(cache, np.asarray(dy, np.float64))
        return {"y": y, "dx": dx, "grads": grads, "moving_stats": cache["moving_stats"]}


def _assert_kpointwise_equal(ref: dict, got: dict, rtol: float = 1e-10) -> None:
    where = cases.spec_label(ref["spec"], ref["training"])
    assert set(got["grads"]) == set(ref["grads"]), (sorted(got["grads"]), where)
    assert set(got["moving_stats"]) == set(ref["moving_stats"]), where
    pairs = [("y", got["y"], ref["y"]), ("dx", got["dx"], ref["dx"])]
    pairs += [(k, got["grads"][k], v) for k, v in ref["grads"].items()]
    pairs += [(k, got["moving_stats"][k], v) for k, v in ref["moving_stats"].items()]
    for name, have, want in pairs:
        scale = max(1.0, float(np.abs(want).max()) if np.size(want) else 1.0)
        np.testing.assert_allclose(
            have, want, rtol=rtol, atol=1e-12 * scale, err_msg=f"{name} [{where}]"
        )


@pytest.mark.parametrize("row", cases.KPOINTWISE_FULL, ids=str)
@pytest.mark.parametrize("training", [False, True])
def test_fused_kpointwise_equals_core_on_every_branch(emulator, row, training) -> None:
    ref = cases.kpointwise_case(row, training, seed=0)
    got = EmulatedFusedBackend().kpointwise(
        ref["spec"], ref["params"], ref["x"], ref["dy"], training
    )
    _assert_kpointwise_equal(ref, got)


@given(ref=strategies.kpointwise_refs())
def test_fused_kpointwise_properties(emulator, ref) -> None:
    _assert_kpointwise_equal(
        ref,
        EmulatedFusedBackend().kpointwise(
            ref["spec"], ref["params"], ref["x"], ref["dy"], ref["training"]
        ),
    )
    rows = compare_kpointwise(EmulatedFusedBackend(), ref)
    assert all(r.passed for r in rows), [str(r) for r in rows if not r.passed]


def test_fused_kpointwise_runs_no_separate_interleave(emulator, monkeypatch) -> None:
    """The point of fusing: kPointwise never calls interleave on activations (only on the
    per-channel BN vectors of length Cout)."""
    calls = []
    real = fused.interleave

    def spy(a, groups):
        calls.append(tuple(a.shape))
        return real(a, groups)

    monkeypatch.setattr(fused, "interleave", spy)
    for row in cases.KPOINTWISE_FULL:
        ref = cases.kpointwise_case(row, True, seed=1)
        EmulatedFusedBackend().kpointwise(ref["spec"], ref["params"], ref["x"], ref["dy"], True)
    assert all(len(shape) == 1 for shape in calls), f"interleave called on {calls}"
    assert calls, "expected the BN vectors of the interleave-only cases to be permuted"


# --- the adapter, with NumPy standing in for CuPy -------------------------------------------


@pytest.fixture
def host_cupy(monkeypatch):
    """The cupy adapter with ``cupy.asarray`` replaced by NumPy's and availability forced: what
    the adapter checks and converts runs on the CPU (the device work is core's or, with the
    emulator, the kernels')."""
    monkeypatch.setattr(CupyBackend, "is_available", lambda self: True)
    monkeypatch.setattr(adapter, "_cupy", lambda: SimpleNamespace(asarray=np.asarray))


@pytest.mark.parametrize(
    "images, error",
    [
        (np.zeros((2, 8, 8, 3), np.uint8), TypeError),  # 0-255 data not scaled: never a cast
        (np.zeros((2, 8, 8, 4), np.float32), ValueError),  # wrong channel count
        (np.zeros((8, 8, 3), np.float32), ValueError),  # no batch axis
    ],
)
def test_cupy_adapter_refuses_images_as_the_numpy_backend(host_cupy, images, error) -> None:
    arch = tiny_architecture()
    labels = np.zeros(len(images), np.int64)
    for method, args in (("forward", (images,)), ("loss_and_grads", (images, labels))):
        ref, cupy = NumpyBackend(), CupyBackend("core")
        with pytest.raises(error) as want:
            getattr(ref, method)(ref.build(arch), *args)
        with pytest.raises(error) as got:
            getattr(cupy, method)(cupy.build(arch), *args)
        assert str(got.value) == str(want.value), method


@pytest.mark.parametrize(
    "x_shape, x_dtype, dy_dtype, error",
    [
        ((2, 3, 3, 8), np.int64, np.float32, TypeError),  # integer x: refused, not cast
        ((2, 3, 3, 8), np.float32, np.int64, TypeError),  # integer dy
        ((18, 8), np.float32, np.float32, ValueError),  # not (N, H, W, Cin)
    ],
)
def test_cupy_adapter_kpointwise_refuses_x_and_dy_as_the_numpy_backend(
    host_cupy, x_shape, x_dtype, dy_dtype, error
) -> None:
    spec = KPointwiseSpec(8, 8, 2)
    params = {k: np.ones(shape, np.float32) for k, (shape, _) in spec.param_shapes().items()}
    x, dy = np.ones(x_shape, x_dtype), np.ones(x_shape, dy_dtype)
    with pytest.raises(error) as want:
        NumpyBackend().kpointwise(spec, params, x, dy)
    with pytest.raises(error) as got:
        CupyBackend("core").kpointwise(spec, params, x, dy)
    assert str(got.value) == str(want.value)


def test_cupy_adapter_fused_kpointwise_passes_conformance_in_emulation(emulator, host_cupy):
    """The adapter's kPointwise path end to end (host checks, conversions, FusedKPointwise, the
    kernels' plans) against the reference, as ``gpconv check`` runs it on a GPU."""
    backend = CupyBackend("fused")
    rows = check_interleave(backend) + check_kpointwise(backend)
    failing = [str(r) for r in rows if not r.passed]
    assert rows and not failing, failing


def _tiny_models(backend: CupyBackend):
    """tiny_architecture's models of the reference (float64) and ``backend`` with the same
    float32-representable parameters, and float32-representable images."""
    arch = without_dropout(tiny_architecture())  # training runs draw no masks
    ref = NumpyBackend()
    ref_model, model = ref.build(arch), backend.build(arch)
    params = {k: cases.f32(v) for k, v in ref.export_params(ref_model).items()}
    ref.load_params(ref_model, params)
    backend.load_params(model, params)
    x = cases.f32(np.random.default_rng(0).standard_normal((2, 16, 16, 3)))
    return ref, ref_model, model, x


def _assert_float32_close(got: dict, want: dict, rtol: float, where: str) -> None:
    """Every array float32 and within ``rtol`` of the reference in norm, by the conformance
    suite's gradient criterion (``gradient_errors``: an array zero in exact arithmetic, such as a
    BN beta gradient under training-mode BN, measured against the largest norm)."""
    assert set(got) == set(want), (sorted(got), sorted(want), where)
    for k, have in got.items():
        assert np.asarray(have).dtype == np.float32, f"{k}.dtype={have.dtype} [{where}]"
    bad = {k: c for k, c in gradient_errors(got, want, rtol).items() if not c.ok}
    assert not bad, f"{bad} [{where}]"


def _moving(params: dict) -> dict:
    """Copies of the moving statistics in ``params``."""
    return {k: np.array(v) for k, v in params.items() if "moving_" in k}


@pytest.mark.parametrize("training", [False, True])
def test_cupy_adapter_network_is_the_reference_in_float32(host_cupy, training) -> None:
    """``forward`` and ``loss_and_grads`` (NumPy standing in for CuPy): core's network in float32
    with the training flag passed on, and the model's moving statistics updated exactly when
    training, as the reference backend does."""
    backend = CupyBackend("core")
    ref, ref_model, model, x = _tiny_models(backend)
    before = _moving(model.params)
    want, got = ref.forward(ref_model, x, training), backend.forward(model, x, training)
    _assert_float32_close(got, want, 1e-4, f"forward training={training}")
    after = _moving(model.params)
    _assert_float32_close(after, _moving(ref_model.params), 1e-3, "moving statistics")
    assert any(not np.array_equal(after[k], before[k]) for k in before) == training
    labels = np.array([0, 2])
    want = ref.loss_and_grads(ref_model, x, labels, training)
    got = backend.loss_and_grads(model, x, labels, training)
    where = f"loss_and_grads training={training}"
    assert abs(got["loss"] - want["loss"]) <= 1e-5 * max(1.0, abs(want["loss"])), where
    for k in ("logits", "dx"):
        _assert_float32_close({k: got[k]}, {k: want[k]}, 1e-4, where)
    _assert_float32_close(got["grads"], want["grads"], 1e-4, where)
    moved = _moving(model.params)
    assert any(not np.array_equal(moved[k], after[k]) for k in after) == training, where


def test_cupy_adapter_core_kpointwise_runs_core_in_float32(host_cupy, monkeypatch) -> None:
    """``CupyBackend("core")`` runs core's kPointwise (no fused kernel: the real launch refuses
    NumPy arrays) on float32 copies of float64 parameters and inputs."""
    monkeypatch.setattr(kernels, "launch", REAL_LAUNCH)
    ref = cases.kpointwise_case(cases.KPOINTWISE_FULL[1], True, seed=0)  # interleave + conv2
    got = CupyBackend("core").kpointwise(ref["spec"], ref["params"], ref["x"], ref["dy"], True)
    flat = {"y": got["y"], "dx": got["dx"], **got["grads"], **got["moving_stats"]}
    want = {"y": ref["y"], "dx": ref["dx"], **ref["grads"], **ref["moving_stats"]}
    _assert_float32_close(flat, want, 1e-4, cases.spec_label(ref["spec"], True))


def test_cupy_adapter_copies_device_arrays_to_the_host() -> None:
    class OnDevice:
        def __init__(self, a):
            self.a = a

        def get(self):
            return self.a

    host = adapter._to_host({"a": OnDevice(np.ones(2)), "b": {"c": OnDevice(np.zeros(1))}})
    assert set(host) == {"a", "b"} and set(host["b"]) == {"c"}, host
    assert type(host["a"]) is np.ndarray and type(host["b"]["c"]) is np.ndarray, host


@pytest.mark.parametrize("count, available", [(0, False), (1, True), (RuntimeError, False)])
def test_cupy_is_available_only_with_a_cuda_device(monkeypatch, count, available) -> None:
    """CuPy importable is not enough: ``getDeviceCount()`` must find a device (and a CuPy without
    a driver, which raises there, is unavailable). A stand-in CuPy module answers."""

    def device_count() -> int:
        if count is RuntimeError:
            raise RuntimeError("cudaErrorNoDevice")
        return count

    fake = types.ModuleType("cupy")
    fake.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    fake.cuda = SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=device_count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert CupyBackend().is_available() is available


# --- kernels.launch with a stand-in CuPy (what the emulator replaces) -------------------------


@pytest.fixture
def fake_cupy(monkeypatch):
    """``import cupy`` gives a stand-in that records what ``kernels.launch`` asks of CuPy: its
    ``ndarray`` is ``_OnDevice``, ``cuda.Device()`` is device ``calls.current``, each device has
    the attributes in ``calls.attributes``, and ``RawModule`` kernels record their launches.
    The kernel caches are cleared around the test (a real CuPy must not get stand-in kernels)."""
    calls = SimpleNamespace(current=0, modules=[], fetched=[], launches=[], attributes={})

    class Kernel:
        def __init__(self, name: str, device_id: int) -> None:
            self.name, self.device_id, self.max_dynamic_shared_size_bytes = name, device_id, None

        def __call__(self, grid, block, args, shared_mem=0) -> None:
            calls.launches.append(
                (self, grid, block, args, shared_mem, self.max_dynamic_shared_size_bytes)
            )

    class RawModule:
        def __init__(self, code: str, options: tuple) -> None:
            calls.modules.append((code, options))

        def get_function(self, name: str) -> Kernel:
            calls.fetched.append((name, calls.current))
            return Kernel(name, calls.current)

    class Device:
        def __init__(self, device_id: int | None = None) -> None:
            self.id = calls.current if device_id is None else device_id
            self.attributes = calls.attributes[self.id]

    fake = types.ModuleType("cupy")
    fake.ndarray, fake.RawModule = _OnDevice, RawModule
    fake.cuda = SimpleNamespace(Device=Device)
    for d in (0, 1):  # an H200's opt-in limit (227 KiB); 132 + d multiprocessors
        calls.attributes[d] = dict(MaxSharedMemoryPerBlockOptin=232448, MultiProcessorCount=132 + d)
    caches = (kernels._module, kernels._function, kernels._device_attribute)
    for cached in caches:
        cached.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield calls
    for cached in caches:
        cached.cache_clear()


def _forward_plan(cin: int, cout: int, groups: int, device_id: int, dtype=np.float32):
    """A forward plan over 4 rows whose arrays sit on CUDA device ``device_id``."""
    a = {
        "x": np.zeros((4, cin), dtype), "w": np.zeros((cin // groups, cout), dtype),
        "y": np.zeros((4, cout), dtype),
    }  # fmt: skip
    on = {k: _OnDevice(v, device_id) for k, v in a.items()}
    return kernels.forward_launch(on["x"], on["w"], on["w"], False, on["y"], groups, True, False)


def test_launch_compiles_once_and_fetches_each_kernel_on_its_device(fake_cupy) -> None:
    """The source is compiled once with DEFINES; a kernel is fetched per device (its attributes,
    such as the shared-memory opt-in, are per device), and the plan reaches CuPy as
    ``kernel(grid, (block,), args, shared_mem=...)``. Arrays on another device than the current
    one are refused before the launch."""
    plan = _forward_plan(12, 8, 4, 0)
    REAL_LAUNCH(plan)
    kernel, grid, block, args, shared, _ = fake_cupy.launches[-1]
    assert (grid, block, args, shared) == (plan.grid, (plan.block,), plan.args, plan.shared_mem)
    assert fake_cupy.modules == [(kernels.SOURCE, kernels.DEFINES)]
    fake_cupy.current = 1
    REAL_LAUNCH(_forward_plan(12, 8, 4, 1))
    assert fake_cupy.launches[-1][0].device_id == 1, fake_cupy.fetched
    assert fake_cupy.fetched == [(plan.name, 0), (plan.name, 1)]
    assert len(fake_cupy.modules) == 1
    with pytest.raises(ValueError, match="current CUDA device 1, received it on device 0"):
        REAL_LAUNCH(plan)
    assert len(fake_cupy.launches) == 2


def test_launch_opts_in_to_shared_memory_above_48_kib_up_to_the_devices_limit(fake_cupy) -> None:
    """A block gets 48 KiB of dynamic shared memory unless the kernel opts in (CUDA refuses the
    launch otherwise); past the device's opt-in maximum the layer is refused by name."""
    small, wide = _forward_plan(12, 8, 4, 0), _forward_plan(1152, 1280, 64, 0, np.float64)
    assert small.shared_mem <= 48 * 1024 < wide.shared_mem, wide.shared_mem
    REAL_LAUNCH(small)
    assert fake_cupy.launches[-1][5] is None  # not opted in
    REAL_LAUNCH(wide)
    assert fake_cupy.launches[-1][5] == wide.shared_mem
    fake_cupy.attributes[0]["MaxSharedMemoryPerBlockOptin"] = wide.shared_mem - 8
    kernels._device_attribute.cache_clear()
    with pytest.raises(ValueError, match=rf"at most {wide.shared_mem - 8} bytes .* channels"):
        REAL_LAUNCH(wide)
    assert len(fake_cupy.launches) == 2


def test_multiprocessors_are_the_arrays_devices(fake_cupy) -> None:
    assert kernels.multiprocessors(_OnDevice(np.zeros(1), 1)) == 133
    assert kernels.multiprocessors(_OnDevice(np.zeros(1), 0)) == 132
