"""Human-readable ``gpconv check`` output: a backend × check table, then every failure in full."""

from __future__ import annotations

import math
from collections import OrderedDict

from .results import UNCHECKED, CheckResult
from .runner import Report


def _fmt(x: float) -> str:
    return (
        "-"
        if x is None or (isinstance(x, float) and math.isnan(x))
        else ("inf" if math.isinf(x) else f"{x:.2e}")
    )


def _ratio(r: CheckResult) -> float:
    if r.status in ("error", "fail") and not r.tolerance:
        return math.inf
    return (
        r.error / r.tolerance
        if r.tolerance and math.isfinite(r.error)
        else (0.0 if r.passed else math.inf)
    )


def format_report(report: Report, command: str = "gpconv check") -> str:
    """One row per (backend, check): cases passed, the worst case's layer, error and tolerance."""
    groups: OrderedDict[tuple[str, str], list[CheckResult]] = OrderedDict()
    for r in report.rows:
        groups.setdefault((r.backend, r.check), []).append(r)
    header = ("backend", "check", "cases", "worst layer", "max error", "tolerance", "result")
    body = []
    for (backend, check), rows in groups.items():
        worst = max(rows, key=_ratio)
        if worst.status in UNCHECKED:
            body.append((backend, "-", "-", "-", "-", "-", worst.detail))
            continue
        passed = sum(r.passed for r in rows)
        result = (
            "PASS"
            if passed == len(rows)
            else ("ERROR" if any(r.status == "error" for r in rows) else "FAIL")
        )
        body.append(
            (
                backend,
                check,
                f"{passed}/{len(rows)}",
                worst.layer[:34],
                _fmt(worst.error),
                _fmt(worst.tolerance),
                result,
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(header), line(tuple("-" * w for w in widths)), *map(line, body)]
    failures = [r for r in report.rows if r.status in ("fail", "error")]
    if failures:
        out += ["", f"{len(failures)} failing check(s):"]
        for r in failures:
            out.append(
                f"  {r.status.upper()} [{r.backend}] {r.check} — layer {r.layer} — {r.config}"
            )
            out.append(
                f"      error {_fmt(r.error)} vs tolerance {_fmt(r.tolerance)}"
                + (f"; {r.detail}" if r.detail else "")
            )
        out.append(f"  reproduce: {command} {_reproduce_args(report, failures)}")
    verdict = "all checks passed" if report.passed else "FAILED"
    out += ["", f"{verdict} ({report.mode}, seed {report.seed}, {report.seconds:.1f} s)"]
    return "\n".join(out)


def _reproduce_args(report: Report, failures: list[CheckResult]) -> str:
    """The ``gpconv check`` arguments that rerun exactly the backends (and implementations) of
    ``failures``, with the run's mode and seed."""
    infos = {b: report.backends.get(b, {}) for b in dict.fromkeys(r.backend for r in failures)}
    names = dict.fromkeys(info.get("requested", b) for b, info in infos.items())
    impls = dict.fromkeys(info["impl"] for info in infos.values() if "impl" in info)
    args = [f"--backend {n}" for n in names]
    # The default implementation needs no --impl, unless another one of the same run does.
    if any(b != info.get("requested", b) for b, info in infos.items()):
        args += [f"--impl {i}" for i in impls]
    return " ".join(args + [f"--{report.mode}", f"--seed {report.seed}"])
