"""NumPy reference: grouped 1×1 convolution vs a dense 1×1, forward + backward, and the interleave.

For each case ``(N, H, W, Cin -> Cout, G)`` times ``GroupedPointwise.forward`` + ``.backward`` with
``G`` groups and with one group (the dense 1×1 of the same ``Cin``/``Cout``: the yardstick), and
``interleave`` alone and with ``deinterleave`` (the shuffle's forward, and forward + backward) on
the conv's output. They are timed round-robin (``perf.timing.time_round_robin``), so a load spike
on a shared machine hits all of them; the median of ``--repeats`` rounds is reported, by wall
clock or, with ``--clock cpu``, process CPU time (steadier on a shared machine).
Targets (issue 3): grouped/dense <= 1.0 (ideally near 1/G), interleave <= 10 %
of the grouped conv's forward + backward (the table also shows interleave + deinterleave).

    python benchmarks/bench_numpy_pointwise.py [--repeats 15] [--threads N] [--clock cpu]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from gpconv.cli.main import add_benchmark_options
from gpconv.core import GroupedPointwise, deinterleave, interleave
from gpconv.perf.report import write_rows
from gpconv.perf.timing import CLOCKS, limit_blas_threads, time_round_robin

# (N, H, W, Cin, Cout, G): DESIGN.md §5's case and block6's project conv of kEffNet-B0 16ch.
CASES = ((32, 16, 16, 192, 192, 12), (32, 16, 16, 1152, 192, 64))
RATIO_TARGET, INTERLEAVE_TARGET = 1.0, 0.10


def conv_fwd_bwd(
    x: np.ndarray, kernel: np.ndarray, dy: np.ndarray, groups: int
) -> Callable[[], None]:
    def step() -> None:
        _, cache = GroupedPointwise.forward(x, kernel, None, groups)
        GroupedPointwise.backward(cache, dy)

    return step


def shuffle(y: np.ndarray, groups: int, backward: bool) -> Callable[[], None]:
    def step() -> None:
        interleave(y, groups)
        if backward:
            deinterleave(y, groups)

    return step


def run(
    repeats: int, clock: Callable[[], float] = time.perf_counter, dtype: type = np.float32
) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n, h, w, cin, cout, groups in CASES:
        x = rng.standard_normal((n, h, w, cin)).astype(dtype)
        dy = rng.standard_normal((n, h, w, cout)).astype(dtype)
        k_grouped = rng.standard_normal((1, 1, cin // groups, cout)).astype(dtype)
        k_dense = rng.standard_normal((1, 1, cin, cout)).astype(dtype)
        timings = time_round_robin(
            {
                "grouped": conv_fwd_bwd(x, k_grouped, dy, groups),
                "dense": conv_fwd_bwd(x, k_dense, dy, 1),
                "interleave": shuffle(dy, groups, backward=False),
                "interleave+deinterleave": shuffle(dy, groups, backward=True),
            },
            steps=repeats,
            warmup=2,
            clock=clock,
        )
        grouped, dense = timings["grouped"].ms, timings["dense"].ms
        il, il_dil = timings["interleave"].ms, timings["interleave+deinterleave"].ms
        rows.append(
            {
                "case": f"{cin}->{cout} G={groups}",
                "shape": [n, h, w],
                "groups": groups,
                "grouped_ms": grouped,
                "dense_ms": dense,
                "ratio": grouped / dense,
                "interleave_ms": il,
                "interleave_fraction": il / grouped,
                "interleave_deinterleave_ms": il_dil,
                "interleave_deinterleave_fraction": il_dil / grouped,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'case (N,H,W=32,16,16)':<22} {'grouped ms':>10} {'dense ms':>9} "
        f"{'ratio':>6} {'1/G':>6} {'il ms':>6} {'il %':>6} {'il+deil %':>9}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ok = r["ratio"] <= RATIO_TARGET and r["interleave_fraction"] <= INTERLEAVE_TARGET
        lines.append(
            f"{r['case']:<22} {r['grouped_ms']:>10.2f} {r['dense_ms']:>9.2f} "
            f"{r['ratio']:>6.3f} {1 / r['groups']:>6.3f} {r['interleave_ms']:>6.2f} "
            f"{100 * r['interleave_fraction']:>5.1f}% "
            f"{100 * r['interleave_deinterleave_fraction']:>8.1f}%  "
            + ("meets targets" if ok else "MISSES target")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_options(parser, repeats=15, threads_of="BLAS")
    args = parser.parse_args(argv)
    threads = limit_blas_threads(args.threads)
    rows = run(args.repeats, CLOCKS[args.clock])
    print(
        f"NumPy {np.__version__} GroupedPointwise fwd+bwd, float32, {threads}, {args.clock} "
        f"clock, median of {args.repeats}"
    )
    print(table(rows))
    print(
        f"targets: grouped/dense <= {RATIO_TARGET} (ideally ~1/G); interleave (il) <= "
        f"{100 * INTERLEAVE_TARGET:.0f}% of the grouped conv's fwd+bwd (verdict); il+deil: "
        "interleave and its backward"
    )
    write_rows(args.json, rows, args, numpy=np.__version__, threads=threads, dtype="float32")


if __name__ == "__main__":
    main()
