"""``gpconv.perf.allocator``: with freed memory kept, re-allocating a large array stops faulting
in fresh pages. Checked in subprocesses because the setting is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import GLIBC

from gpconv.cli.main import main

# malloc, touch and free 64 MiB (above glibc's largest mmap threshold) a few times, as a framework
# does with an activation; print the page faults of the last rounds and the module's report.
# (Plain malloc: NumPy would ask for huge pages and fault 2 MiB at a time. And no transparent
# huge pages for the process: a host with THP "always" would fault 2 MiB at a time too.)
PROBE = """
import ctypes, json, resource, sys
from gpconv.perf import allocator
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_THP_DISABLE = 41
libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)  # Linux >= 3.15
desc = allocator.keep_freed_memory() if sys.argv[1] == "keep" else allocator.current()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 * 2**20)
    ctypes.memset(block, 1, 64 * 2**20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"desc": desc, "faults": faults[1:]}))
"""
PAGES = 64 * 2**20 // 4096


def probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(
    not GLIBC,
    reason="the setting is glibc's mallopt; elsewhere keep_freed_memory() only reports",
)


@glibc_only
def test_kept_freed_memory_stops_page_faults_on_reallocation():
    default, kept = probe("default"), probe("keep")
    assert default["desc"] == "system malloc (unchanged)"
    assert all(f >= PAGES // 2 for f in default["faults"]), default  # every round faults it in
    assert kept["desc"].startswith("glibc ") and "freed memory kept" in kept["desc"], kept
    assert all(f < PAGES // 20 for f in kept["faults"]), kept  # reused from the heap


def test_cli_commands_keep_freed_memory_unless_told_not_to(malloc_calls, capsys):
    tiny = ["--backend", "numpy", "--op", "pointwise", "--steps", "1", "--warmup", "0"]
    tiny += ["--image-size", "8", "--batch-size", "1"]
    assert main(["bench", *tiny, "--no-keep-freed-memory"]) == 0
    assert malloc_calls == [] and "system malloc (unchanged)" in capsys.readouterr().out
    assert main(["bench", *tiny]) == 0
    assert malloc_calls == ["keep_freed_memory"]
