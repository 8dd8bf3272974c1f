"""The ``gpconv`` console script: ``check``, ``summary``, ``train``, ``bench``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which registers the
command and sets ``func``) and a ``run(args) -> int`` exit code. Exit codes: 0 success, 1 a check
or job failed (or stdout was closed early, as by ``| head``), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from .. import __version__
from ..perf.timing import CLOCKS

COMMANDS = ("check", "summary", "train", "bench")


class UsageError(Exception):
    """Bad arguments detected after parsing (exit code 2)."""


def refuse_group_minimum_for_efficientnet(args: argparse.Namespace) -> None:
    """EfficientNet has no grouped convs: a ``--min-channels-per-group`` given with it would be
    ignored and the ungrouped network used, so refuse it (``UsageError``); most likely
    kefficientnet-bX was meant. The option's default must be ``None`` to tell "given"."""
    if args.model is None or args.min_channels_per_group is None:
        return
    if not args.model.startswith("kefficientnet"):
        raise UsageError(
            f"--min-channels-per-group applies to kefficientnet models only; received --model "
            f"{args.model} --min-channels-per-group {args.min_channels_per_group} (for the "
            f"grouped network use --model k{args.model})"
        )


def require_at_least(args: argparse.Namespace, bounds: dict[str, int]) -> None:
    """Raise ``UsageError`` naming the flag of the first ``args.<name>`` below ``bounds[name]``
    (options left at ``None`` are skipped)."""
    for name, low in bounds.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"Expected --{name.replace('_', '-')} >= {low}, received {value}")


def nonempty_path(text: str) -> str:
    """argparse ``type`` of a path option: refuses ``""`` (or blanks) at parse time, exit status 2.
    Commands test such options with ``if args.json:``, so an empty path (an unset shell variable
    in ``--json "$OUT"``) was taken as the option left out: the run went on and wrote nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, received {text!r}")
    return text


def require_output(
    flag: str,
    path: str,
    check: Callable[[str], None] | None = None,
    expected: str = "FILE in a writable folder",
) -> None:
    """Raise ``UsageError`` if ``check(path)`` (default ``train.metrics.check_output_path``) finds
    that ``path`` cannot be written. Called *before* a command's work: a check or benchmark takes
    minutes, and its results would otherwise be lost to an error at the end."""
    if check is None:
        from ..train.metrics import check_output_path as check
    try:
        check(path)
    except ValueError as err:
        raise UsageError(f"Expected {flag} {expected}, received {path}: {err}") from err


def write_output(command: str, flag: str, path: str, write: Callable[[], None]) -> bool:
    """Write one output file; if that fails even so (disk full, a folder removed meanwhile), say
    so without a traceback and return False, so that the other outputs are still written."""
    try:
        write()
    except (OSError, ValueError, RuntimeError) as err:  # what file systems and savefig raise
        print(f"gpconv {command}: error: could not write {flag} {path}: {err}", file=sys.stderr)
        return False
    print(f"wrote {path}", file=sys.stderr)
    return True


def add_keep_freed_memory(p: argparse.ArgumentParser) -> None:
    """``--[no-]keep-freed-memory`` (default on) for the commands that run frameworks for long."""
    p.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep freed memory in this process's heap (glibc mallopt) instead of faulting fresh "
        "pages in for every large tensor; see gpconv.perf.allocator",
    )


def add_compile_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--compile`` (dest ``compile_step``) for the commands that run train steps; ``what`` says
    what the flag does in that command."""
    p.add_argument(
        "--compile",
        dest="compile_step",
        action="store_true",
        help=f"{what}: torch.compile (torch) or XLA jit_compile (tensorflow); measured faster "
        "with torch on CUDA, slower on CPU (docs/train.md). Dropout masks then come from the "
        "compiler's RNG and differ from an eager run's",
    )


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device`` (torch only; checked by ``train.device.check_device``)."""
    p.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda or cuda:N (default: CUDA when available, else the CPU; "
        "under torchrun: cpu or cuda). cupy and tensorflow pick theirs: use CUDA_VISIBLE_DEVICES",
    )


def add_clock_option(p: argparse.ArgumentParser) -> None:
    """``--clock {wall,cpu}`` (default wall) for benchmark scripts; see ``perf.timing.CLOCKS``."""
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: process CPU time (steadier on a shared machine)",
    )


def int_at_least(option: str, minimum: int, note: str = "") -> Callable[[str], int]:
    """An argparse ``type`` for a benchmark script's ``option``: an int >= ``minimum``; anything
    else is a usage error (exit 2) naming the option (and ``note`` on the bound). ``--repeats 0``
    used to run the warm-up and then fail in ``perf.timing`` naming its ``steps`` argument;
    ``--batch 0`` timed empty batches."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"Expected {option} an integer, received {text!r}"
            ) from None
        if value < minimum:
            bound = f"{minimum} ({note})" if note else f"{minimum}"
            raise argparse.ArgumentTypeError(f"Expected {option} >= {bound}, received {value}")
        return value

    return parse


