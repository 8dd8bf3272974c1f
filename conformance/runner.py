"""Run the conformance suite over backends and collect one ``Report``."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import __version__
from ..backends import get, names
from ..backends.base import Backend, require
from .checks import run_backend_checks
from .golden import check_golden
from .results import NOT_CHECKED, NOT_INSTALLED, UNCHECKED, CheckResult
from .selfcheck import run_selfcheck

REFERENCE = "numpy"  # the registry name of the reference backend (checks itself)


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
        """Every check that ran passed. A "not installed" or "not checked" row records a backend
        that was not checked: only the default run has such rows (``select`` refuses a missing
        backend, or one without the implementation asked for, named with ``--backend``), and
        they fail nothing."""
        return all(r.passed for r in self.rows if r.status not in UNCHECKED)

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
    """A registered backend name, or ``package.module:ATTRIBUTE`` naming a ``Backend`` instance.
    Raises ``ValueError`` for an unknown name, ``ImportError`` or ``AttributeError`` when
    ``module:ATTRIBUTE`` does not resolve."""
    if ":" in name and name not in names():
        module, attr = name.split(":", 1)
        try:
            found = importlib.import_module(module)
        except ImportError as err:
            hint = _path_hint(module, err)
            raise ImportError(
                f"backend {name!r}: cannot import module {module!r} ({err}){hint}"
            ) from err
        try:
            backend = getattr(found, attr)
        except AttributeError as err:
            raise AttributeError(f"backend {name!r}: module {module!r} has no {attr!r}") from err
        if isinstance(backend, type) and issubclass(backend, Backend):
            # The interface methods are instance methods: a class is the most likely slip.
            raise ValueError(
                f"Expected {name} to be a gpconv.backends.base.Backend instance, received the "
                f"class {backend.__name__}: name an instance, e.g. BACKEND = {backend.__name__}()"
            )
        if not isinstance(backend, Backend):
            raise ValueError(
                f"Expected {name} to be a gpconv.backends.base.Backend, "
                f"received {type(backend).__name__}"
            )
        if not isinstance(backend.name, str) or not backend.name:
            # Its rows and its report entry are labelled with it: nameless rows cannot be told
            # apart or joined to their entry.
            raise ValueError(
                f'Expected {name} to have a name (set Backend.name, e.g. name = "myfw"), '
                f"received name={backend.name!r}"
            )
        return backend
    return get(name)


def _path_hint(module: str, err: ImportError) -> str:
    """How to make ``module`` importable, when it is ``module`` (or a package above it) that was
    not found rather than something it imports: the ``gpconv`` script, unlike ``python -m``, does
    not look in the current folder, so an adapter written there is not found."""
    missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
    if not missing or not (module == missing or module.startswith(missing + ".")):
        return ""
    return (
        f"; install the package that provides {missing!r}, or add the folder that holds it to "
        "PYTHONPATH (the gpconv command does not look in the current folder)"
    )


def default_backends() -> list[str]:
    """Every registered backend (those not installed are reported as such)."""
    return names()


class Selected(NamedTuple):
    """One backend to check: the name it was requested by, its adapter (with the implementation
    to check), and why it is not checked after all (empty when it is)."""

    name: str
    backend: Backend
    skip: str = ""


def select(
    backend_names: list[str] | None = None, impls: list[str] | None = None
) -> list[Selected]:
    """Each backend to check: ``backend_names``, or by default every registered backend; with
    ``impls``, each backend once per implementation it has among them (``with_impl``;
    ``"all"``: every one), see ``with_impls``.

    Every name is resolved, and every backend asked for by name must be installed (else
    ``ImportError`` with the pip command), before anything runs: a typo or a missing framework
    in the last ``--backend`` must not surface only after minutes of checks of the first, nor a
    check of nothing read as a pass. Only the default run lists missing frameworks as not
    installed, and backends without any of ``impls`` as not checked."""
    explicit = bool(backend_names)
    unique = list(dict.fromkeys(backend_names or default_backends()))  # each checked once
    selected = [Selected(name, resolve(name)) for name in unique]
    if impls:
        selected = with_impls(selected, list(dict.fromkeys(impls)), explicit)
    labels: dict[str, str] = {}
    for name, backend, _ in selected:
        label = backend.name or name
        if label in labels:  # their rows and report entries would merge into one
            raise ValueError(
                f"Expected backends with distinct names, received {labels[label]!r} and "
                f"{name!r}, both named {label!r}"
            )
        labels[label] = name
    if explicit:
        for _, backend, _ in selected:
            require(backend)
    return selected


def with_impls(selected: list[Selected], impls: list[str], explicit: bool) -> list[Selected]:
    """Each backend of ``selected`` once per implementation of ``impls`` (``"all"``: every one
    of its ``impls``) that it has; a backend with a single implementation (no ``impls``, as the
    reference) stays as it is, and so does one that is not installed (one "not installed" row,
    not one per impl). One that has implementations but none of ``impls`` is kept as not
    checked (its reason in ``skip``) when it came from the default list; named explicitly, it
    is a ``ValueError``, as is an impl that no selected backend has."""
    everything = "all" in impls
    unknown = [i for i in impls if i != "all" and not any(i in s.backend.impls for s in selected)]
    if unknown:
        offered = "; ".join(
            f"{s.backend.name}: {', '.join(s.backend.impls)}" for s in selected if s.backend.impls
        )
        raise ValueError(
            f"Expected --impl all or an implementation of a selected backend "
            f"({offered or 'none has a choice'}), received --impl {unknown[0]}"
        )
    out = []
    for name, backend, _ in selected:
        if not backend.impls or not backend.is_available():
            out.append(Selected(name, backend))
            continue
        wanted = backend.impls if everything else [i for i in impls if i in backend.impls]
        if not wanted:
            lacks = (
                f"backend {backend.name!r} has no implementation {' or '.join(impls)} "
                f"(it has {', '.join(backend.impls)})"
            )
            if explicit:
                raise ValueError(
                    f"Expected an implementation of backend {backend.name!r} "
                    f"({', '.join(backend.impls)}), received --impl {' --impl '.join(impls)}"
                )
            out.append(Selected(name, backend, lacks))
            continue
        out += [Selected(name, backend.with_impl(i)) for i in wanted]
    return out


def run(
    backend_names: list[str] | None = None,
    full: bool = False,
    seed: int = 0,
    impls: list[str] | None = None,
) -> Report:
    """Check each backend (see ``select``: ``impls`` checks those implementations of each);
    ``numpy`` (the reference) gets the finite-difference self-check and the golden files, every
    other backend the live comparisons and the golden files. Raises ``ValueError``,
    ``ImportError`` or ``AttributeError`` for a requested backend or implementation that does
    not resolve or is not installed, before any check runs."""
    start = time.perf_counter()
    selected = select(backend_names, impls)
    report = Report(mode="full" if full else "quick", seed=seed)
    for name, backend, skip in selected:
        label = backend.name or name
        if skip or not backend.is_available():
            status, why = (NOT_CHECKED, skip) if skip else (NOT_INSTALLED, backend.install_hint)
            report.backends[label] = {
                "status": status,
                "hint" if status == NOT_INSTALLED else "reason": why,
                "requested": name,
                # A backend skipped for --impl ran no implementation: its default is not named.
                **({"impl": backend.impl} if backend.impls and not skip else {}),
            }
            check = "installed" if status == NOT_INSTALLED else "implementation"
            report.rows.append(
                CheckResult(
                    label, check, "-", why, float("nan"), float("nan"), status, f"{status} — {why}"
                )
            )
            continue
        t0 = time.perf_counter()
        # Only the registered reference checks itself; an adapter that merely calls itself
        # "numpy" (a subclass, a copy) is compared with it like any other.
        if name == REFERENCE:
            report.rows += run_selfcheck(seed, full)
        else:
            report.rows += list(run_backend_checks(backend, seed, full))
        report.rows += check_golden(backend)
        report.backends[label] = {
            "status": "checked",
            "requested": name,
            **({"impl": backend.impl} if backend.impls else {}),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    report.seconds = time.perf_counter() - start
    return report
