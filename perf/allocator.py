"""Keep freed memory in the process (glibc malloc), so that large tensors stop faulting in pages.

CPU frameworks (PyTorch, TensorFlow, NumPy) take activations from ``malloc``. glibc serves a
large block with a fresh ``mmap`` (always above 32 MiB) and hands freed memory at the top of
the heap back to the kernel, so a pass that frees and re-allocates its activations faults every
page in again, each one zeroed by the kernel first. Measured on the 2-core CPU at batch 32,
32×32: 36–172 thousand page faults per torch EfficientNet-B0 forward pass and up to 44 thousand
per kEffNet-B0 train step, about none with the settings below. In two A/B runs of ``gpconv bench
--threads 1`` torch's forward passes ran 1.3–1.6× faster with them (EfficientNet-B0 48.7 → 62.8
and 38.7 → 61.8 images/s); train steps, and TensorFlow, moved within the noise.

``keep_freed_memory()`` sets ``M_MMAP_MAX=0`` (large blocks come from the heap as well) and the
largest ``M_TRIM_THRESHOLD`` (freed memory stays in the heap for the next step): the in-process
equivalent of preloading jemalloc or tcmalloc, which PyTorch's CPU performance guide recommends.
The cost is that the process keeps its peak heap until it exits. ``gpconv train`` and ``gpconv
bench`` call it (``--no-keep-freed-memory`` opts out); importing gpconv never does.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes a C int
UNCHANGED = "system malloc (unchanged)"
_applied = UNCHANGED  # what this process did: the setting is process-wide, so is the record


def keep_freed_memory() -> str:
    """Apply the glibc settings above to this process; returns what was done (also
    ``current()``). A no-op, saying why, where the C library is not glibc."""
    global _applied
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = "system malloc (unchanged: not glibc)"
        return _applied
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX) != 1:
        _applied = f"glibc {version} malloc (unchanged: mallopt refused)"
    else:
        _applied = f"glibc {version} malloc, freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=max)"
    return _applied


def current() -> str:
    """How this process's malloc is set up, for run reports (``perf.machine.describe``)."""
    return _applied
