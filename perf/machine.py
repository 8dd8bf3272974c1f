"""A short description of the machine and software, stamped on run summaries and bench results."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from typing import Any

from . import allocator


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (absent ones are left out)."""
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def describe() -> dict[str, Any]:
    """``{"date", "cpu", "cpus", "platform", "python", "load_average_1m", "malloc",
    "versions"}``; ``malloc`` says whether ``perf.allocator`` changed this process's malloc."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpus": cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Other jobs on a shared machine slow every measurement; record how busy it was.
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "malloc": allocator.current(),
        "versions": versions(
            "gpconv", "numpy", "torch", "tensorflow", "tensorflow-cpu", "keras", "cupy-cuda13x"
        ),
    }


def one_line(info: dict[str, Any] | None = None) -> str:
    """``"2-CPU AMD EPYC"``: CPUs usable by this process and their model, for headers."""
    info = info or describe()
    return f"{info['cpus']}-CPU {info['cpu']}"
