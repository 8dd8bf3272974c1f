"""The TensorFlow / Keras 3 backend adapter (``gpconv.backends.get("tensorflow")``).

This module imports without TensorFlow (its methods import what they need), so the registry can
report the backend as not installed instead of failing. Where TensorFlow is installed, importing
it imports TensorFlow too, through the package's ``__init__`` (which registers the custom layers
for ``keras.models.load_model``): about 5 s, paid by ``gpconv check``/``bench`` only when they use
this backend. Data crossing the interface is NumPy, channels-last; models are float32 Keras
Functional models.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...core._validate import require_bool
from ...core.arch import Architecture
from ...core.pointwise import KPointwiseSpec
from ..base import Backend, images_in, labels_in


def model_loss_and_grads(
    model: Any, x: np.ndarray, labels: np.ndarray, training: bool
) -> dict[str, Any]:
    """Logits, the mean softmax cross-entropy and its gradients with respect to ``x`` ``(N, H,
    W, C)`` and every trainable canonical variable, computed in ``x``'s dtype (inputs already
    checked)."""
    import tensorflow as tf

    from .params import canonical_variables

    x = tf.constant(x)
    trainable = {k: v for k, v in canonical_variables(model).items() if v.trainable}
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=training)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    dx, *grads = tape.gradient(loss, [x, *trainable.values()])
    return {
        "loss": float(loss),
        "logits": logits.numpy(),
        "dx": dx.numpy(),
        "grads": {k: g.numpy() for k, g in zip(trainable, grads, strict=True)},
    }


class TensorFlowBackend(Backend):
    """Keras 3 models built from ``core.arch``; ``impl`` picks the grouped-pointwise kernel."""

    name = "tensorflow"
    requires = ("tensorflow", "keras")
    extra = "tensorflow"
    impls = ("auto", "conv", "matmul", "einsum", "keras")  # grouped.IMPLS, without importing TF

    def __init__(self, impl: str = "auto") -> None:
        self.impl = self.checked_impl(impl)
        # model -> (architecture, intermediates model); weak so models can be freed.
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _arch(self, model: Any) -> Architecture:
        if model not in self._models:
            raise ValueError(
                f"Model {getattr(model, 'name', model)!r} was not built by this backend's build()"
            )
        return self._models[model][0]

    # --- whole networks -------------------------------------------------------------------
    def build(self, arch: Architecture) -> Any:
        from .models import build_model, intermediates_model

        # Any image size: correct_pad is then computed from each input's actual size.
        model = build_model(arch, input_shape=(None, None, arch.stem.cin), impl=self.impl)
        self._models[model] = (arch, intermediates_model(model, arch))
        return model

    def load_params(self, model: Any, params: Mapping[str, np.ndarray]) -> None:
        from .params import load_params

        load_params(model, params)

    def export_params(self, model: Any) -> dict[str, np.ndarray]:
        from .params import export_params

        return export_params(model)

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        arch = self._arch(model)
        training = require_bool("training", training)  # Keras takes "no" as training mode
        outputs = self._models[model][1](images_in(x, arch.stem.cin), training=training)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def loss_and_grads(
        self, model: Any, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        arch = self._arch(model)
        x = images_in(x, arch.stem.cin)
        training = require_bool("training", training)
        return model_loss_and_grads(
            model, x, labels_in(labels, x.shape[0], arch.num_classes), training
        )

    # --- single layers (property tests) ---------------------------------------------------
    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        import tensorflow as tf

        from .params import assign
        from .pointwise import KPointwise

        x = images_in(x, spec.cin)
        training = require_bool("training", training)
        layer = KPointwise.from_spec(spec, impl=self.impl, name="kpointwise")
        layer.build(x.shape)
        variables = layer.canonical_variables()
        assign(layer.name, variables, params)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
        trainable = {k: v for k, v in variables.items() if v.trainable}
        dy = tf.constant(np.asarray(dy, np.float32))
        if tuple(dy.shape) != tuple(y.shape):
            raise ValueError(
                f"Expected dy.shape={tuple(y.shape)} (the layer's output), received "
                f"dy.shape={tuple(dy.shape)}"
            )
        dx, *grads = tape.gradient(y, [xt, *trainable.values()], output_gradients=dy)
        stats = (
            {k: v.numpy() for k, v in variables.items() if not v.trainable}
            if training and spec.bn
            else {}
        )
        return {
            "y": y.numpy(),
            "dx": dx.numpy(),
            "grads": {k: g.numpy() for k, g in zip(trainable, grads, strict=True)},
            "moving_stats": stats,
        }

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        import tensorflow as tf

        from .pointwise import InterleaveChannels

        x = np.asarray(x)
        # Keep the input's dtype (Keras would otherwise cast floats to float32).
        dtype = x.dtype.name if np.issubdtype(x.dtype, np.floating) else None
        return InterleaveChannels(groups, dtype=dtype)(tf.constant(x)).numpy()

    def param_count(self, model: Any) -> tuple[int, int]:
        def count(weights: list) -> int:
            return int(sum(np.prod(w.shape) for w in weights))

        return count(model.trainable_weights), count(model.non_trainable_weights)


BACKEND = TensorFlowBackend()
