"""NumPy reference: grouped 1×1 convolution vs a dense 1×1, forward + backward, and the interleave.

For each case ``(N, H, W, Cin -> Cout, G)`` times ``GroupedPointwise.forward`` + ``.backward`` with
``G`` groups and with one group (the dense 1×1 of the same ``Cin``/``Cout``: the yardstick), and
``interleave`` alone and with ``deinterleave`` (the shuffle's forward, and forward + backward) on
the conv's output. They alternate, so a load spike on a shared machine hits all of them; the
median of ``--repeats`` is reported, as wall-clock and as process CPU time (the steadier figure on
a shared machine). Targets (issue 3): grouped/dense <= 1.0 (ideally near 1/G), interleave <= 10 %
of the grouped conv's forward + backward (the table also shows interleave + deinterleave).

    python benchmarks/bench_numpy_pointwise.py [--repeats 15] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from gpconv.core import GroupedPointwise, deinterleave, interleave
from gpconv.perf.timing import limit_blas_threads

# (N, H, W, Cin, Cout, G): DESIGN.md §5's case and block6's project conv of kEffNet-B0 16ch.
CASES = ((32, 16, 16, 192, 192, 12), (32, 16, 16, 1152, 192, 64))
RATIO_TARGET, INTERLEAVE_TARGET = 1.0, 0.10
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


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


def median_ms(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """``{name: {clock: median ms}}``, measured round-robin (one call of each per round)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: {clock: [] for clock in CLOCKS} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            starts = {clock: read() for clock, read in CLOCKS.items()}
            fn()
            for clock, read in CLOCKS.items():
                samples[name][clock].append(read() - starts[clock])
    return {
        name: {clock: 1e3 * statistics.median(v) for clock, v in by_clock.items()}
        for name, by_clock in samples.items()
    }


def run(repeats: int, dtype: type = np.float32) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n, h, w, cin, cout, groups in CASES:
        x = rng.standard_normal((n, h, w, cin)).astype(dtype)
        dy = rng.standard_normal((n, h, w, cout)).astype(dtype)
        k_grouped = rng.standard_normal((1, 1, cin // groups, cout)).astype(dtype)
        k_dense = rng.standard_normal((1, 1, cin, cout)).astype(dtype)
        ms = median_ms(
            {
                "grouped": conv_fwd_bwd(x, k_grouped, dy, groups),
                "dense": conv_fwd_bwd(x, k_dense, dy, 1),
                "interleave": shuffle(dy, groups, backward=False),
                "interleave+deinterleave": shuffle(dy, groups, backward=True),
            },
            repeats,
        )
        row = {"case": f"{cin}->{cout} G={groups}", "shape": [n, h, w], "groups": groups}
        for clock in CLOCKS:
            grouped, dense = ms["grouped"][clock], ms["dense"][clock]
            il, il_dil = ms["interleave"][clock], ms["interleave+deinterleave"][clock]
            row[clock] = {
                "grouped_ms": grouped,
                "dense_ms": dense,
                "ratio": grouped / dense,
                "interleave_ms": il,
                "interleave_fraction": il / grouped,
                "interleave_deinterleave_ms": il_dil,
                "interleave_deinterleave_fraction": il_dil / grouped,
            }
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'case (N,H,W=32,16,16)':<22} {'clock':<5} {'grouped ms':>10} {'dense ms':>9} "
        f"{'ratio':>6} {'1/G':>6} {'il ms':>6} {'il %':>6} {'il+deil %':>9}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        for clock in CLOCKS:
            t = r[clock]
            ok = t["ratio"] <= RATIO_TARGET and t["interleave_fraction"] <= INTERLEAVE_TARGET
            lines.append(
                f"{r['case']:<22} {clock:<5} {t['grouped_ms']:>10.2f} {t['dense_ms']:>9.2f} "
                f"{t['ratio']:>6.3f} {1 / r['groups']:>6.3f} {t['interleave_ms']:>6.2f} "
                f"{100 * t['interleave_fraction']:>5.1f}% "
                f"{100 * t['interleave_deinterleave_fraction']:>8.1f}%  "
                + ("meets targets" if ok else "MISSES target")
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads (0: library default)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    threads = limit_blas_threads(args.threads)
    rows = run(args.repeats)
    print(
        f"NumPy {np.__version__} GroupedPointwise fwd+bwd, float32, {threads}, "
        f"median of {args.repeats}"
    )
    print(table(rows))
    print(
        f"targets: grouped/dense <= {RATIO_TARGET} (ideally ~1/G); interleave (il) <= "
        f"{100 * INTERLEAVE_TARGET:.0f}% of the grouped conv's fwd+bwd (verdict); il+deil: "
        "interleave and its backward"
    )
    if args.json:
        meta = {
            "numpy": np.__version__,
            "machine": platform.machine(),
            "threads": threads,
            "repeats": args.repeats,
            "dtype": "float32",
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
