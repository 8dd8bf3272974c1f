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

**Kernels** (``extern "C"``, suffix ``_f32``/``_f64``). The maps are applied only where rows
move between global and shared memory (see the comment at the top of ``SOURCE``), so the
arithmetic is the same instruction stream for every map and the kernel is used in its own layout
(no per-call rearrangement of the weights on the host):

* ``gpw_forward``/``gpw_dinput``: each block stages ``GPW_ROWS`` rows of its input in shared
  memory in *logical* channel order (contiguous global reads, the inverse map on the shared
  store), computes the ``GPW_ROWS`` logical output rows into a shared tile (thread per logical
  output channel: contiguous weight loads, broadcast input reads), then writes each row
  contiguously, reading the tile at the permuted slot. ``forward_weights`` is the kernel as is;
  ``dinput_weights`` its per-group transpose, the same for every map.
* ``gpw_dweight``: per chunk of rows, a block stages ``rb`` whole rows of ``x`` and ``dy`` at a
  time in logical order, and each thread accumulates ``GPW_DW_TILE`` weights (one output channel,
  consecutive inputs) in registers; each chunk writes its partial sums to its own row of
  ``partial (chunks, Ci*Cout)``, which the caller sums (deterministic, no atomics).

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

ROWS_PER_BLOCK = 4  # GPW_ROWS: rows a block stages; each weight load is reused for all of them
MAX_THREADS = 256
DW_TILE = 8  # GPW_DW_TILE: weights per dW thread (one output channel, consecutive inputs)
DW_MAX_THREADS = 512  # GPW_DW_THREADS: dW block size bound (__launch_bounds__)
DW_MAX_STAGE_ROWS = 16  # rows of x and dy a dW block stages at a time (fewer if wide)
DW_THREADS_PER_SM = 1024  # dW chunks aim at this many threads per SM (8 FMAs in flight each)
DEFAULT_SHARED_BYTES = 48 * 1024  # above this a launch must opt in (max_dynamic_shared_size_bytes)
PARTIAL_LIMIT = 1 << 24  # elements of dW partial sums; bounds the chunk count for wide layers
MIN_ROWS_PER_CHUNK = 64
MAX_GRID_X = 2**31 - 1  # CUDA's limit on gridDim.x; the kernels' row offsets are 64-bit
DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
DEFINES = (
    f"-DGPW_ROWS={ROWS_PER_BLOCK}",
    f"-DGPW_DW_TILE={DW_TILE}",
    f"-DGPW_DW_THREADS={DW_MAX_THREADS}",
)

