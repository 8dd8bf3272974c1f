"""Run the CUDA source of ``gpconv.backends.cupy.kernels`` on the CPU, unchanged.

g++ compiles ``kernels.SOURCE`` behind a shim that turns the CUDA keywords into C++
(``__global__``/``__device__``/``__launch_bounds__`` vanish, ``__ldg(p)`` is ``*p``,
``extern __shared__`` is one host buffer) and a driver that emulates a launch: blocks run one
after another, the threads of a block are real threads and ``__syncthreads`` is a barrier among
them. ``launch(plan)`` takes the very ``kernels.Launch`` that CuPy would get, so the plan's grid,
block, shared-memory size and argument list — checked against the kernel's C signature, scalar
widths included — are exercised as well as the index math.

Poisoning: the shared buffer is filled with NaN before each block, so a read of a slot the block
did not stage shows up as NaN in the result, and a block that writes past the plan's
``shared_mem`` bytes is an error (the plan under-sized the kernel's shared memory).

What a GPU would refuse is refused too: every global read (``__ldg``, the kernels' only way of
reading global memory) must fall inside one of the launch's arrays (a row past the end read into
rows that are never written leaves the results alone, so the NaN guards cannot see it), and the
launch must respect CUDA's limits (``gridDim.x`` 1..2**31-1, ``gridDim.y`` 1..65535, at most 1024
threads per block, and no more than the kernel's ``__launch_bounds__``).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gpconv.backends.cupy import kernels

SHARED_BYTES = 1 << 16

SHIM = r"""
#include <cstddef>
struct gpw_dim3 { unsigned x, y, z; };
extern thread_local gpw_dim3 threadIdx;
extern gpw_dim3 blockIdx, blockDim, gridDim;
void __syncthreads();
void gpw_check_read(const void* p, std::size_t bytes);
template <typename T> inline T __ldg(const T* p) {
  gpw_check_read(p, sizeof(T));
  return *p;
}
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)
"""

DRIVER = r"""
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#include <pthread.h>

thread_local gpw_dim3 threadIdx;
gpw_dim3 blockIdx, blockDim, gridDim;
double gpw_smem[SHARED_BYTES / sizeof(double)];
static pthread_barrier_t gpw_barrier;
void __syncthreads() { pthread_barrier_wait(&gpw_barrier); }

// The launch's arguments (address, bytes; 0 bytes for scalars) that __ldg may read.
static const std::uint64_t* gpw_raw;
static const std::uint64_t* gpw_bytes;
static std::size_t gpw_nargs;
static std::atomic<bool> gpw_bad_read;
void gpw_check_read(const void* p, std::size_t bytes) {
  const std::uint64_t a = reinterpret_cast<std::uintptr_t>(p);
  for (std::size_t i = 0; i < gpw_nargs; ++i) {
    if (gpw_bytes[i] && a >= gpw_raw[i] && a + bytes <= gpw_raw[i] + gpw_bytes[i]) return;
  }
  gpw_bad_read = true;
}

// Kind of a kernel parameter as the Python side names its arguments: p pointer, i 4-byte int,
// q 8-byte int.
template <typename A> constexpr char gpw_kind() {
  return std::is_pointer<A>::value ? 'p' : (sizeof(A) == 8 ? 'q' : 'i');
}

template <typename A> A gpw_arg(std::uint64_t raw) {
  if constexpr (std::is_pointer<A>::value) {
    return reinterpret_cast<A>(static_cast<std::uintptr_t>(raw));
  } else {
    return static_cast<A>(raw);
  }
}

template <typename... A, std::size_t... I>
void gpw_call(void (*kernel)(A...), const std::uint64_t* raw, std::index_sequence<I...>) {
  kernel(gpw_arg<A>(raw[I])...);
}

