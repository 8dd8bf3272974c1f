"""CUDA kernels of the fused grouped 1×1 convolution whose channels are read and written through
a permutation (the kPointwise interleave), and their launch plans.

**Layout.** An activation is a row-major ``(M, C)`` matrix: ``M = N*H*W`` rows (every leading
axis of a channels-last ``(N, H, W, C)`` array flattened), ``C`` contiguous channels. The kernel is
Keras's ``(1, 1, Ci, Cout)``, i.e. row-major ``(Ci, Cout)``: ``W[g, i, o]`` sits at
``i*Cout + g*Co + o``, with ``Ci = Cin/G`` and ``Co = Cout/G``.

**Channel maps.** The conv is defined on *logical* channels (``c = g*Ci + i`` in, ``g*Co + o``
out); a channel map says where logical channel ``c`` of a ``C``-channel tensor sits in memory::

    pos(c) = (c % a) * b + c // a        with a * b == C;  inverse  c = (p % b) * a + p // b

    identity             a = C, b = 1     pos(c) = c
    written interleaved  a = S, b = G     memory = interleave(logical): c = g*S + s -> s*G + g
    read interleaved     a = G, b = S     logical = interleave(memory): c = s*G + g -> g*S + s

with ``S = C/G`` and core's ``interleave(a)[s*G + g] = a[g*S + s]``. So, for ``M`` rows::

    forward  y[m, pos_out(g*Co + o)] = sum_i x[m, pos_in(g*Ci + i)] * W[g, i, o] + bias[g*Co + o]
    dx       dx[m, pos_in(g*Ci + i)] = sum_o dy[m, pos_out(g*Co + o)] * W[g, i, o]
    dW       W'[g, i, o]             = sum_m x[m, pos_in(g*Ci + i)] * dy[m, pos_out(g*Co + o)]

``interleave_output`` (``pos_out`` written interleaved, ``(a, b) = (Co, G)``) makes the forward
write ``interleave(conv(x))``; ``interleave_input`` (``pos_in`` read interleaved,
``(a, b) = (G, Ci)``) makes it compute ``conv(interleave(x))`` while handed ``x``. ``dx`` comes
back in the layout of the ``x`` that was handed in, and ``bias`` is indexed by logical channel.

**Kernels** (``extern "C"``, suffix ``_f32``/``_f64``):

* ``gpw_forward``/``gpw_dinput``: each block stages ``GPW_ROWS`` rows of its input in shared
  memory with coalesced loads, then each thread produces one output position for those rows, so
  global reads and writes stay coalesced whatever the maps; only shared-memory reads are permuted.
  Their weights come pre-arranged in the output's memory order (``forward_weights``,
  ``dinput_weights``: a gather of the small kernel), so weight loads are contiguous too.
* ``gpw_dweight``: one thread per weight per chunk of rows, reading ``x`` and ``dy`` straight from
  global memory (lanes take consecutive memory positions of ``dy``); each chunk writes its partial
  sums to its own row of ``partial (chunks, Ci*Cout)``, which the caller sums (deterministic, no
  atomics).

The arithmetic lives in ``__device__`` helpers with no CUDA-only syntax, and the ``__global__``
shells use only ``threadIdx``/``blockIdx``/``blockDim``/``__syncthreads``/``extern __shared__``,
so the same source also compiles with g++ behind a small shim (tests/test_cupy_kernels.py runs it
on the CPU against the NumPy reference).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ...core.pointwise import deinterleave, interleave

ROWS_PER_BLOCK = 4  # GPW_ROWS: rows a block stages; each weight load is reused for all of them
MAX_THREADS = 256
DEFAULT_SHARED_BYTES = 48 * 1024  # above this a launch must opt in (max_dynamic_shared_size_bytes)
PARTIAL_LIMIT = 1 << 24  # elements of dW partial sums; bounds the chunk count for wide layers
MIN_ROWS_PER_CHUNK = 64
THREADS_PER_SM = 2048
DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
DEFINES = (f"-DGPW_ROWS={ROWS_PER_BLOCK}",)

SOURCE = r"""
// Fused grouped pointwise convolution with channel maps: see gpconv/backends/cupy/kernels.py.
// Compiled by NVRTC (CuPy), by nvcc and by g++ (with a shim): no includes, no CUDA-only syntax
// outside the __global__ shells at the end.
#ifndef GPW_ROWS
#define GPW_ROWS 4
#endif

typedef long long gpw_i64;

