"""Channel interleave in TensorFlow on CPU: the reshape-transpose against the backend's route.

Takes every interleave of kEffNet-B0 16ch in one forward pass at the train benchmark's setting
(32×32, ``skip_stride_cnt=3``, batch 32, channels-last; ``perf.pointwise.interleave_sites``),
then times forward + backward of each site inside a ``tf.function`` with

* ``transpose``: ``backends.tensorflow.shuffle.interleave_by_transpose``, channels viewed as
  ``(G, S)`` and transposed (TensorFlow's gradient: the inverse transpose);
* ``InterleaveChannels``: what the layer runs in training mode, ``shuffle.interleave``: the same
  transpose, except for two groups, which zip the channel halves through a complex view
  (``shuffle.zip_halves``).

Both give the same values (checked before timing). Variants are timed round-robin; figures are
medians; the totals count each site as often as the network has it.

    python benchmarks/bench_tf_shuffle.py [--repeats 15] [--threads 1] [--clock cpu] [--json f]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gpconv.backends.tensorflow.shuffle import interleave, interleave_by_transpose  # noqa: E402
from gpconv.cli.main import add_benchmark_options  # noqa: E402
from gpconv.perf.pointwise import interleave_sites  # noqa: E402
from gpconv.perf.report import site_table, write_rows  # noqa: E402
from gpconv.perf.timing import CLOCKS, time_round_robin  # noqa: E402
from gpconv.train.frameworks import set_threads  # noqa: E402

BATCH, SIZE, SKIP = 32, 32, 3
VARIANTS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    "transpose": interleave_by_transpose,
    "InterleaveChannels": lambda x, groups: interleave(x, groups, training=True),
}


def forward_backward(
    shuffle: Callable[[tf.Tensor, int], tf.Tensor], x: tf.Tensor, dy: tf.Tensor, g: int
) -> Callable[[], list[np.ndarray]]:
    @tf.function
    def step() -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = shuffle(x, g)
        return [y, tape.gradient(y, x, output_gradients=dy)]

    return lambda: [t.numpy() for t in step()]


def run(repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for (n, h, w, c, g), count in interleave_sites(SIZE, SKIP, BATCH).items():
        x = tf.constant(rng.standard_normal((n, h, w, c)), tf.float32)
        dy = tf.constant(rng.standard_normal((n, h, w, c)), tf.float32)
        steps = {name: forward_backward(fn, x, dy, g) for name, fn in VARIANTS.items()}
        results = [step() for step in steps.values()]
        for y, dx in results[1:]:
            if not (np.array_equal(y, results[0][0]) and np.array_equal(dx, results[0][1])):
                raise AssertionError(f"the variants differ at {(n, h, w, c, g)}")
        timings = time_round_robin(steps, steps=repeats, warmup=2, clock=clock)
        rows.append(
            {
                "shape": [n, h, w, c],
                "groups": g,
                "count": count,
                **{f"{name}_ms": t.ms for name, t in timings.items()},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_options(parser, repeats=15, threads_of="TensorFlow")
    args = parser.parse_args(argv)
    set_threads("tensorflow", args.threads or None)
    rows = run(args.repeats, CLOCKS[args.clock])
    threads = args.threads or "default"
    print(
        f"TensorFlow {tf.__version__} channel interleaves of kEffNet-B0 16ch ({SIZE}x{SIZE}, "
        f"skip {SKIP}, batch {BATCH}, channels-last), forward + backward, {threads} threads, "
        f"{args.clock} clock, median of {args.repeats}"
    )
    print(site_table(rows, list(VARIANTS), "(N, H, W, C)"))
    write_rows(args.json, rows, args, tensorflow=tf.__version__, threads=threads)


if __name__ == "__main__":
    main()