// 0 ok; 1 argument kinds differ from the kernel's signature; 2 more shared memory planned than
// the buffer holds; 4 a block wrote shared memory past the planned size; 5 a global read outside
// every argument array; 6 a grid or block CUDA would refuse.
template <typename... A>
int gpw_run(void (*kernel)(A...), const char* kinds, unsigned gx, unsigned gy, unsigned bx,
            std::size_t shared, const std::uint64_t* raw, const std::uint64_t* bytes) {
  const char expected[] = {gpw_kind<A>()..., '\0'};
  if (std::strcmp(expected, kinds) != 0) return 1;
  if (shared > sizeof gpw_smem) return 2;
  if (gx < 1 || gx > 2147483647u || gy < 1 || gy > 65535 || bx < 1 || bx > 1024) return 6;
  gpw_raw = raw;
  gpw_bytes = bytes;
  gpw_nargs = sizeof...(A);
  gpw_bad_read = false;
  gridDim = {gx, gy, 1};
  blockDim = {bx, 1, 1};
  pthread_barrier_init(&gpw_barrier, nullptr, bx);
  for (unsigned y = 0; y < gy; ++y) {
    for (unsigned x = 0; x < gx; ++x) {
      blockIdx = {x, y, 0};
      std::memset(gpw_smem, 0xff, sizeof gpw_smem);  // all-ones bytes: NaN in float and double
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < bx; ++t) {
        threads.emplace_back([=] {
          threadIdx = {t, 0, 0};
          gpw_call(kernel, raw, std::index_sequence_for<A...>{});
        });
      }
      for (auto& thread : threads) thread.join();
      // Shared memory past the planned size must still be untouched.
      const unsigned char* smem = reinterpret_cast<const unsigned char*>(gpw_smem);
      for (std::size_t i = shared; i < sizeof gpw_smem; ++i) {
        if (smem[i] != 0xff) {
          pthread_barrier_destroy(&gpw_barrier);
          return 4;
        }
      }
    }
  }
  pthread_barrier_destroy(&gpw_barrier);
  return gpw_bad_read ? 5 : 0;
}

