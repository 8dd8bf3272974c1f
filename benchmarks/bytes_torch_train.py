"""Operand bytes vs MACs of one PyTorch train step: kEffNet-B0 16ch against EfficientNet-B0.

Counts (``gpconv.perf.torch_traffic``), for the step ``bench_torch_train.py`` times (32×32,
``skip_stride_cnt=3``, batch 32, SGD with momentum, the models' CPU defaults), the bytes of tensor
operands of every op, and sets the ratio beside the MAC ratio from ``core.arch``. A deterministic
count, not a timing: it explains *why* the measured step ratio lands where it does on a
memory-bound CPU. Optionally (``--time``) also times both steps, round-robin, in the same run.

    python benchmarks/bytes_torch_train.py [--top 12] [--time 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0
from gpconv.core.arch import efficientnet, kefficientnet
from gpconv.perf.torch_traffic import OpTraffic, train_step_traffic

BATCH, SIZE, SKIP, CLASSES, MIN_CH = 32, 32, 3, 10, 16


def models() -> dict[str, tuple[torch.nn.Module, int]]:
    """``name -> (freshly initialised model, MACs per image)``."""
    return {
        "EfficientNet-B0": (
            efficientnet_b0(CLASSES, skip_stride_cnt=SKIP, seed=0),
            efficientnet("b0", CLASSES, SKIP).macs(SIZE),
        ),
        "kEffNet-B0 16ch": (
            kefficientnet_b0(CLASSES, min_channels_per_group=MIN_CH, skip_stride_cnt=SKIP, seed=0),
            kefficientnet("b0", CLASSES, MIN_CH, SKIP).macs(SIZE),
        ),
    }


def step_seconds(nets: dict[str, torch.nn.Module], x, y, rounds: int) -> dict[str, float]:
    """Median wall seconds per train step of each model, one step of each per round."""
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}
    times: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(rounds + 1):
        for k, m in nets.items():
            t0 = time.perf_counter()
            opts[k].zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opts[k].step()
            if r:  # the first round warms up
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=12, help="ops to list per model")
    p.add_argument("--time", type=int, default=0, metavar="ROUNDS", help="also time the steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads for --time")
    p.add_argument("--json", metavar="PATH", help="write the counts as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (BATCH,))
    built = models()
    traffic: dict[str, OpTraffic] = {}
    for name, (model, _) in built.items():
        traffic[name] = train_step_traffic(model, x, y)
    print(f"one train step, batch {BATCH}, {SIZE}x{SIZE}, skip_stride_cnt={SKIP}, float32")
    for name, t in traffic.items():
        print(f"\n{name}: {t.total_bytes / 1e9:.2f} GB of operands, {sum(t.calls.values())} ops")
        print(f"  {'op':<30}{'calls':>7}{'MB':>10}{'share':>8}")
        for op, b in t.bytes.most_common(args.top):
            print(f"  {op:<30}{t.calls[op]:>7}{b / 1e6:>10.1f}{b / t.total_bytes:>8.1%}")
    (eff, keff) = traffic.values()
    (_, macs_e), (_, macs_k) = built.values()
    ratios = {"macs": macs_k / macs_e, "operand_bytes": keff.total_bytes / eff.total_bytes}
    macs, nbytes = ratios["macs"], ratios["operand_bytes"]
    print(f"\nkEffNet / EfficientNet: MACs x{macs:.3f}, operand bytes x{nbytes:.3f}")
    if args.time:
        secs = step_seconds({k: m for k, (m, _) in built.items()}, x, y, args.time)
        ratios["step_time"] = secs["kEffNet-B0 16ch"] / secs["EfficientNet-B0"]
        ms = ", ".join(f"{k} {1e3 * s:.0f} ms" for k, s in secs.items())
        print(f"step time ({args.threads} thread(s), median of {args.time}): {ms}")
        print(f"kEffNet / EfficientNet step time: x{ratios['step_time']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "torch": torch.__version__,
                    "batch": BATCH,
                    "size": SIZE,
                    "skip_stride_cnt": SKIP,
                    "ratios": ratios,
                    "bytes": {k: dict(t.bytes) for k, t in traffic.items()},
                    "calls": {k: dict(t.calls) for k, t in traffic.items()},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
