"""Grouped 1×1 convolution in PyTorch on CPU: forward + backward time per implementation.

For each case ``(N, H, W, Cin -> Cout, G)``, times ``y = layer(x); y.backward(dy)`` for

* every ``GroupedPointwise2d(impl=...)`` with the input memory format it is meant for, and the
  dense 1×1 conv (``groups=1``) of the same shape as the yardstick;
* kPointwise's second stage ``conv2(interleave(y1))`` (``Cout -> Cout``, G groups) as the
  library runs it (channel shuffle, then grouped conv) against the interleave *folded into the
  conv's weight order*: one dense conv whose block-diagonal weight has its input columns
  permuted (no shuffle, but G times the multiply-adds).

Variants are timed round-robin (one call of each per round) so that load from other processes
hits all alike; figures are medians. Prints a table; ``--json PATH`` writes the figures.

    python benchmarks/bench_torch_pointwise.py [--repeats 20] [--threads 1 --clock cpu] [--json f]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gpconv.backends.torch.pointwise import DEFAULT_IMPL, GroupedPointwise2d, Interleave
from gpconv.cli.main import add_benchmark_options
from gpconv.core.pointwise import deinterleave
from gpconv.perf.report import write_rows
from gpconv.perf.timing import CLOCKS, time_round_robin

# (N, H, W, Cin, Cout, G): DESIGN.md §5's case and block6's project conv of kEffNet-B0 16ch.
CASES = ((32, 16, 16, 192, 192, 12), (32, 16, 16, 1152, 192, 64))
# name: (impl, dense?, channels_last input?)
VARIANTS = {
    "conv NCHW": ("conv", False, False),
    "channels_last": ("channels_last", False, True),
    "channels_last (NCHW input)": ("channels_last", False, False),
    "matmul NCHW": ("matmul", False, False),
    "matmul channels_last": ("matmul", False, True),
    "einsum NCHW": ("einsum", False, False),
    "dense conv NCHW": ("conv", True, False),
    "dense conv channels_last": ("conv", True, True),
}


class ShuffleThenConv(nn.Module):
    """``conv2(interleave(y1))`` as ``KPointwise`` runs it. ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.interleave = Interleave(groups)
        self.conv = GroupedPointwise2d(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.interleave(x))


class FoldedShuffleConv(nn.Module):
    """The same function with the interleave folded into the weight: ``conv2(P y1) = (W2 P) y1``,
    where ``W2`` is the block-diagonal dense form of the grouped weight. Shares its weight with
    a ``ShuffleThenConv`` so the two can be checked equal."""

    def __init__(self, unfolded: ShuffleThenConv) -> None:
        super().__init__()
        self.conv = unfolded.conv
        c, groups = self.conv.out_channels, self.conv.groups
        # Column j of W2 P is column inv[j] of W2, inv the inverse shuffle (deinterleave).
        self.register_buffer(
            "inverse", torch.from_numpy(deinterleave(torch.arange(c).numpy(), groups))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, g = self.conv.weight, self.conv.groups
        c = w.shape[0]
        dense = torch.block_diag(*w.view(g, c // g, c // g))[:, self.inverse]
        return F.conv2d(x, dense.view(c, c, 1, 1))


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], None]:
    def call() -> None:
        layer(x.detach().requires_grad_(True)).backward(dy)
        layer.zero_grad(set_to_none=True)

    return call


def _cases() -> list[tuple[str, str, Callable[[], None]]]:
    """``(case, variant, call)`` for every measurement."""
    torch.manual_seed(0)
    out = []
    for n, h, w, cin, cout, groups in CASES:
        case = f"{cin}->{cout} G={groups} N,H,W={n},{h},{w}"
        x = torch.randn(n, cin, h, w)
        dy = torch.randn(n, cout, h, w)
        for name, (impl, dense, channels_last) in VARIANTS.items():
            layer = GroupedPointwise2d(cin, cout, 1 if dense else groups, impl=impl)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            out.append((case, name, _fwd_bwd(layer, x.contiguous(memory_format=fmt), dy)))
        # kPointwise's second stage for this case's output width.
        case2 = f"interleave+conv2 {cout}->{cout} G={groups}"
        y1 = torch.randn(n, cout, h, w).contiguous(memory_format=torch.channels_last)
        unfolded = ShuffleThenConv(cout, groups)
        folded = FoldedShuffleConv(unfolded)
        with torch.no_grad():
            torch.testing.assert_close(folded(y1), unfolded(y1), rtol=1e-4, atol=1e-4)
        out.append((case2, "channel shuffle + grouped conv", _fwd_bwd(unfolded, y1, dy)))
        out.append((case2, "folded into dense conv weight", _fwd_bwd(folded, y1, dy)))
    return out


def run(
    repeats: int, clock: Callable[[], float] = time.perf_counter, warmup: int = 3
) -> list[dict]:
    cases = _cases()
    timings = time_round_robin(
        {i: call for i, (_, _, call) in enumerate(cases)}, repeats, warmup, clock
    )
    return [
        {"case": case, "variant": variant, "ms": timings[i].ms}
        for i, (case, variant, _) in enumerate(cases)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_options(parser, repeats=20, threads_of="torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.repeats, CLOCKS[args.clock])
    print(
        f"grouped 1x1 conv, forward+backward, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock (default impl: {DEFAULT_IMPL!r})"
    )
    print(f"{'case':<36} {'variant':<32} {'ms':>9}")
    for r in rows:
        print(f"{r['case']:<36} {r['variant']:<32} {r['ms']:>9.2f}")
    write_rows(
        args.json,
        rows,
        args,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        default_impl=DEFAULT_IMPL,
    )


if __name__ == "__main__":
    main()
