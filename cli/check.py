"""``gpconv check``: the conformance report of every installed backend against the reference."""

from __future__ import annotations

import argparse
import json
import sys

from ..backends import names
from .main import UsageError, nonempty_path, require_at_least, require_output, write_output

# Each adapter's ``impls``, written out: reading them would import TensorFlow (its adapter's
# package registers the Keras layers on import), 5 s for --help. tests/test_cli.py keeps it true.
IMPLS_HELP = (
    "torch: auto, conv, channels_last, matmul, einsum; tensorflow: auto, conv, matmul, einsum, "
    "keras; cupy: fused, core"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="prove backends equal to the reference (table; --json for machines)",
        description="Check the reference (finite differences, golden files) and every installed "
        "backend (layer properties, whole networks, parameter exchange, golden files). "
        "Exit 0 if all pass, 1 if any fails, 2 on usage errors.",
    )
    p.add_argument(
        "--backend",
        action="append",
        metavar="NAME",
        help=f"backend to check (repeatable): {', '.join(names())}, or module:ATTRIBUTE "
        "for a third-party adapter; one that is not installed is a usage error. Default: all, "
        "listing those not installed without failing",
    )
    p.add_argument(
        "--impl",
        action="append",
        metavar="IMPL",
        help="kPointwise implementation to check (repeatable; 'all' for every one), for the "
        f"backends that have a choice: {IMPLS_HELP}. Default: each backend's default (the first "
        "listed). A backend without any of them is listed as not checked",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="the default: fewer layer and network configurations"
    )
    mode.add_argument(
        "--full", action="store_true", help="every configuration (3 networks, 8 kPointwise cases)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of every drawn input and parameter (default: 0)"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        type=nonempty_path,
        metavar="PATH",
        help="write the JSON report to PATH (missing folders are created), or to stdout instead "
        "of the table",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..conformance.report import format_report
    from ..conformance.runner import run as run_checks
    from ..perf.report import write_json

    require_at_least(args, {"seed": 0})
    if args.json not in (None, "-"):
        require_output("--json", args.json)
    for name in args.backend or []:
        module, colon, attribute = name.partition(":")
        if name not in names() and not (colon and module and attribute):
            raise UsageError(
                f"unknown backend {name!r}; expected one of {names()} or module:ATTRIBUTE"
            )
    try:
        report = run_checks(args.backend, full=args.full, seed=args.seed, impls=args.impl)
    except (ImportError, AttributeError, ValueError) as err:
        raise UsageError(str(err)) from err
    if args.json == "-":
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(format_report(report))
        if args.json and not write_output(
            "check", "--json", args.json, lambda: write_json(args.json, report.to_dict())
        ):
            return 1
    return 0 if report.passed else 1
