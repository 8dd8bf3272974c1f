"""Timing by wall or CPU clock (``CLOCKS``): warm-up calls (tracing, allocator, caches), then
the median of ``steps``; several candidates are timed round-robin so that they share the
machine's good and bad minutes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core._validate import require_positive_int

K = TypeVar("K", bound=Hashable)  # whatever names the candidates

# The clocks a benchmark can time with: elapsed time, or this process's CPU time (steadier on a
# shared machine, but blind to time spent waiting and to other processes' threads).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass(frozen=True)
class Timing:
    """Seconds per call: ``median`` (reported), ``best``, and every measured ``samples``."""

    median: float
    best: float
    samples: tuple[float, ...]

    @property
    def ms(self) -> float:
        return self.median * 1e3

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median * 1e3,
            "best_ms": self.best * 1e3,
            "samples_ms": [s * 1e3 for s in self.samples],
        }


def time_round_robin(
    fns: Mapping[K, Callable[[], Any]],
    steps: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[K, Timing]:
    """``{name: Timing}`` for every function, measured in rounds: ``warmup`` untimed calls of each,
    then ``steps`` rounds that call and time each function once, in order.

    Timing the candidates of one comparison in the same rounds means that a slow minute on a
    shared machine (load from other processes, clock drift) hits all of them alike, so their
    *ratios* stay meaningful even when absolute times drift. ``clock`` is wall time by default;
    ``time.process_time`` (CPU time of this process) is steadier under load. Each ``fn`` must
    block until its work is done (return host values, not pending device work)."""
    steps = require_positive_int("steps", steps)
    warmup = require_positive_int("warmup", warmup, minimum=0)
    if not fns:
        raise ValueError("Expected at least one function to time, received fns={}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[K, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return {name: Timing(statistics.median(s), min(s), tuple(s)) for name, s in samples.items()}


def limit_blas_threads(threads: int) -> str:
    """Limit NumPy's BLAS to ``threads`` (threadpoolctl, when installed; 0 keeps the default).

    Returns a description for reports. On a shared CPU, one thread avoids OpenBLAS workers
    spinning on the many small per-group products of a grouped conv."""
    threads = require_positive_int("threads", threads, minimum=0)
    if not threads:
        return "BLAS default threads"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "BLAS default threads (threadpoolctl not installed)"
    threadpool_limits(threads)
    return f"{threads} BLAS thread(s)"