def benchmark_threads(text: str) -> int:
    """argparse ``type`` of the benchmark scripts' ``--threads``: 0 (the library's default) or
    1 .. the CPUs this process may use, as ``gpconv train/bench --threads`` take
    (``train.frameworks.check_threads``); anything else is a usage error (exit 2). Unchecked,
    ``bench_torch_pointwise.py --threads 64`` on 2 CPUs took 23.6 s instead of 11.8 s."""
    from ..train.frameworks import check_threads

    threads = int_at_least("--threads", 0, "0: the default")(text)
    if threads:
        try:
            check_threads(threads)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return threads


def add_threads_option(p: argparse.ArgumentParser, threads_of: str) -> None:
    """``--threads N`` of a benchmark script (``benchmark_threads``): ``threads_of``'s threads."""
    p.add_argument(
        "--threads",
        type=benchmark_threads,
        default=0,
        metavar="N",
        help=f"{threads_of} threads (0: its default; at most the CPUs this process may use)",
    )


def add_benchmark_options(p: argparse.ArgumentParser, repeats: int, threads_of: str) -> None:
    """The options the op-level benchmark scripts share: ``--repeats`` (rounds; the median is
    reported), ``--threads`` (of ``threads_of``; 0 keeps its default), ``--clock``, ``--json``."""
    p.add_argument(
        "--repeats",
        type=int_at_least("--repeats", 1),
        default=repeats,
        help="timed rounds (median reported)",
    )
    add_threads_option(p, threads_of)
    add_clock_option(p)
    p.add_argument("--json", type=nonempty_path, metavar="PATH", help="write the figures as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpconv",
        description="Grouped pointwise convolutions with channel interleaving (kEffNet): "
        "a reference implementation and backends proven equal to it.",
    )
    parser.add_argument("--version", action="version", version=f"gpconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"gpconv.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            code = _dispatch(argv)
        except SystemExit:  # argparse's --help, --version and usage errors: flush their output too
            sys.stdout.flush()
            raise
        # Flush here, not at interpreter exit: a reader that went away (``gpconv summary |
        # head -3``) would raise there, past any handler, and print a traceback.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        # Ctrl-C is a normal way to stop a run (checkpoints are written atomically).
        args = sys.argv[1:] if argv is None else argv
        hint = " (gpconv train continues with --resume)" if "train" in args[:1] else ""
        print(f"\ngpconv: interrupted{hint}", file=sys.stderr)
        return 130


def _dispatch(argv: list[str] | None) -> int:
    # TensorFlow's C++ info lines would interleave with our tables (TF 2.21 still prints its
    # oneDNN notice, which absl logs before this setting is read).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UsageError as err:
        print(f"gpconv {args.command}: error: {err}", file=sys.stderr)
        return 2


def _stdout_closed() -> int:
    """The reader of stdout closed it: stop quietly, as the Python docs recommend (see "Note on
    SIGPIPE" in the ``signal`` module docs). Output still buffered goes to devnull, so the flush at
    exit cannot raise again; the exit status is 1, as Python's own for EPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file descriptor (e.g. captured in-process)
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
