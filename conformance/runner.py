"""Run the conformance suite over backends and collect one ``Report``."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..backends import get, names
from ..backends.base import Backend
from .checks import run_backend_checks
from .golden import check_golden
from .results import CheckResult
from .selfcheck import run_selfcheck


@dataclass
class Report:
    """Every row of one ``gpconv check`` run, plus what was asked for."""

    rows: list[CheckResult] = field(default_factory=list)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "quick"
    seed: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed or r.status == "not installed" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gpconv-check/1",
            "version": __version__,
            "mode": self.mode,
            "seed": self.seed,
            "seconds": round(self.seconds, 2),
            "passed": self.passed,
            "backends": self.backends,
            "results": [r.to_dict() for r in self.rows],
        }


def resolve(name: str) -> Backend:
    """A registered backend name, or ``package.module:ATTRIBUTE`` naming a ``Backend`` instance."""
    if ":" in name and name not in names():
        module, attr = name.split(":", 1)
        backend = getattr(importlib.import_module(module), attr)
        if not isinstance(backend, Backend):
            raise ValueError(
                f"Expected {name} to be a gpconv.backends.base.Backend, "
                f"received {type(backend).__name__}"
            )
        return backend
    return get(name)


def default_backends() -> list[str]:
    """Every registered backend (those not installed are reported as such)."""
    return names()


def run(backend_names: list[str] | None = None, full: bool = False, seed: int = 0) -> Report:
    """Check each backend; ``numpy`` (the reference) gets the finite-difference self-check and the
    golden files, every other backend the live comparisons and the golden files."""
    start = time.perf_counter()
    report = Report(mode="full" if full else "quick", seed=seed)
    for name in backend_names or default_backends():
        backend = resolve(name)
        label = backend.name or name
        if not backend.is_available():
            report.backends[label] = {
                "status": "not installed",
                "hint": backend.install_hint,
                "requested": name,
            }
            report.rows.append(
                CheckResult(
                    label,
                    "installed",
                    "-",
                    backend.install_hint,
                    float("nan"),
                    float("nan"),
                    "not installed",
                    f"not installed — {backend.install_hint}",
                )
            )
            continue
        t0 = time.perf_counter()
        if label == "numpy":
            report.rows += run_selfcheck(seed, full)
        else:
            report.rows += list(run_backend_checks(backend, seed, full))
        report.rows += check_golden(backend)
        report.backends[label] = {
            "status": "checked",
            "requested": name,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    report.seconds = time.perf_counter() - start
    return report
