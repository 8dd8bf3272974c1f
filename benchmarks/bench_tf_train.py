"""Train-step time of kEffNet-B0 vs EfficientNet-B0 in TensorFlow / Keras 3 on this machine.

One train step = forward + backward + SGD update (``tf.function``, no XLA), at 32×32 with
``skip_stride_cnt=3`` and batch 32 by default (the paper's CIFAR setting). Measured in one run,
round-robin (one step of each model per round, ``perf.timing.time_round_robin``) so that load on a
shared machine hits every model alike:

* ``EfficientNet-B0`` (the baseline; its pointwise convs are dense),
* ``kEffNet-B0 16ch`` with each grouped-pointwise implementation (``auto`` and the explicit ones),
* ``kEffNet-B0 16ch`` with ``impl="keras"``: ``keras.ops.conv``, i.e. ``keras.layers.Conv2D(
  groups=G)``, the route of the paper's code, which Keras 3 compiles with XLA on CPU. It is ~15x
  slower, so it is timed on its own afterwards for ``--keras-rounds`` steps (a drift of 10% on a
  shared machine does not change that ratio's meaning).

Prints a table and the ratios; ``--json PATH`` writes them. Run from the repository root::

    python benchmarks/bench_tf_train.py [--rounds 15] [--threads 1] [--json bench_tf_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # one tf.function per model is intended, not retracing

from gpconv.backends.tensorflow import EfficientNetB0, KEfficientNetB0, resolve_impl  # noqa: E402
from gpconv.cli.main import add_clock_option, add_threads_option, int_at_least, nonempty_path  # noqa: E402
from gpconv.perf.timing import CLOCKS, time_round_robin  # noqa: E402


@dataclass
class Result:
    model: str
    impl: str
    steps: int
    median_ms: float
    min_ms: float


def train_step_fn(model: tf.keras.Model, lr: float = 0.01):
    """A compiled ``(x, y) -> loss`` doing forward, backward and one SGD update."""
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=lr)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int_at_least("--batch", 1), default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--skip-stride-cnt", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=15, help="round-robin rounds, one step each")
    p.add_argument("--impls", default="auto,conv,matmul,einsum", help="kEffNet implementations")
    p.add_argument(
        "--keras-rounds",
        type=int,
        default=3,
        help="timed steps of the slow Conv2D(groups) route (0 to skip it)",
    )
    add_threads_option(p, "TF intra-op")
    add_clock_option(p)
    p.add_argument("--json", type=nonempty_path, help="write results to this path")
    args = p.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    shape = (args.size, args.size, 3)
    common = dict(classes=args.classes, input_shape=shape, skip_stride_cnt=args.skip_stride_cnt)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((args.batch, *shape)).astype(np.float32))
    y = tf.constant(rng.integers(0, args.classes, args.batch))

    configs = [("EfficientNet-B0", "auto", EfficientNetB0(**common))]
    configs += [
        ("kEffNet-B0 16ch", impl, KEfficientNetB0(impl=impl, **common))
        for impl in args.impls.split(",")
    ]

    def step_of(model: tf.keras.Model):
        step = train_step_fn(model)
        return lambda: step(x, y).numpy()  # .numpy() waits for the step

    clock = CLOCKS[args.clock]
    # warm-up 2: the first call traces the tf.function, the second runs the traced graph
    timings = time_round_robin(
        {i: step_of(m) for i, (_, _, m) in enumerate(configs)}, args.rounds, warmup=2, clock=clock
    )
    if args.keras_rounds > 0:
        configs.append(("kEffNet-B0 16ch", "keras", KEfficientNetB0(impl="keras", **common)))
        slow = {len(configs) - 1: step_of(configs[-1][2])}
        timings.update(time_round_robin(slow, args.keras_rounds, warmup=2, clock=clock))
    results = [
        Result(
            name,
            impl if impl != "auto" else f"auto={resolve_impl('auto')}",
            len(timings[i].samples),
            timings[i].ms,
            1e3 * timings[i].best,
        )
        for i, (name, impl, _) in enumerate(configs)
    ]
    base = results[0].median_ms
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    print(
        f"train step, {args.size}x{args.size}, skip_stride_cnt={args.skip_stride_cnt}, "
        f"batch {args.batch}, TF {tf.__version__}, {os.cpu_count()} CPUs, {threads} threads, "
        f"{args.clock} clock"
    )
    print(f"{'model':<18}{'impl':<14}{'steps':>6}{'median ms':>11}{'min ms':>9}{'/ EffNet-B0':>13}")
    for res in results:
        print(
            f"{res.model:<18}{res.impl:<14}{res.steps:>6}{res.median_ms:>11.1f}{res.min_ms:>9.1f}"
            f"{res.median_ms / base:>13.3f}"
        )
    ratios = {f"{r.model} [{r.impl}] / EfficientNet-B0": r.median_ms / base for r in results[1:]}
    auto = results[1].median_ms if len(results) > 1 else None
    if args.keras_rounds > 0 and auto:
        ratios["Conv2D(groups) route / auto"] = results[-1].median_ms / auto
        print(
            f"speed-up of impl='{results[1].impl}' over the Conv2D(groups) route: "
            f"{results[-1].median_ms / auto:.1f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "tf_train_step",
                    "args": vars(args),
                    "tensorflow": tf.__version__,
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "results": [asdict(r) for r in results],
                    "ratios": ratios,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
