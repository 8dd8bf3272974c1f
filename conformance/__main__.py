"""``python -m gpconv.conformance generate [--out DIR]``: regenerate the golden vectors."""

import argparse

from .golden import main_generate

parser = argparse.ArgumentParser(prog="python -m gpconv.conformance")
sub = parser.add_subparsers(dest="command", required=True)
gen = sub.add_parser("generate", help="write golden vectors and manifest.json")
gen.add_argument(
    "--out", default=None, help="directory (default: the package's conformance/golden)"
)
args = parser.parse_args()
main_generate(args.out)
