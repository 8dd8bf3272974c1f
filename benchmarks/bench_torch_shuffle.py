"""Channel shuffle (the interleave) in PyTorch on CPU: torch's kernel against gpconv's gather.

Takes every interleave of kEffNet-B0 16ch in one forward pass at the train benchmark's setting
(32×32, ``skip_stride_cnt=3``, batch 32, channels_last; ``perf.pointwise.interleave_sites``),
then times forward + backward (``y = shuffle(x); y.backward(dy)``) of each site with

* ``torch.channel_shuffle``: a ``(G, S)`` transpose per pixel (autograd's backward is the
  shuffle with ``C // G`` groups);
* ``gather``: ``backends.torch.eager.gather_shuffle``, a gather along the physical channel
  axis with the inverse gather as its backward.

``Interleave`` runs the gather with one torch thread and torch's kernel with more
(``eager.gather_wins``: ``index_select`` uses one thread only); the last line says which.

Both give the same values (checked before timing). Variants are timed round-robin; figures are
medians; the totals count each site as often as the network has it.

    python benchmarks/bench_torch_shuffle.py [--repeats 15] [--threads 1] [--clock cpu] [--json f]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from gpconv.backends.torch.eager import gather_shuffle, gather_wins
from gpconv.cli.main import add_benchmark_options
from gpconv.perf import allocator
from gpconv.perf.pointwise import interleave_sites
from gpconv.perf.report import site_table, write_rows
from gpconv.perf.timing import CLOCKS, time_round_robin

BATCH, SIZE, SKIP = 32, 32, 3
VARIANTS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "torch.channel_shuffle": torch.channel_shuffle,
    "gather": gather_shuffle,
}


def forward_backward(
    shuffle: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, dy: torch.Tensor, g: int
) -> Callable[[], None]:
    def step() -> None:
        shuffle(x, g).backward(dy)
        x.grad = None

    return step


def run(repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    rows = []
    for (n, h, w, c, g), count in interleave_sites(SIZE, SKIP, BATCH).items():
        x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        dy = torch.randn_like(x)
        if not torch.equal(gather_shuffle(x, g), torch.channel_shuffle(x, g)):
            raise AssertionError(f"the gather differs from torch's shuffle at {(n, c, h, w, g)}")
        timings = time_round_robin(
            {name: forward_backward(fn, x, dy, g) for name, fn in VARIANTS.items()},
            steps=repeats,
            warmup=2,
            clock=clock,
        )
        rows.append(
            {
                "shape": [n, c, h, w],
                "groups": g,
                "count": count,
                **{f"{name}_ms": t.ms for name, t in timings.items()},
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    runs = "the gather" if gather_wins() else "torch.channel_shuffle"
    return (
        site_table(rows, list(VARIANTS), "(N, C, H, W)")
        + f"\nInterleave runs {runs} with {torch.get_num_threads()} torch thread(s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_options(parser, repeats=15, threads_of="torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator.keep_freed_memory()
    rows = run(args.repeats, CLOCKS[args.clock])
    print(
        f"torch {torch.__version__} channel shuffles of kEffNet-B0 16ch ({SIZE}x{SIZE}, skip "
        f"{SKIP}, batch {BATCH}, channels_last), forward + backward, {torch.get_num_threads()} "
        f"threads, {args.clock} clock, median of {args.repeats}"
    )
    print(table(rows))
    write_rows(args.json, rows, args, torch=torch.__version__, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