SOURCE = r"""
// Fused grouped pointwise convolution with channel maps: see gpconv/backends/cupy/kernels.py.
// Compiled by NVRTC (CuPy), by nvcc and by g++ (with a shim): no includes, no CUDA-only syntax
// outside the __global__ shells at the end.
//
// WHERE THE PERMUTATION HAPPENS (and why it is free): only while rows move between global and
// shared memory. gpw_stage reads each row contiguously (coalesced) and stores element p at the
// shared slot of its *logical* channel unmap(p); gpw_write_rows reads the logical output tile at
// unmap(p) and stores position p contiguously (coalesced). Everything in between -- the dot
// products of gpw_dot_tile and the dW accumulation -- runs on logical, contiguous-per-group
// channels with the kernel in its own (Ci, Cout) layout, so it is the very same instruction
// stream for every map: a map only changes which shared-memory slot one store (staging) or one
// load (write-out) per element uses, and both are once per element per block, next to the Ci or
// Co products per element of the arithmetic.
#ifndef GPW_ROWS
#define GPW_ROWS 4
#endif
#ifndef GPW_DW_TILE
#define GPW_DW_TILE 8
#endif
#ifndef GPW_DW_THREADS
#define GPW_DW_THREADS 512
#endif

typedef long long gpw_i64;

// Memory position p -> logical channel, for a map (a, b) with a * b == channels (the inverse of
// pos(c) = (c % a) * b + c / a).
__device__ __forceinline__ int gpw_unmap(int p, int a, int b) { return (p % b) * a + p / b; }

// Shared-memory slot of element j of a staged row: one pad word per 32, so that lanes reading
// channels g*n + k of one row for several groups g (stride n, often 16) fall in different banks.
__device__ __forceinline__ int gpw_pad(int j) { return j + (j >> 5); }

// Padded length of a staged row of n elements.
__device__ __forceinline__ int gpw_row_stride(int n) { return gpw_pad(n - 1) + 1; }

__device__ __forceinline__ gpw_i64 gpw_min64(gpw_i64 a, gpw_i64 b) { return a < b ? a : b; }

// Thread t of nt copies rows [row0, row0 + nrows) of the (m, len) matrix src into tile (rows of
// `stride` padded slots) in LOGICAL channel order: memory position p goes to slot
// pad(unmap(p; a, b)). Global reads are contiguous across lanes whatever the map; rows from
// `valid` on are zero (only their slots are defined, never used for output).
template <typename T>
__device__ __forceinline__ void gpw_stage(T* tile, int stride, const T* __restrict__ src,
                                          gpw_i64 row0, int nrows, int valid, int len, int a,
                                          int b, int t, int nt) {
  for (int p = t; p < len; p += nt) {
    const int slot = gpw_pad(gpw_unmap(p, a, b));
    const T* s = src + row0 * len + p;
    for (int r = 0; r < nrows; ++r) {
      tile[r * stride + slot] = r < valid ? __ldg(s + (gpw_i64)r * len) : T(0);
    }
  }
}

// Thread t of nt writes rows [row0, row0 + valid) of the (m, len) matrix dst contiguously from
// the logical tile: dst[row, p] = tile[row, pad(unmap(p; a, b))].
template <typename T>
__device__ __forceinline__ void gpw_write_rows(T* __restrict__ dst, const T* tile, int stride,
                                               gpw_i64 row0, int valid, int len, int a, int b,
                                               int t, int nt) {
  for (int p = t; p < len; p += nt) {
    const int slot = gpw_pad(gpw_unmap(p, a, b));
    T* d = dst + row0 * len + p;
    for (int r = 0; r < valid; ++r) d[(gpw_i64)r * len] = tile[r * stride + slot];
  }
}

// The arithmetic, on logical channels only (identical for every map). Thread t of nt produces
// logical outputs c = t, t + nt, ... < out_len of the GPW_ROWS staged rows:
// out[r, c] = sum_k in[r, g*n + k] * w[k, c] (+ bias[c]) with g = c / per. Lanes take
// consecutive c: weight loads are contiguous, and lanes of one group read the same input slot
// (broadcast).
template <typename T>
__device__ __forceinline__ void gpw_dot_tile(T* out, int ostride, const T* in, int istride,
                                             const T* __restrict__ w,
                                             const T* __restrict__ bias, int has_bias,
                                             int out_len, int n, int per, int t, int nt) {
  for (int c = t; c < out_len; c += nt) {
    const int base = (c / per) * n;
    T acc[GPW_ROWS];
    for (int r = 0; r < GPW_ROWS; ++r) acc[r] = T(0);
    for (int k = 0; k < n; ++k) {
      const T wv = __ldg(w + (gpw_i64)k * out_len + c);
      const int slot = gpw_pad(base + k);
      for (int r = 0; r < GPW_ROWS; ++r) acc[r] += in[r * istride + slot] * wv;
    }
    const T b = has_bias ? __ldg(bias + c) : T(0);
    const int oslot = gpw_pad(c);
    for (int r = 0; r < GPW_ROWS; ++r) out[r * ostride + oslot] = acc[r] + b;
  }
}

// Staged rows; declared double (8-byte aligned) and cast to T: one extern array serves both types.
extern __shared__ double gpw_smem[];

// One block of GPW_ROWS rows: stage `in` (len in_len, map (ia, ib)) logically, compute the
// logical output tile, write it through the map (oa, ob). Shared memory: GPW_ROWS padded input
// rows, then GPW_ROWS padded output rows.
template <typename T>
__device__ __forceinline__ void gpw_rows_block(const T* __restrict__ src, const T* __restrict__ w,
                                               const T* __restrict__ bias, int has_bias,
                                               T* __restrict__ dst, gpw_i64 m, int in_len,
                                               int out_len, int n, int per, int ia, int ib,
                                               int oa, int ob) {
  T* in = reinterpret_cast<T*>(gpw_smem);
  const int istride = gpw_row_stride(in_len), ostride = gpw_row_stride(out_len);
  T* out = in + GPW_ROWS * istride;
  const gpw_i64 row0 = (gpw_i64)blockIdx.x * GPW_ROWS;
  const int valid = (int)gpw_min64(GPW_ROWS, m - row0);
  const int t = threadIdx.x, nt = blockDim.x;
  gpw_stage<T>(in, istride, src, row0, GPW_ROWS, valid, in_len, ia, ib, t, nt);
  __syncthreads();
  gpw_dot_tile<T>(out, ostride, in, istride, w, bias, has_bias, out_len, n, per, t, nt);
  __syncthreads();
  gpw_write_rows<T>(dst, out, ostride, row0, valid, out_len, oa, ob, t, nt);
}

// y (m, cout) = conv(x (m, cin)) through the maps (ia, ib) in and (oa, ob) out; w (ci, cout) is
// the kernel as is: w[k, g*Co + o] = W[g, k, o].
template <typename T>
__device__ void gpw_forward(const T* __restrict__ x, const T* __restrict__ w,
                            const T* __restrict__ bias, int has_bias, T* __restrict__ y,
                            gpw_i64 m, int cin, int cout, int groups, int ia, int ib, int oa,
                            int ob) {
  // logical output c = g*Co + o reads logical inputs g*Ci + k
  gpw_rows_block<T>(x, w, bias, has_bias, y, m, cin, cout, cin / groups, cout / groups, ia, ib,
                    oa, ob);
}

// dx (m, cin) from dy (m, cout): the forward's transpose, dy read through the output map and dx
// written through the input map; w (co, cin) is the transposed kernel, w[k, g*Ci + i] =
// W[g, i, k] (dinput_weights: the same for every map).
template <typename T>
__device__ void gpw_dinput(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,
                           gpw_i64 m, int cin, int cout, int groups, int ia, int ib, int oa,
                           int ob) {
  // logical input c = g*Ci + i reads logical dy channels g*Co + k
  gpw_rows_block<T>(dy, w, w, 0, dx, m, cout, cin, cout / groups, cin / groups, oa, ob, ia, ib);
}

// partial[chunk, i*Cout + c] = sum over the chunk's rows of x_logical[g*Ci + i] * dy_logical[c].
// Thread u (of the x-dimension of the grid) takes logical output c = u % Cout and the GPW_DW_TILE
// inputs i = (u / Cout)*GPW_DW_TILE + s, accumulating in registers. The block walks its chunk in
// steps of `rb` rows, staging whole rows of x and dy in logical order (coalesced reads), so every
// map runs the same accumulation loop: per row, one dy load (consecutive lanes, consecutive
// slots), GPW_DW_TILE x loads (a group's lanes share the slot: broadcast) and GPW_DW_TILE FMAs.
template <typename T>
__device__ void gpw_dweight(const T* __restrict__ x, const T* __restrict__ dy,
                            T* __restrict__ partial, gpw_i64 m, gpw_i64 rows_per_chunk, int rb,
                            int cin, int cout, int groups, int ia, int ib, int oa, int ob) {
  T* xt = reinterpret_cast<T*>(gpw_smem);
  const int xs = gpw_row_stride(cin), ds = gpw_row_stride(cout);
  T* dt = xt + rb * xs;
  const int ci = cin / groups, co = cout / groups;
  const int t = threadIdx.x, nt = blockDim.x;
  const int u = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = u < ((ci + GPW_DW_TILE - 1) / GPW_DW_TILE) * cout;
  const int c = active ? u % cout : 0;
  const int i0 = active ? (u / cout) * GPW_DW_TILE : 0;
  const int xbase = (c / co) * ci;
  int xslot[GPW_DW_TILE];
  for (int s = 0; s < GPW_DW_TILE; ++s) {
    xslot[s] = gpw_pad(xbase + (i0 + s < ci ? i0 + s : ci - 1));  // past Ci: any defined slot
  }
  const int dslot = gpw_pad(c);
  T acc[GPW_DW_TILE];
  for (int s = 0; s < GPW_DW_TILE; ++s) acc[s] = T(0);
  const gpw_i64 m0 = (gpw_i64)blockIdx.y * rows_per_chunk;
  const gpw_i64 m1 = gpw_min64(m, m0 + rows_per_chunk);
  for (gpw_i64 r0 = m0; r0 < m1; r0 += rb) {
    const int valid = (int)gpw_min64(rb, m1 - r0);
    __syncthreads();  // every thread is done with the previous rows
    gpw_stage<T>(xt, xs, x, r0, valid, valid, cin, ia, ib, t, nt);
    gpw_stage<T>(dt, ds, dy, r0, valid, valid, cout, oa, ob, t, nt);
    __syncthreads();
    for (int r = 0; r < valid; ++r) {
      const T d = dt[r * ds + dslot];
      const T* xr = xt + r * xs;
      for (int s = 0; s < GPW_DW_TILE; ++s) acc[s] += xr[xslot[s]] * d;
    }
  }
  if (!active) return;
  T* out = partial + (gpw_i64)blockIdx.y * ci * cout + c;
  for (int s = 0; s < GPW_DW_TILE; ++s) {
    if (i0 + s < ci) out[(gpw_i64)(i0 + s) * cout] = acc[s];
  }
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
  extern "C" __global__ void __launch_bounds__(GPW_DW_THREADS) gpw_dweight_##SUFFIX(          \
      const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partial, gpw_i64 m,   \
      gpw_i64 rows_per_chunk, int rb, int cin, int cout, int groups, int ia, int ib, int oa,   \
      int ob) {                                                                                \
    gpw_dweight<T>(x, dy, partial, m, rows_per_chunk, rb, cin, cout, groups, ia, ib, oa, ob);  \
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


def _threads(work: int, limit: int = MAX_THREADS) -> int:
    """Threads per block for ``work`` items per block: whole warps, at most ``limit``."""
    return min(limit, max(32, -(-work // 32) * 32))


def _row_stride(length: int) -> int:
    """Padded slots of a staged row of ``length`` (mirrors gpw_row_stride)."""
    return (length - 1) + ((length - 1) >> 5) + 1


def _staged_bytes(length: int, out_length: int, itemsize: int) -> int:
    """Shared memory of ``gpw_rows_block``: ``ROWS_PER_BLOCK`` staged input rows of ``length``
    and as many output rows of ``out_length``."""
    return ROWS_PER_BLOCK * (_row_stride(length) + _row_stride(out_length)) * itemsize


def _row_grid(m: int, name: str) -> tuple[int, int]:
    """Grid of ``gpw_forward``/``gpw_dinput`` over ``m`` rows: one block per ``ROWS_PER_BLOCK``
    rows. Every row offset in the kernels is 64-bit, so the one limit on ``m`` is CUDA's
    ``MAX_GRID_X`` blocks (``m <= 4 * (2**31 - 1)``, about 8.6e9 rows); past it the launch would
    fail with a bare CUDA 'invalid argument', so it is refused here."""
    blocks = -(-m // ROWS_PER_BLOCK)
    if blocks > MAX_GRID_X:
        raise ValueError(
            f"Expected at most {MAX_GRID_X * ROWS_PER_BLOCK} rows (the product of the leading "
            f"axes of {name}) for the fused kernels (CUDA's grid limit of {MAX_GRID_X} blocks "
            f"of {ROWS_PER_BLOCK} rows), received {m} rows"
        )
    return blocks, 1


def _maps(
    cin: int, cout: int, groups: int, interleave_input: bool, interleave_output: bool
) -> tuple[np.int32, ...]:
    return channel_map(cin, groups, "read" if interleave_input else "identity") + channel_map(
        cout, groups, "write" if interleave_output else "identity"
    )


def forward_weights(w: Any, groups: int, interleave_output: bool = False) -> Any:
    """The kernel as ``gpw_forward`` reads it: ``w (Ci, Cout)`` as is, whatever the maps (the
    kernels compute in logical channel order; ``groups`` and ``interleave_output`` are accepted
    for callers of the earlier layout and do not matter)."""
    return w


def dinput_weights(w: Any, groups: int, interleave_input: bool = False) -> Any:
    """The kernel as ``gpw_dinput`` reads it, ``(Co, Cin)``: ``[k, g*Ci + i] = W[g, i, k]`` by
    logical input channel, the same for every map (``interleave_input`` does not matter)."""
    xp = array_namespace(w)
    ci, cout = w.shape
    co = cout // groups
    wd = xp.permute_dims(xp.reshape(w, (ci, groups, co)), (2, 1, 0))  # (Co, G, Ci)
    return xp.reshape(wd, (co, groups * ci))


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
    """``y (M, Cout) = conv(x (M, Cin))`` with ``w (Ci, Cout)`` the kernel (``forward_weights``);
    ``bias (Cout,)`` (by logical channel) is read only when ``has_bias`` (pass any array of the
    dtype otherwise)."""
    m, cin = x.shape
    cout = y.shape[1]
    return Launch(
        f"gpw_forward_{_suffix(x.dtype)}",
        _row_grid(m, "x"),
        _threads(cout),
        _staged_bytes(cin, cout, x.dtype.itemsize),
        (x, w, bias, np.int32(has_bias), y, np.int64(m), np.int32(cin), np.int32(cout))
        + (np.int32(groups),)
        + _maps(cin, cout, groups, interleave_input, interleave_output),
    )


def dinput_launch(
    dy: Any, w: Any, dx: Any, groups: int, interleave_input: bool, interleave_output: bool
) -> Launch:
    """``dx (M, Cin)`` from ``dy (M, Cout)`` in the layouts the forward read and wrote, with
    ``w = dinput_weights(...)`` ``(Co, Cin)`` (by logical input channel)."""
    m, cout = dy.shape
    cin = dx.shape[1]
    return Launch(
        f"gpw_dinput_{_suffix(dy.dtype)}",
        _row_grid(m, "dy"),
        _threads(cin),
        _staged_bytes(cout, cin, dy.dtype.itemsize),
        (dy, w, dx, np.int64(m), np.int32(cin), np.int32(cout), np.int32(groups))
        + _maps(cin, cout, groups, interleave_input, interleave_output),
    )


def dweight_threads(cin: int, cout: int, groups: int) -> int:
    """Threads ``gpw_dweight`` runs per chunk of rows: one per output channel and tile of
    ``DW_TILE`` inputs."""
    return -(-(cin // groups) // DW_TILE) * cout


def dweight_chunks(
    m: int, weights: int, multiprocessors: int, threads: int | None = None
) -> tuple[int, int]:
    """``(chunks, rows_per_chunk)`` splitting ``m`` rows so that ``chunks * threads`` (threads
    per chunk, default ``weights``) about fill the device at ``DW_THREADS_PER_SM``, with at least
    ``MIN_ROWS_PER_CHUNK`` rows per chunk and at most ``PARTIAL_LIMIT`` partial sums; no chunk is
    empty."""
    threads = weights if threads is None else max(1, threads)
    target = max(1, -(-multiprocessors * DW_THREADS_PER_SM // threads))
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
    the kernel's ``(Ci, Cout)`` layout; ``partial.sum(0)`` is the weight gradient. A block stages
    ``rb`` rows of ``x`` and ``dy`` at a time, as many as fit in ``DEFAULT_SHARED_BYTES`` (at
    most ``DW_MAX_STAGE_ROWS``, at least one)."""
    m, cin = x.shape
    cout = dy.shape[1]
    chunks, _ = partial.shape
    units = dweight_threads(cin, cout, groups)
    blocks = -(-units // DW_MAX_THREADS)
    block = _threads(-(-units // blocks), DW_MAX_THREADS)
    row_bytes = (_row_stride(cin) + _row_stride(cout)) * x.dtype.itemsize
    rb = max(1, min(DW_MAX_STAGE_ROWS, DEFAULT_SHARED_BYTES // row_bytes, rows_per_chunk))
    return Launch(
        f"gpw_dweight_{_suffix(x.dtype)}",
        (blocks, chunks),
        block,
        rb * row_bytes,
        (x, dy, partial, np.int64(m), np.int64(rows_per_chunk), np.int32(rb), np.int32(cin))
        + (np.int32(cout), np.int32(groups))
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


def check_arrays(plan: Launch, device_id: int | None = None) -> None:
    """The plan's arrays as its kernel reads them: C-contiguous, of the dtype its name says
    (``_f32``/``_f64``), and, given ``device_id``, on that CUDA device: a kernel handed a pointer
    into another GPU's memory faults (and poisons the CUDA context) or, with peer access, reads
    across the link. ``ValueError``/``TypeError`` naming the argument's position otherwise."""
    dtype = next(d for d, suffix in DTYPE_SUFFIX.items() if plan.name.endswith(f"_{suffix}"))
    for i, a in enumerate(plan.args):
        if isinstance(a, (np.int32, np.int64)):
            continue
        where = f"argument {i} of the fused kernel {plan.name} (shape {tuple(a.shape)})"
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"Expected {where} to be {dtype}, received {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"Expected {where} to be C-contiguous, received strides {a.strides}")
        if device_id is not None and (on := a.device.id) != device_id:
            raise ValueError(
                f"Expected {where} on the current CUDA device {device_id}, received it on "
                f"device {on}: call the layer inside `with cupy.cuda.Device({on}):`, as CuPy's "
                "own operations need"
            )


def launch(plan: Launch) -> None:
    """Run ``plan`` on the current CUDA device and stream (compiling ``SOURCE`` on first use).
    Its arrays must be CuPy arrays: anything else (NumPy arrays handed to ``FusedKPointwise``,
    say) is refused with a ``TypeError`` before CuPy is imported; ``check_arrays`` checks the
    rest."""
    from array_api_compat import is_cupy_array

    for a in plan.args:
        if not isinstance(a, (np.int32, np.int64)) and not is_cupy_array(a):
            raise TypeError(
                f"Expected CuPy arrays on a CUDA device for the fused kernel {plan.name}, "
                f"received {type(a).__module__}.{type(a).__name__} (the CPU runs core's "
                "GroupedPointwise/KPointwise instead)"
            )
    import cupy

    device_id = cupy.cuda.Device().id
    check_arrays(plan, device_id)
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
