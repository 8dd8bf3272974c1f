"""PyTorch CUDA train step, eager vs ``torch.compile``: kEffNet-B0 16ch against EfficientNet-B0.

On the GPU kEffNet's step is slower than EfficientNet's in eager mode (docs/gpu.md): it launches
about twice as many kernels (a second conv, BN, a channel shuffle and a residual add per
kPointwise), each small. A fusing compiler could remove part of that: inductor can fold the
shuffle into the neighbouring elementwise kernels, and CUDA graphs ("reduce-overhead") remove
launch gaps. This script measures how much, for the models as users build them (default ``impl``
and memory format), at 32x32 (skip_stride_cnt=3) batch 256, float32, SGD with momentum.

Every variant is built and compiled first (compile and warm-up time is reported), then all are
timed round-robin (``perf.timing.time_round_robin``; one sample is ``--steps`` steps ending in a
device synchronisation; median of ``--rounds``). Variants whose compile would start after
``--budget`` seconds are skipped and listed as such.

    python benchmarks/gpu/bench_torch_cuda_compile.py [--modes eager,default,reduce-overhead]
        [--rounds 5] [--budget 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0
from gpconv.cli.main import int_at_least, nonempty_path
from gpconv.perf.timing import time_round_robin

MODELS = {
    "EfficientNet-B0": lambda: efficientnet_b0(10, skip_stride_cnt=3, seed=0),
    "kEffNet-B0 16ch": lambda: kefficientnet_b0(
        10, min_channels_per_group=16, skip_stride_cnt=3, seed=0
    ),
}
MODES = ("eager", "default", "reduce-overhead")  # eager, then torch.compile(mode=...)


def make_step(model_name: str, mode: str, batch: int, device: str) -> Callable[[], None]:
    model = MODELS[model_name]().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run = model if mode == "eager" else torch.compile(model, mode=mode)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(run(x), y).backward()
        opt.step()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int_at_least("--batch", 1), default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--steps", type=int_at_least("--steps", 1), default=5, help="steps per timed sample"
    )
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for compiling")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated: eager and/or torch.compile modes; EfficientNet-B0 in the first "
        "mode is the yardstick",
    )
    parser.add_argument("--json", type=nonempty_path, metavar="PATH")
    args = parser.parse_args(argv)
    modes = tuple(args.modes.split(","))
    unknown = sorted(set(modes) - {"eager", *torch._inductor.list_mode_options()})
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected eager or a torch.compile mode")
    t0 = time.perf_counter()
    steps, rows = {}, {}
    for mode in modes:
        for name in MODELS:
            key = f"{name} | {mode}"
            if time.perf_counter() - t0 > args.budget:
                rows[key] = {"skipped": "time budget"}
                continue
            start = time.perf_counter()
            step = make_step(name, mode, args.batch, args.device)
            for _ in range(3):  # compile (forward and backward graphs), then warm caches
                step()
            sync(args.device)
            steps[key] = step
            rows[key] = {"warmup_s": time.perf_counter() - start}
            print(f"{key}: built and warmed up in {rows[key]['warmup_s']:.1f} s", flush=True)

    def block(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(args.steps):
                step()
            sync(args.device)  # a sample ends when the device is done

        return run

    timings = time_round_robin({key: block(step) for key, step in steps.items()}, args.rounds, 0)
    samples = {key: [1e3 * t / args.steps for t in tm.samples] for key, tm in timings.items()}
    base = {mode: f"EfficientNet-B0 | {mode}" for mode in modes}
    ref = statistics.median(samples[base[modes[0]]])
    print(f"\ntrain step, batch {args.batch}, 32x32 skip 3, {torch.__version__}, {args.device}")
    first = f"x EffNet {modes[0]}"
    print(f"{'model | mode':<34} {'ms/step':>8} {first:>15} {'x EffNet same mode':>19}")
    for key, times in samples.items():
        mode = key.split(" | ")[1]
        ms = statistics.median(times)
        same = statistics.median(samples[base[mode]]) if base[mode] in samples else float("nan")
        rows[key].update(
            ms=ms, samples_ms=times, vs_effnet_first_mode=ms / ref, vs_same_mode=ms / same
        )
        print(f"{key:<34} {ms:>8.2f} {ms / ref:>15.3f} {ms / same:>19.3f}")
    for key, row in rows.items():
        if "skipped" in row:
            print(f"{key:<34} skipped ({row['skipped']})")
    if args.json:
        meta = {"torch": torch.__version__, "device": args.device, "batch": args.batch}
        if args.device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name(0)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
