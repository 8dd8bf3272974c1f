"""``gpconv.perf.allocator``: with freed memory kept, re-allocating a large array stops faulting
in fresh pages, and the process reports what was done. The real setting is process-wide, so it
is checked in subprocesses; the exact mallopt calls are checked on a private copy of the module
handed a fake C library (tests/conftest.py replaces the module's function in this process)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import subprocess
import sys

import pytest
from helpers import GLIBC

from gpconv.cli.main import main
from gpconv.perf import allocator

# malloc, touch and free 64 MiB (above glibc's largest mmap threshold) a few times, as a framework
# does with an activation; print the page faults of the last rounds and the module's report, as
# returned, as current() and as machine.describe() (what summary.json and bench JSON record).
# (Plain malloc: NumPy would ask for huge pages and fault 2 MiB at a time. And no transparent
# huge pages for the process: a host with THP "always" would fault 2 MiB at a time too.)
PROBE = """
import ctypes, json, resource, sys
from gpconv.perf import allocator, machine
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
report = {"current": allocator.current(), "described": machine.describe()["malloc"]}
print(json.dumps({"desc": desc, "faults": faults[1:], **report}))
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
    for run in (default, kept):
        assert run["desc"] == run["current"] == run["described"], run
    assert default["desc"] == "system malloc (unchanged)"
    assert all(f >= PAGES // 2 for f in default["faults"]), default  # every round faults it in
    # the version decoded as text ("glibc 2.36", not "glibc b'2.36'")
    assert re.fullmatch(r"glibc \d+\.\d+ malloc, freed memory kept \(.*\)", kept["desc"]), kept
    assert all(f < PAGES // 20 for f in kept["faults"]), kept  # reused from the heap


def test_cli_commands_keep_freed_memory_unless_told_not_to(malloc_calls, capsys):
    tiny = ["--backend", "numpy", "--op", "pointwise", "--steps", "1", "--warmup", "0"]
    tiny += ["--image-size", "8", "--batch-size", "1"]
    assert main(["bench", *tiny, "--no-keep-freed-memory"]) == 0
    assert malloc_calls == [] and "system malloc (unchanged)" in capsys.readouterr().out
    assert main(["bench", *tiny]) == 0
    assert malloc_calls == ["keep_freed_memory"]


# glibc <malloc.h>: M_TRIM_THRESHOLD is -1, M_MMAP_MAX is -4; mallopt takes a C int (INT_MAX).
GLIBC_M_TRIM_THRESHOLD, GLIBC_M_MMAP_MAX, INT_MAX = -1, -4, 2**31 - 1


def _fresh_allocator():
    """A private copy of the module (its own ``_applied`` record, the real function)."""
    spec = importlib.util.spec_from_file_location("_allocator_copy", allocator.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeLibc:
    """glibc's two entry points the module uses; ``refuse`` lists mallopt params that fail."""

    def __init__(self, refuse=(), glibc: bool = True) -> None:
        self.calls: list[tuple[int, int]] = []
        self.refuse = set(refuse)
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.99"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 0 if param in self.refuse else 1


def _with_libc(monkeypatch, libc: _FakeLibc):
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *a, **k: libc)
    return _fresh_allocator()


def test_the_settings_are_no_mmap_and_the_largest_trim_threshold(monkeypatch) -> None:
    """The docstring's settings, by glibc's numbers: ``mallopt(M_MMAP_MAX=-4, 0)`` and
    ``mallopt(M_TRIM_THRESHOLD=-1, INT_MAX)``; the report names the library version."""
    libc = _FakeLibc()
    module = _with_libc(monkeypatch, libc)
    desc = module.keep_freed_memory()
    assert sorted(libc.calls) == sorted([(GLIBC_M_MMAP_MAX, 0), (GLIBC_M_TRIM_THRESHOLD, INT_MAX)])
    assert desc.startswith("glibc 2.99 malloc, freed memory kept"), desc
    assert module.current() == desc


@pytest.mark.parametrize("refused", [GLIBC_M_MMAP_MAX, GLIBC_M_TRIM_THRESHOLD])
def test_a_refused_setting_is_reported_as_unchanged(monkeypatch, refused: int) -> None:
    """If glibc refuses either mallopt, the report (and current()) must not claim that freed
    memory is kept."""
    module = _with_libc(monkeypatch, _FakeLibc(refuse={refused}))
    desc = module.keep_freed_memory()
    assert "unchanged" in desc and "freed memory kept" not in desc, desc
    assert module.current() == desc


def test_without_glibc_nothing_is_set_and_current_says_why(monkeypatch) -> None:
    """A C library without ``gnu_get_libc_version`` (musl, macOS) is left alone: no mallopt
    call, and both the return value and current() say "not glibc" (not the plain default)."""
    libc = _FakeLibc(glibc=False)
    module = _with_libc(monkeypatch, libc)
    assert module.current() == "system malloc (unchanged)"
    desc = module.keep_freed_memory()
    assert libc.calls == [] and "not glibc" in desc, desc
    assert module.current() == desc
