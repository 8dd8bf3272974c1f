"""``gpconv train``: train EfficientNet / kEffNet with any backend (see ``gpconv.train.run``).

Under ``torchrun --nproc-per-node N -m gpconv.cli train --backend torch ...`` it trains with
DistributedDataParallel; only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from ..core.arch import MODELS
from ..train.loop import SCHEDULES
from .main import (
    UsageError,
    add_compile_option,
    add_device_option,
    add_keep_freed_memory,
    nonempty_path,
    refuse_group_minimum_for_efficientnet,
)

BACKENDS = ("torch", "tensorflow", "numpy", "cupy")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except on required options (they have none) and where the
    default is ``None``: "(default: None)" says nothing, so those help texts state the default
    in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model on digits, CIFAR-10 or an image folder",
        description="Train EfficientNet or kEffNet with a backend; writes metrics.csv, curves.png, "
        "summary.json, checkpoints and params.safetensors to --out. Run under torchrun for DDP.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--backend", required=True, choices=BACKENDS, help="framework to train with")
    p.add_argument("--model", required=True, choices=sorted(MODELS), help="architecture")
    p.add_argument(
        "--min-channels-per-group",
        type=int,
        help="kEffNet group minimum (default: 16; refused with efficientnet models)",
    )
    p.add_argument(
        "--data",
        default="digits",
        metavar="digits|cifar10=DIR|folder=DIR",
        help="data set: scikit-learn digits (no download), CIFAR-10 binary files, or an "
        "ImageFolder-style tree",
    )
    p.add_argument("--image-size", type=int, default=32, help="square input size in pixels")
    p.add_argument(
        "--skip-stride",
        type=int,
        default=3,
        help="skip_stride_cnt: stem stride 1 and stride 1 in the first N stages (-1: none)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="total epochs (on --resume: not fewer than the run has completed)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (all processes)")
    p.add_argument(
        "--lr", type=float, default=None, help="base learning rate (default: sgd 0.05, adam 1e-3)"
    )
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="sgd: momentum 0.9")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="per-epoch lr schedule")
    p.add_argument(
        "--seed", type=int, default=0, help="initial weights, data order, augmentation, dropout"
    )
    p.add_argument(
        "--augment", action="store_true", help="random crop (4-px zero padding) + horizontal flip"
    )
    p.add_argument("--out", required=True, type=nonempty_path, help="run folder, e.g. runs/NAME")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete checkpoint",
    )
    p.add_argument(
        "--no-dropout",
        action="store_true",
        help="set dropout and drop-connect to 0 (exact comparisons between runs)",
    )
    # BooleanOptionalAction: --sync-bn and the long-standing --no-sync-bn, and a help line whose
    # "(default: True)" stands next to --sync-bn (a lone --no-sync-bn read as if it were the
    # default).
    p.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch under DDP: normalise with batch statistics over all processes, as a "
        "one-process run would; off: each process's own statistics (fewer collectives)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first N train and N test images (default: all)",
    )
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the framework (default: its own choice)",
    )
    add_keep_freed_memory(p)
    add_compile_option(p, "compile the train step")
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..train import distributed
    from ..train.loop import Diverged
    from ..train.metrics import displayable
    from ..train.run import ConfigError, RunConfig, RunWriteError, train

    refuse_group_minimum_for_efficientnet(args)
    if args.min_channels_per_group is None:
        args.min_channels_per_group = RunConfig.min_channels_per_group
    cfg = RunConfig(
        backend=args.backend,
        model=args.model,
        out=args.out,
        min_channels_per_group=args.min_channels_per_group,
        data=args.data,
        image_size=args.image_size,
        skip_stride=args.skip_stride,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        seed=args.seed,
        augment=args.augment,
        resume=args.resume,
        no_dropout=args.no_dropout,
        limit=args.limit,
        sync_bn=args.sync_bn,
        keep=args.keep,
        progress=not args.quiet,
        threads=args.threads,
        keep_freed_memory=args.keep_freed_memory,
        compile_step=args.compile_step,
        device=args.device,
    )
    try:
        # Validate before joining a process group so a bad command fails fast in every process.
        cfg.validate(distributed.world_size_from_env())
        # torchrun's variables (WORLD_SIZE=abc, RANK missing, MASTER_ADDR unset) are ValueErrors
        dist = distributed.from_env(cfg.device)
    except ValueError as err:  # ConfigError included
        raise UsageError(str(err)) from err
    try:
        summary = train(cfg, dist)
    except ConfigError as err:
        raise UsageError(str(err)) from err
    except (Diverged, RunWriteError) as err:
        if dist.is_main:
            print(f"gpconv train: error: {err}; run files in {cfg.out}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `gpconv train | head`: the run stops; say so, where it can be seen
        with contextlib.suppress(OSError):
            print(
                f"gpconv train: stopped: stdout was closed; run files in {cfg.out} (continues "
                "with --resume)",
                file=sys.stderr,
            )
        raise  # main() ends quietly with status 1, as for any command whose stdout closes
    finally:
        dist.close()
    if dist.is_main:
        final = summary["final"]
        line = (
            f"gpconv train: done: test acc {_number(final['test_acc'])}, "
            f"test loss {_number(final['test_loss'])} "
            f"after {summary['epochs_completed']} epochs ({summary['seconds_total']:.0f}s); "
            f"files in {cfg.out}"
        )
        print(displayable(line), file=sys.stdout)
    return 0


def _number(value: float | None) -> str:
    """A figure of ``summary.json``'s ``final`` for the closing line: that file stores a
    non-finite loss as null (strict JSON), which a run whose training loss stayed finite while
    its test loss overflowed still completes with."""
    return "nan" if value is None else f"{value:.4f}"