// Logical channel c -> memory position, for a map (a, b) with a * b == channels.
__device__ __forceinline__ int gpw_map(int c, int a, int b) { return (c % a) * b + c / a; }

// Memory position p -> logical channel (the inverse of gpw_map).
__device__ __forceinline__ int gpw_unmap(int p, int a, int b) { return (p % b) * a + p / b; }

// Shared-memory slot of element j of a staged row: one pad word per 32, so that lanes reading
// channels g*n + k of one row (stride n, often 16) fall in different banks.
__device__ __forceinline__ int gpw_pad(int j) { return j + (j >> 5); }

// Padded length of a staged row of n elements.
__device__ __forceinline__ int gpw_row_stride(int n) { return gpw_pad(n - 1) + 1; }

__device__ __forceinline__ gpw_i64 gpw_min64(gpw_i64 a, gpw_i64 b) { return a < b ? a : b; }

// Thread t of nt copies rows [row0, row0 + GPW_ROWS) of the (m, len) matrix src into tile
// (rows of `stride` padded slots); rows past m are zero so that every slot read is defined.
template <typename T>
__device__ __forceinline__ void gpw_stage(T* tile, int stride, const T* __restrict__ src,
                                          gpw_i64 row0, gpw_i64 m, int len, int t, int nt) {
  for (int r = 0; r < GPW_ROWS; ++r) {
    const bool valid = row0 + r < m;
    for (int j = t; j < len; j += nt) {
      tile[r * stride + gpw_pad(j)] = valid ? __ldg(src + (row0 + r) * len + j) : T(0);
    }
  }
}

// acc[r] = sum_k tile[r, read(g*n + k)] * wp[k*wstride] for the GPW_ROWS staged rows: output
// group g reads logical channels g*n + k through the map (ra, rb). Their memory positions are
// walked incrementally (no division per term): c -> c + 1 moves pos by rb, or by
// 1 - (ra - 1)*rb when c + 1 is a multiple of ra.
template <typename T>
__device__ __forceinline__ void gpw_dot_rows(T* acc, const T* tile, int stride,
                                             const T* __restrict__ wp, int wstride, int g, int n,
                                             int ra, int rb) {
  int lc = g * n;
  int pos = gpw_map(lc, ra, rb);
  int kmod = lc % ra;
  const int wrap = 1 - (ra - 1) * rb;
  for (int r = 0; r < GPW_ROWS; ++r) acc[r] = T(0);
  for (int k = 0; k < n; ++k) {
    const T wv = __ldg(wp + (gpw_i64)k * wstride);
    const int slot = gpw_pad(pos);
    for (int r = 0; r < GPW_ROWS; ++r) acc[r] += tile[r * stride + slot] * wv;
    if (++kmod == ra) {
      kmod = 0;
      pos += wrap;
    } else {
      pos += rb;
    }
  }
}

// Thread t of nt writes output positions p = t, t + nt, ... < out_len of the staged rows:
// dst[row, p] = sum_k tile[row, read(g*n + k)] * w[k, p] (+ bias[c]), where c = unmap(p; wa, wb)
// is p's logical channel and g = c / per its group. w (n, out_len) holds each output's weights in
// the output's *memory* order, so a warp's weight loads are contiguous whatever the maps.
template <typename T>
__device__ __forceinline__ void gpw_map_rows(const T* tile, int stride, const T* __restrict__ w,
                                             const T* __restrict__ bias, int has_bias,
                                             T* __restrict__ dst, gpw_i64 row0, gpw_i64 m,
                                             int out_len, int n, int per, int ra, int rb, int wa,
                                             int wb, int t, int nt) {
  for (int p = t; p < out_len; p += nt) {
    const int c = gpw_unmap(p, wa, wb);
    T acc[GPW_ROWS];
    gpw_dot_rows<T>(acc, tile, stride, w + p, out_len, c / per, n, ra, rb);
    const T b = has_bias ? __ldg(bias + c) : T(0);
    for (int r = 0; r < GPW_ROWS; ++r) {
      if (row0 + r < m) dst[(row0 + r) * out_len + p] = acc[r] + b;
    }
  }
}

// sum over rows [m0, m1) of x[row, px] * dy[row, pd]: one weight's share of a chunk of rows.
template <typename T>
__device__ __forceinline__ T gpw_dweight_sum(const T* __restrict__ x, const T* __restrict__ dy,
                                             gpw_i64 m0, gpw_i64 m1, int cin, int cout, int px,
                                             int pd) {
  T acc = T(0);
  for (gpw_i64 r = m0; r < m1; ++r) acc += __ldg(x + r * cin + px) * __ldg(dy + r * cout + pd);
  return acc;
}

