"""``gpconv.perf.machine``: the facts stamped on run summaries and bench JSON. /proc/cpuinfo and
the load average are faked; the affinity test runs in a subprocess (affinity is per process)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpconv.perf import allocator, machine

# As Linux x86 lists it: "model" (a number) comes before "model name" (the text wanted).
CPUINFO = (
    "processor\t: 0\n"
    "vendor_id\t: AuthenticAMD\n"
    "cpu family\t: 25\n"
    "model\t\t: 1\n"
    "model name\t: AMD EPYC 7B13 64-Core Processor\n"
    "stepping\t: 0\n"
)


def test_cpu_name_is_the_model_name_line_trimmed(monkeypatch) -> None:
    """Not the "model : 1" line that precedes it, and without the line's newline or padding."""
    monkeypatch.setattr(machine, "open", lambda *a, **k: io.StringIO(CPUINFO), raising=False)
    assert machine.cpu_name() == "AMD EPYC 7B13 64-Core Processor"


AFFINITY = """
import json, os
from gpconv.perf import machine
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(json.dumps([machine.cpu_count(), machine.describe()["cpus"]]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_cpus_are_those_of_the_affinity_mask_not_the_host() -> None:
    """A process pinned to one CPU (``taskset -c 0``) may use 1 CPU whatever the host has: both
    cpu_count() and describe()["cpus"] say 1 (run in a subprocess: affinity is per process)."""
    out = subprocess.run(
        [sys.executable, "-c", AFFINITY], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [1, 1]


def test_versions_leave_out_packages_that_are_not_installed() -> None:
    assert machine.versions("numpy", "no-such-package-gpconv-xyz") == {"numpy": np.__version__}


def test_describe_records_the_1_minute_load_and_this_process_malloc(monkeypatch) -> None:
    """``load_average_1m`` is the first of getloadavg()'s (1, 5, 15)-minute figures, to two
    decimals; ``malloc`` is allocator.current(), whatever this process set."""
    monkeypatch.setattr(os, "getloadavg", lambda: (1.234, 5.678, 9.876))
    monkeypatch.setattr(allocator, "_applied", "glibc 9.9 malloc, freed memory kept (test)")
    info = machine.describe()
    assert info["load_average_1m"] == 1.23
    assert info["malloc"] == "glibc 9.9 malloc, freed memory kept (test)"
