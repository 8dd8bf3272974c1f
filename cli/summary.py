"""``gpconv summary``: per-layer table and totals of an architecture, or the paper's table."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..core.arch import MIN_INPUT_SIZE, MODELS, by_name
from ..core.paper import paper_rows, paper_table
from .main import UsageError, refuse_group_minimum_for_efficientnet, require_at_least

DEFAULTS = {"model": "kefficientnet-b0", "min_channels_per_group": 16, "classes": 10,
            "skip_stride": -1}  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="per-layer table (params, MACs, groups) of a model",
        description="Print a model's per-layer table and totals, or the paper's "
        "parameter table next to the counts computed from the architecture.",
    )
    # Defaults are None so that --paper can refuse the options it would ignore; DEFAULTS fills
    # them in otherwise.
    p.add_argument("--model", choices=sorted(MODELS), help=f"default: {DEFAULTS['model']}")
    p.add_argument(
        "--min-channels-per-group",
        type=int,
        help=f"kEffNet only (default: {DEFAULTS['min_channels_per_group']})",
    )
    p.add_argument("--classes", type=int, help=f"default: {DEFAULTS['classes']}")
    p.add_argument("--image-size", type=int, help="default: the variant's resolution")
    p.add_argument(
        "--skip-stride",
        type=int,
        help=f"skip_stride_cnt (3 for 32x32 CIFAR; default: {DEFAULTS['skip_stride']})",
    )
    p.add_argument("--paper", action="store_true", help="the paper's table vs computed counts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.paper:
        given = [o for o in (*DEFAULTS, "image_size") if getattr(args, o) is not None]
        if given:
            flags = ", ".join("--" + o.replace("_", "-") for o in given)
            raise UsageError(
                f"--paper prints the paper's fixed table; it takes no {flags} "
                "(drop --paper for the table of one model)"
            )
        rows = paper_rows()
        print(json.dumps(rows, indent=2) if args.json else paper_table())
        return 0 if all(r["match"] for r in rows) else 1
    refuse_group_minimum_for_efficientnet(args)
    for option, default in DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, default)
    # --image-size None is the variant's resolution; 0 is an error, not a request for it.
    bounds = {"classes": 1, "min_channels_per_group": 1, "skip_stride": -1}
    require_at_least(args, {**bounds, "image_size": MIN_INPUT_SIZE})
    try:
        arch = by_name(args.model, args.classes, args.min_channels_per_group, args.skip_stride)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from err
    size = arch.resolution if args.image_size is None else args.image_size
    if not args.json:
        print(arch.summary(size))
        return 0
    trainable, non_trainable = arch.param_count()
    print(
        json.dumps(
            {
                "model": arch.name,
                "classes": arch.num_classes,
                "image_size": size,
                "skip_stride_cnt": arch.skip_stride_cnt,
                "trainable": trainable,
                "non_trainable": non_trainable,
                "macs": arch.macs(size),
                "layers": [dataclasses.asdict(r) for r in arch.layers(size)],
            },
            indent=2,
        )
    )
    return 0
