"""Wall-clock timing: warm-up calls (tracing, allocator, caches), then the median of ``steps``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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


def time_call(fn: Callable[[], Any], steps: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``steps`` times timed. ``fn`` must block until
    its work is done (return host values, not pending device work)."""
    if steps < 1:
        raise ValueError(f"Expected steps >= 1, received steps={steps}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), tuple(samples))


def limit_blas_threads(threads: int) -> str:
    """Limit NumPy's BLAS to ``threads`` (threadpoolctl, when installed; 0 keeps the default).

    Returns a description for reports. On a shared CPU, one thread avoids OpenBLAS workers
    spinning on the many small per-group products of a grouped conv."""
    if not threads:
        return "BLAS default threads"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "BLAS default threads (threadpoolctl not installed)"
    threadpool_limits(threads)
    return f"{threads} BLAS thread(s)"
