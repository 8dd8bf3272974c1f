"""PyTorch CPU train step (forward + backward + SGD) of kEffNet-B0 vs EfficientNet-B0.

32×32 images, ``skip_stride_cnt=3``, batch 32, 10 classes (the paper's CIFAR setting). Every
model variant — EfficientNet-B0 and kEffNet-B0 16ch for each grouped-pointwise ``impl`` and
memory format — is timed in the *same* run, round-robin (one step of each per round), so that
load from other processes on a shared machine hits all of them alike; the figure is the median
step time. The headline is kEffNet-B0 16ch / EfficientNet-B0 with the defaults (target <= 0.7).

    python benchmarks/bench_torch_train.py [--rounds 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial

import torch
import torch.nn.functional as F

from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0
from gpconv.backends.torch.pointwise import DEFAULT_IMPL, IMPLS
from gpconv.cli.main import (
    add_clock_option,
    add_keep_freed_memory,
    add_threads_option,
    nonempty_path,
)
from gpconv.perf import allocator
from gpconv.perf.timing import CLOCKS, time_round_robin

BATCH, SIZE, SKIP, CLASSES = 32, 32, 3, 10
DEFAULT_FORMAT = "channels_last"  # what the models' channels_last=None picks on the CPU


def variants(impls: list[str], compiled: bool = False) -> dict[str, torch.nn.Module]:
    """``"<model> impl=<impl> <format>"`` -> freshly initialised model; with ``compiled``, also
    ``torch.compile`` of both models with the defaults (compiling happens in the warm-up)."""
    models = {}
    for channels_last in (True, False):
        fmt = "channels_last" if channels_last else "NCHW"
        kw = {"channels_last": channels_last, "seed": 0}
        models[f"EfficientNet-B0 {fmt}"] = efficientnet_b0(CLASSES, skip_stride_cnt=SKIP, **kw)
        for impl in impls:
            models[f"kEffNet-B0 16ch impl={impl} {fmt}"] = kefficientnet_b0(
                CLASSES, min_channels_per_group=16, skip_stride_cnt=SKIP, impl=impl, **kw
            )
    if compiled:
        fmt = DEFAULT_FORMAT
        eff = efficientnet_b0(CLASSES, skip_stride_cnt=SKIP, seed=0)
        keff = kefficientnet_b0(CLASSES, min_channels_per_group=16, skip_stride_cnt=SKIP, seed=0)
        models[f"EfficientNet-B0 {fmt} torch.compile"] = torch.compile(eff)
        models[f"kEffNet-B0 16ch impl={DEFAULT_IMPL} {fmt} torch.compile"] = torch.compile(keff)
    return models


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    """One forward + backward + SGD update."""
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def run(
    rounds: int, impls: list[str], clock=time.perf_counter, warmup: int = 2, compiled: bool = False
) -> dict[str, float]:
    """``{variant: median seconds per step}``, every variant timed in the same rounds."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (BATCH,))
    models = variants(impls, compiled)
    steps = {}
    for k, m in models.items():
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        steps[k] = partial(train_step, m, opt, x, y)
    return {k: t.median for k, t in time_round_robin(steps, rounds, warmup, clock).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated impls to time")
    add_threads_option(parser, "torch")
    add_clock_option(parser)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument(
        "--json", type=nonempty_path, metavar="PATH", help="write the figures as JSON"
    )
    add_keep_freed_memory(parser)  # as `gpconv train` does
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        allocator.keep_freed_memory()
    impls = [i for i in args.impls.split(",") if i]
    if DEFAULT_IMPL not in impls:
        impls.append(DEFAULT_IMPL)
    seconds = run(args.rounds, impls, CLOCKS[args.clock], compiled=args.compile)
    fmt = DEFAULT_FORMAT
    base = seconds[f"EfficientNet-B0 {fmt}"]
    headline = seconds[f"kEffNet-B0 16ch impl={DEFAULT_IMPL} {fmt}"] / base
    print(
        f"train step, batch {BATCH}, {SIZE}x{SIZE}, skip_stride_cnt={SKIP}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"median of {args.rounds} rounds, {allocator.current()}"
    )
    print(f"{'variant':<58} {'ms/step':>9} {'/ EffNet-B0 (default format)':>29}")
    for k, s in seconds.items():
        print(f"{k:<58} {1e3 * s:>9.1f} {s / base:>29.3f}")
    print(
        f"kEffNet-B0 16ch / EfficientNet-B0 (defaults: impl={DEFAULT_IMPL!r}, {fmt}): "
        f"{headline:.3f}"
    )
    compiled = {k: v for k, v in seconds.items() if k.endswith("torch.compile")}
    compiled_ratio = None
    if compiled:
        eff, keff = (
            next(v for k, v in compiled.items() if k.startswith(m)) for m in ("Eff", "kEff")
        )
        compiled_ratio = keff / eff
        print(f"same, both under torch.compile: {compiled_ratio:.3f}")
    if args.json:
        meta = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "batch": BATCH,
            "size": SIZE,
            "skip_stride_cnt": SKIP,
            "rounds": args.rounds,
            "clock": args.clock,
            "malloc": allocator.current(),
            "default_impl": DEFAULT_IMPL,
            "default_format": fmt,
        }
        result = {
            "meta": meta,
            "ms_per_step": {k: 1e3 * s for k, s in seconds.items()},
            "ratio": headline,
            "ratio_compiled": compiled_ratio,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
