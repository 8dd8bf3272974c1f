"""TensorFlow / Keras 3 training steps: the tensorflow backend's Functional model with a Keras
optimiser, one ``tf.function`` per step (traced once per batch shape).

Dropout layers draw from Keras ``SeedGenerator``s whose state is a variable of the model; each
epoch resets those states from ``(seed, epoch)`` so that ``--resume`` replays the same masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import backends
from ...core.arch import Architecture
from ...core.params import init_params
from ..distributed import Dist
from ..sampling import STREAM_DROPOUT, derived_seed
from .base import OptimConfig, format_device


def make_optimizer(cfg: OptimConfig) -> Any:
    """``keras.optimizers.SGD`` (momentum 0.9) or ``Adam`` (Keras defaults)."""
    import keras

    if cfg.kind == "sgd":
        return keras.optimizers.SGD(learning_rate=cfg.lr, momentum=cfg.momentum)
    return keras.optimizers.Adam(
        learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps
    )


def tensorflow_device_label() -> str:
    """Where TensorFlow places the steps by default: its first GPU if it sees one, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return format_device("cpu")
    return format_device(
        "gpu", 0, tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    )


class TensorflowFramework:
    """``gpconv.backends.get("tensorflow").build(arch)`` trained with a Keras optimiser.

    ``compile_step``: the train step is compiled by XLA (``tf.function(jit_compile=True)``);
    ``predict`` stays a plain ``tf.function``.
    """

    name = "tensorflow"

    def __init__(
        self,
        arch: Architecture,
        optim: OptimConfig,
        seed: int,
        dist: Dist,
        compile_step: bool = False,
    ) -> None:
        import tensorflow as tf

        if dist.world > 1:
            raise ValueError("Multi-process training is implemented for --backend torch only")
        self.arch, self.dist = arch, dist
        self.device_label = tensorflow_device_label()
        self.backend = backends.get("tensorflow")
        self.model = self.backend.build(arch)
        self.load_params(init_params(arch, seed))
        self.opt = make_optimizer(optim)
        self.opt.build(self.model.trainable_variables)
        model, opt = self.model, self.opt

        @tf.function(reduce_retracing=True, jit_compile=compile_step)
        def step(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss, logits

        @tf.function(reduce_retracing=True)
        def predict(x: tf.Tensor) -> tf.Tensor:
            return model(x, training=False)

        self._step, self._predict = step, predict
        self._seed_states = [
            v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")
        ]

    def set_lr(self, lr: float) -> None:
        self.opt.learning_rate.assign(lr)

    def begin_epoch(self, seed: int, epoch: int) -> None:
        for i, state in enumerate(self._seed_states):
            state.assign(
                np.array([derived_seed(seed, epoch, STREAM_DROPOUT, i), 0], dtype=state.dtype)
            )

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, logits = self._step(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64))
        return float(loss), logits.numpy()

    def begin_evaluation(self) -> None:
        pass  # one process: its model is the one saved

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(np.ascontiguousarray(x, dtype=np.float32)).numpy()

    def export_params(self) -> dict[str, np.ndarray]:
        from ...backends.tensorflow import export_params

        return export_params(self.model)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        from ...backends.tensorflow import load_params

        load_params(self.model, params)

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The optimiser's variables (iteration count, momenta / moments) in order, by path."""
        variables = self.opt.variables
        return (
            {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)},
            {"paths": [v.path for v in variables]},
        )

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        variables = self.opt.variables
        if len(arrays) != len(variables):
            raise ValueError(
                f"optimizer state has {len(arrays)} variables, the optimizer {len(variables)}"
            )
        for i, v in enumerate(variables):
            v.assign(arrays[f"{i:04d}"])
