"""Grouped 1×1 convolution in TensorFlow: forward + backward time of each implementation.

For ``(N, H, W) = (32, 16, 16)`` and the two cases of DESIGN.md §5 (192→192 with 12 groups,
1152→192 with 64 groups), times ``y = grouped(x, kernel)`` and the gradients w.r.t. ``x`` and
``kernel`` (one ``tf.function``, no XLA) for every implementation of
``gpconv.backends.tensorflow.grouped`` — ``conv`` (``tf.nn.conv2d``, oneDNN), ``matmul``
(batched matmul over groups), ``einsum``, ``keras`` (``keras.ops.conv`` = ``keras.layers.Conv2D(
groups=G)``, XLA-compiled by Keras on CPU) — and the dense 1×1 conv of the same shape for scale.

Prints a table; ``--json PATH`` writes it. Run from the repository root::

    python benchmarks/bench_tf_pointwise.py [--json bench_tf_pointwise.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gpconv.backends.tensorflow.grouped import IMPLEMENTATIONS, resolve_impl  # noqa: E402
from gpconv.cli.main import int_at_least, nonempty_path  # noqa: E402

CASES = ((192, 192, 12), (1152, 192, 64))  # (Cin, Cout, G)


def time_fwd_bwd(fn, x: np.ndarray, kernel: np.ndarray, groups: int, reps: int) -> list[float]:
    """Seconds per call of forward + both gradients, after one warm-up call."""
    xv, kv = tf.Variable(x), tf.Variable(kernel)
    dy = tf.constant(
        np.random.default_rng(1).standard_normal(x.shape[:-1] + (kernel.shape[-1],)), tf.float32
    )

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = fn(xv, kv, groups)
        return tape.gradient(y, [xv, kv], output_gradients=dy)

    [g.numpy() for g in step()]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        [g.numpy() for g in step()]
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int_at_least("--batch", 1), default=32)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--keras-reps", type=int, default=3, help="reps of the slow XLA route (0: skip)")
    p.add_argument("--json", type=nonempty_path, help="write results to this path")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    for cin, cout, groups in CASES:
        x = rng.standard_normal((args.batch, args.size, args.size, cin)).astype(np.float32)
        runs = {"dense 1x1": (IMPLEMENTATIONS["conv"], rng.standard_normal((1, 1, cin, cout)), 1)}
        for impl, fn in IMPLEMENTATIONS.items():
            runs[impl] = (fn, rng.standard_normal((1, 1, cin // groups, cout)), groups)
        for name, (fn, kernel, g) in runs.items():
            reps = args.keras_reps if name == "keras" else args.reps
            if reps == 0:
                continue
            times = time_fwd_bwd(fn, x, kernel.astype(np.float32), g, reps)
            rows.append(
                {
                    "case": f"{cin}->{cout} G={groups}",
                    "impl": name,
                    "groups": g,
                    "median_ms": 1e3 * statistics.median(times),
                    "min_ms": 1e3 * min(times),
                    "reps": reps,
                }
            )
    for row in rows:
        dense = next(r for r in rows if r["case"] == row["case"] and r["impl"] == "dense 1x1")
        row["vs_dense"] = row["median_ms"] / dense["median_ms"]

    print(
        f"grouped 1x1 fwd+bwd, (N, H, W) = ({args.batch}, {args.size}, {args.size}), "
        f"TF {tf.__version__}, {os.cpu_count()} CPUs; impl='auto' is {resolve_impl('auto')!r} here"
    )
    print(f"{'case':<18}{'impl':<11}{'median ms':>11}{'min ms':>9}{'/ dense':>9}")
    for r in rows:
        print(
            f"{r['case']:<18}{r['impl']:<11}{r['median_ms']:>11.1f}{r['min_ms']:>9.1f}"
            f"{r['vs_dense']:>9.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "tf_grouped_pointwise",
                    "args": vars(args),
                    "tensorflow": tf.__version__,
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "auto": resolve_impl("auto"),
                    "results": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