// Kernel `signature(name)`: its parameter kinds, for error messages.
template <typename... A> const char* gpw_signature(void (*)(A...)) {
  static const char kinds[] = {gpw_kind<A>()..., '\0'};
  return kinds;
}
"""


def _dispatch() -> str:
    """``gpw_emulate`` and ``gpw_kinds``: look a kernel up by name (every ``KERNEL_NAMES``)."""
    runs = "\n".join(
        f'  if (!std::strcmp(name, "{k}"))\n'
        f"    return gpw_run(&{k}, kinds, gx, gy, bx, shared, raw, bytes);"
        for k in kernels.KERNEL_NAMES
    )
    sigs = "\n".join(
        f'  if (!std::strcmp(name, "{k}")) return gpw_signature(&{k});'
        for k in kernels.KERNEL_NAMES
    )
    return (
        'extern "C" int gpw_emulate(const char* name, const char* kinds, unsigned gx, unsigned gy,'
        " unsigned bx, std::size_t shared, const std::uint64_t* raw, const std::uint64_t* bytes)"
        " {\n"
        f"{runs}\n  return 3;\n}}\n"
        'extern "C" const char* gpw_kinds(const char* name) {\n'
        f'{sigs}\n  return "";\n}}\n'
    )


def compile_library(workdir: Path, source: str = kernels.SOURCE) -> ctypes.CDLL:
    """Build the emulator of ``source`` (default: ``kernels.SOURCE``) with g++ into ``workdir``
    and load it."""
    src = workdir / "emulator.cpp"
    src.write_text(SHIM + f"#define SHARED_BYTES {SHARED_BYTES}\n" + source + DRIVER + _dispatch())
    lib = workdir / "libgpw_emulator.so"
    cmd = ["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", *kernels.DEFINES]
    result = subprocess.run(
        [*cmd, "-o", str(lib), str(src)], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"g++ failed on the kernel source:\n{result.stderr}")
    dll = ctypes.CDLL(str(lib))
    dll.gpw_emulate.restype = ctypes.c_int
    dll.gpw_emulate.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_uint64),
    ]
    dll.gpw_kinds.restype = ctypes.c_char_p
    dll.gpw_kinds.argtypes = [ctypes.c_char_p]
    return dll


def launch_bounds(source: str = kernels.SOURCE) -> dict[str, int]:
    """``{kernel name: maxThreadsPerBlock}`` of every kernel ``source`` declares with
    ``__launch_bounds__`` (a macro argument resolved through ``kernels.DEFINES``, then the
    source's own ``#define``); CUDA refuses to launch a bigger block."""
    defines = dict(re.findall(r"#define (\w+) (\d+)", source))
    defines.update(d[2:].split("=", 1) for d in kernels.DEFINES)
    bounds = {}
    for value, stem in re.findall(r"__launch_bounds__\((\w+)\)\s+(\w+?)_##SUFFIX", source):
        for name in kernels.KERNEL_NAMES:
            if name.rsplit("_", 1)[0] == stem:
                bounds[name] = int(defines.get(value, value))
    return bounds


def _kind(a: Any) -> str:
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError(f"kernel argument of shape {a.shape} is not C-contiguous")
        return "p"
    if isinstance(a, np.int32):
        return "i"
    if isinstance(a, np.int64):
        return "q"
    # A Python int would reach CuPy with a width of its choosing: plans must not contain one.
    raise TypeError(f"kernel argument {a!r} of type {type(a).__name__} is not a sized scalar")


class Emulator:
    """``launch(plan)`` runs a ``kernels.Launch`` on NumPy arrays; a drop-in for
    ``kernels.launch``. Build it once (g++ takes about a second); ``source`` may be a modified
    copy of ``kernels.SOURCE`` (mutation tests)."""

    def __init__(self, source: str = kernels.SOURCE) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="gpw-emulator-")
        self.lib = compile_library(Path(self._dir.name), source)
        self.bounds = launch_bounds(source)

    def signature(self, name: str) -> str:
        return self.lib.gpw_kinds(name.encode()).decode()

    def launch(self, plan: kernels.Launch) -> None:
        kernels.check_arrays(plan)  # what the real launch checks, bar the CUDA device
        kinds = "".join(_kind(a) for a in plan.args)
        raw = (ctypes.c_uint64 * len(plan.args))(
            *(a.ctypes.data if isinstance(a, np.ndarray) else int(a) % 2**64 for a in plan.args)
        )
        nbytes = (ctypes.c_uint64 * len(plan.args))(
            *(a.nbytes if isinstance(a, np.ndarray) else 0 for a in plan.args)
        )
        bound = self.bounds.get(plan.name)
        if bound is not None and plan.block > bound:
            raise RuntimeError(
                f"{plan.name}: a block of {plan.block} threads, above the kernel's "
                f"__launch_bounds__({bound}) (CUDA refuses the launch)"
            )
        gx, gy = plan.grid
        rc = self.lib.gpw_emulate(
            plan.name.encode(), kinds.encode(), gx, gy, plan.block, plan.shared_mem, raw, nbytes
        )
        if rc == 1:
            raise TypeError(
                f"{plan.name}: arguments {kinds!r} do not match its signature "
                f"{self.signature(plan.name)!r} (p pointer, i int, q long long)"
            )
        if rc == 4:
            raise RuntimeError(
                f"{plan.name}: a block wrote shared memory past the planned {plan.shared_mem} bytes"
            )
        if rc == 5:
            raise RuntimeError(f"{plan.name}: a global read outside every argument array")
        if rc == 6:
            raise RuntimeError(
                f"{plan.name}: grid {plan.grid} and block {plan.block} outside CUDA's limits "
                "(gridDim.x 1..2**31-1, gridDim.y 1..65535, 1..1024 threads per block)"
            )
        if rc:
            raise RuntimeError(f"{plan.name}: emulator error {rc} (shared_mem={plan.shared_mem})")

    def close(self) -> None:
        self._dir.cleanup()


def have_gxx() -> bool:
    return shutil.which("g++") is not None
