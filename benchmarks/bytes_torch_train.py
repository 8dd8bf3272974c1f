"""Operand bytes vs MACs of one PyTorch train step: kEffNet-B0 16ch against EfficientNet-B0.

Counts (``gpconv.perf.torch_traffic``), for the step ``bench_torch_train.py`` times (32×32,
``skip_stride_cnt=3``, batch 32, SGD with momentum, the models' CPU defaults), the bytes of tensor
operands of every op, and sets the ratio beside the MAC ratio from ``core.arch``. A deterministic
count, not a timing: it explains *why* the measured step ratio lands where it does on a
memory-bound CPU. The step times themselves come from ``bench_torch_train.py``.

    python benchmarks/bytes_torch_train.py [--top 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0
from gpconv.cli.main import nonempty_path
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=12, help="ops to list per model")
    p.add_argument("--json", type=nonempty_path, metavar="PATH", help="write the counts as JSON")
    args = p.parse_args(argv)
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