// Staged rows; declared double (8-byte aligned) and cast to T: one extern array serves both types.
extern __shared__ double gpw_smem[];

// y (m, cout) = conv(x (m, cin)) through the maps (ia, ib) in and (oa, ob) out; w (ci, cout) is
// the kernel with its columns in y's memory order (see forward_weights in kernels.py).
template <typename T>
__device__ void gpw_forward(const T* __restrict__ x, const T* __restrict__ w,
                            const T* __restrict__ bias, int has_bias, T* __restrict__ y,
                            gpw_i64 m, int cin, int cout, int groups, int ia, int ib, int oa,
                            int ob) {
  T* tile = reinterpret_cast<T*>(gpw_smem);
  const int stride = gpw_row_stride(cin);
  const gpw_i64 row0 = (gpw_i64)blockIdx.x * GPW_ROWS;
  const int ci = cin / groups, co = cout / groups;
  gpw_stage<T>(tile, stride, x, row0, m, cin, threadIdx.x, blockDim.x);
  __syncthreads();
  // output c = g*Co + o reads logical inputs g*Ci + k; w[k, p] = W[g, k, o]
  gpw_map_rows<T>(tile, stride, w, bias, has_bias, y, row0, m, cout, ci, co, ia, ib, oa, ob,
                  threadIdx.x, blockDim.x);
}

// dx (m, cin) from dy (m, cout): the forward's transpose, written through the input map; w
// (co, cin) is the transposed kernel with its columns in dx's memory order (dinput_weights).
template <typename T>
__device__ void gpw_dinput(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,
                           gpw_i64 m, int cin, int cout, int groups, int ia, int ib, int oa,
                           int ob) {
  T* tile = reinterpret_cast<T*>(gpw_smem);
  const int stride = gpw_row_stride(cout);
  const gpw_i64 row0 = (gpw_i64)blockIdx.x * GPW_ROWS;
  const int ci = cin / groups, co = cout / groups;
  gpw_stage<T>(tile, stride, dy, row0, m, cout, threadIdx.x, blockDim.x);
  __syncthreads();
  // output c = g*Ci + i reads logical dy channels g*Co + k; w[k, q] = W[g, i, k]
  gpw_map_rows<T>(tile, stride, w, w, 0, dx, row0, m, cin, co, ci, oa, ob, ia, ib, threadIdx.x,
                  blockDim.x);
}

// partial[chunk, i*Cout + c] = sum over the chunk's rows of x_logical[g*Ci + i] * dy_logical[c].
// Thread j takes (i, pd) = (j / Cout, j % Cout) with pd a *memory* position of dy, so a warp's
// dy loads are contiguous whatever the output map; c = unmap(pd) is the logical channel.
template <typename T>
__device__ void gpw_dweight(const T* __restrict__ x, const T* __restrict__ dy,
                            T* __restrict__ partial, gpw_i64 m, gpw_i64 rows_per_chunk, int cin,
                            int cout, int groups, int ia, int ib, int oa, int ob) {
  const int ci = cin / groups, co = cout / groups;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= ci * cout) return;
  const int i = j / cout, pd = j - i * cout;
  const int c = gpw_unmap(pd, oa, ob), g = c / co;
  const gpw_i64 m0 = (gpw_i64)blockIdx.y * rows_per_chunk;
  const gpw_i64 m1 = gpw_min64(m, m0 + rows_per_chunk);
  partial[(gpw_i64)blockIdx.y * ci * cout + i * cout + c] =
      gpw_dweight_sum<T>(x, dy, m0, m1, cin, cout, gpw_map(g * ci + i, ia, ib), pd);
}

#define GPW_KERNELS(T, SUFFIX)                                                                 \
  extern "C" __global__ void gpw_forward_##SUFFIX(                                             \
      const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,            \
      int has_bias, T* __restrict__ y, gpw_i64 m, int cin, int cout, int groups, int ia,       \
      int ib, int oa, int ob) {                                                                \
    gpw_forward<T>(x, w, bias, has_bias, y, m, cin, cout, groups, ia, ib, oa, ob);             \
  }                                                                                            \
  extern "C" __global__ void gpw_dinput_##SUFFIX(                                              \
      const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx, gpw_i64 m,        \
      int cin, int cout, int groups, int ia, int ib, int oa, int ob) {                         \
    gpw_dinput<T>(dy, w, dx, m, cin, cout, groups, ia, ib, oa, ob);                            \
  }                                                                                            \
  extern "C" __global__ void gpw_dweight_##SUFFIX(                                             \
      const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partial, gpw_i64 m,   \
      gpw_i64 rows_per_chunk, int cin, int cout, int groups, int ia, int ib, int oa, int ob) { \
    gpw_dweight<T>(x, dy, partial, m, rows_per_chunk, cin, cout, groups, ia, ib, oa, ob);      \
  }

GPW_KERNELS(float, f32)
GPW_KERNELS(double, f64)
"""

KERNEL_NAMES = tuple(
    f"gpw_{kind}_{suffix}" for suffix in ("f32", "f64") for kind in ("forward", "dinput", "dweight")
)


# --- launch plans (pure Python: also driven by the CPU emulation in the tests) ------------------


@dataclass(frozen=True)
class Launch:
    """One kernel launch: ``name`` (an ``extern "C"`` kernel of ``SOURCE``), ``grid`` and
    ``block`` sizes, dynamic ``shared_mem`` bytes and ``args`` in the kernel's order: arrays and
    NumPy scalars of the kernel's exact C types (``np.int32`` for ``int``, ``np.int64`` for
    ``long long``), because CuPy passes a scalar with its own width."""

    name: str
    grid: tuple[int, int]
    block: int
    shared_mem: int
    args: tuple[Any, ...]


def channel_map(channels: int, groups: int, kind: str) -> tuple[np.int32, np.int32]:
    """``(a, b)`` of ``pos(c) = (c % a) * b + c // a`` for ``kind`` in ``"identity"``,
    ``"write"`` (memory = interleave(logical)) and ``"read"`` (logical = interleave(memory))."""
    s = channels // groups
    ab = {"identity": (channels, 1), "write": (s, groups), "read": (groups, s)}[kind]
    return np.int32(ab[0]), np.int32(ab[1])


def _suffix(dtype: Any) -> str:
    return DTYPE_SUFFIX[np.dtype(dtype)]


def _threads(work: int) -> int:
    """Threads per block for ``work`` items per block: whole warps, at most ``MAX_THREADS``."""
    return min(MAX_THREADS, max(32, -(-work // 32) * 32))


def _staged_bytes(length: int, itemsize: int) -> int:
    """Shared memory for ``ROWS_PER_BLOCK`` staged rows of ``length`` (mirrors gpw_row_stride)."""
    stride = (length - 1) + ((length - 1) >> 5) + 1
    return ROWS_PER_BLOCK * stride * itemsize


def _maps(
    cin: int, cout: int, groups: int, interleave_input: bool, interleave_output: bool
) -> tuple[np.int32, ...]:
    return channel_map(cin, groups, "read" if interleave_input else "identity") + channel_map(
        cout, groups, "write" if interleave_output else "identity"
    )


def forward_weights(w: Any, groups: int, interleave_output: bool) -> Any:
    """The kernel as ``gpw_forward`` reads it: ``w (Ci, Cout)`` with its columns in the memory
    order of ``y`` (column ``p`` holds the weights of the logical output channel stored at ``p``),
    i.e. ``interleave`` of the columns when ``y`` is written interleaved."""
    return interleave(w, groups) if interleave_output else w


def dinput_weights(w: Any, groups: int, interleave_input: bool) -> Any:
    """The kernel as ``gpw_dinput`` reads it, ``(Co, Cin)``: ``[k, q] = W[g, i, k]`` for the logical
    input channel ``g*Ci + i`` stored at position ``q`` of ``dx`` (``deinterleave`` of the columns
    when the input was read interleaved)."""
    xp = array_namespace(w)
    ci, cout = w.shape
    co = cout // groups
    wd = xp.permute_dims(xp.reshape(w, (ci, groups, co)), (2, 1, 0))  # (Co, G, Ci)
    wd = xp.reshape(wd, (co, groups * ci))
    return deinterleave(wd, groups) if interleave_input else wd


def forward_launch(
    x: Any,
    w: Any,
    bias: Any,
    has_bias: bool,
    y: Any,
    groups: int,
    interleave_input: bool,
    interleave_output: bool,
) -> Launch:
    """``y (M, Cout) = conv(x (M, Cin))`` with ``w = forward_weights(...)`` ``(Ci, Cout)``;
    ``bias (Cout,)`` (by logical channel) is read only when ``has_bias`` (pass any array of the
    dtype otherwise)."""
    m, cin = x.shape
    cout = y.shape[1]
    return Launch(
        f"gpw_forward_{_suffix(x.dtype)}",
        (-(-m // ROWS_PER_BLOCK), 1),
        _threads(cout),
        _staged_bytes(cin, x.dtype.itemsize),
        (x, w, bias, np.int32(has_bias), y, np.int64(m), np.int32(cin), np.int32(cout))
        + (np.int32(groups),)
        + _maps(cin, cout, groups, interleave_input, interleave_output),
    )


def dinput_launch(
    dy: Any, w: Any, dx: Any, groups: int, interleave_input: bool, interleave_output: bool
) -> Launch:
    """``dx (M, Cin)`` from ``dy (M, Cout)`` in the layouts the forward read and wrote, with
    ``w = dinput_weights(...)`` ``(Co, Cin)``."""
    m, cout = dy.shape
    cin = dx.shape[1]
    return Launch(
        f"gpw_dinput_{_suffix(dy.dtype)}",
        (-(-m // ROWS_PER_BLOCK), 1),
        _threads(cin),
        _staged_bytes(cout, dy.dtype.itemsize),
        (dy, w, dx, np.int64(m), np.int32(cin), np.int32(cout), np.int32(groups))
        + _maps(cin, cout, groups, interleave_input, interleave_output),
    )


def dweight_chunks(m: int, weights: int, multiprocessors: int) -> tuple[int, int]:
    """``(chunks, rows_per_chunk)`` splitting ``m`` rows so that ``chunks * weights`` threads
    about fill the device, with at least ``MIN_ROWS_PER_CHUNK`` rows per chunk and at most
    ``PARTIAL_LIMIT`` partial sums; no chunk is empty."""
    target = max(1, -(-multiprocessors * THREADS_PER_SM // weights))
    chunks = min(target, max(1, m // MIN_ROWS_PER_CHUNK), max(1, PARTIAL_LIMIT // weights), 65535)
    rows = -(-max(m, 1) // chunks)
    return -(-max(m, 1) // rows), rows


def dweight_launch(
    x: Any,
    dy: Any,
    partial: Any,
    rows_per_chunk: int,
    groups: int,
    interleave_input: bool,
    interleave_output: bool,
) -> Launch:
    """``partial (chunks, Ci*Cout)``: per chunk of rows, ``x_logical^T dy_logical`` per group in
    the kernel's ``(Ci, Cout)`` layout; ``partial.sum(0)`` is the weight gradient."""
    m, cin = x.shape
    cout = dy.shape[1]
    chunks, weights = partial.shape
    block = _threads(weights)
    return Launch(
        f"gpw_dweight_{_suffix(x.dtype)}",
        (-(-weights // block), chunks),
        block,
        0,
        (x, dy, partial, np.int64(m), np.int64(rows_per_chunk), np.int32(cin), np.int32(cout))
        + (np.int32(groups),)
        + _maps(cin, cout, groups, interleave_input, interleave_output),
    )


# --- CuPy: compile once, launch -------------------------------------------------------------


@functools.cache
def _module() -> Any:
    import cupy

    return cupy.RawModule(code=SOURCE, options=DEFINES)


@functools.cache
def _function(name: str, device_id: int) -> Any:
    # RawKernel objects carry per-device attributes, hence the device in the cache key.
    return _module().get_function(name)


@functools.cache
def _device_attribute(device_id: int, name: str) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes[name])


def launch(plan: Launch) -> None:
    """Run ``plan`` on the current CUDA device and stream (compiling ``SOURCE`` on first use)."""
    import cupy

    device_id = cupy.cuda.Device().id
    kernel = _function(plan.name, device_id)
    if plan.shared_mem > DEFAULT_SHARED_BYTES:
        limit = _device_attribute(device_id, "MaxSharedMemoryPerBlockOptin")
        if plan.shared_mem > limit:
            raise ValueError(
                f"Expected at most {limit} bytes of shared memory per block on this device, "
                f"received a layer needing {plan.shared_mem} ({plan.name}: channels too wide)"
            )
        kernel.max_dynamic_shared_size_bytes = plan.shared_mem
    kernel(plan.grid, (plan.block,), plan.args, shared_mem=plan.shared_mem)


def multiprocessors(a: Any) -> int:
    """Streaming multiprocessors of the CUDA device holding ``a`` (4 for a non-CuPy array, as
    driven by the CPU emulation)."""
    from array_api_compat import is_cupy_array

    if not is_cupy_array(a):
        return 4
    return _device_attribute(a.device.id, "MultiProcessorCount")
