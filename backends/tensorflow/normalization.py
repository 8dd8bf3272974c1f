"""``FusedBatchNormalization``: ``keras.layers.BatchNormalization`` with TensorFlow's fused kernel.

Keras 3 normalises with separate element-wise ops (moments, subtract, scale...), which on CPU
costs 3–7× the fused ``FusedBatchNormV3`` kernel (oneDNN) in a train step; every EfficientNet
and kEffNet conv is followed by BN, so this is a large share of both models' step time. The
semantics are Keras's, unchanged: ``eps``/``momentum`` from the layer (1e-3 / 0.99 by default),
normalisation by the biased batch variance, and the moving variance fed the *biased* variance.
(The fused kernel reports the unbiased variance; it is rescaled by ``(m - 1) / m`` here.)

Weights, config and serialisation are the parent's; inputs the fused kernel cannot take
(not ``(N, H, W, C)`` float32 channels-last, masks, renorm, synchronized) go to the parent.
Two deliberate differences from the parent: an empty batch in training leaves the moving
statistics unchanged (Keras turns them into NaN; ``core`` and the torch backend keep them), and
the batch variance of the parent's path is differentiable twice (``_moments``): gradient
penalties and other second derivatives are exact, as with the fused kernel and in torch.
"""

from __future__ import annotations

from typing import Any

from ._runtime import SERIALIZATION_PACKAGE, keras, tf


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation over ``(N, H, W)`` of channels-last ``(N, H, W, C)`` inputs."""

    def _fusable(self, inputs: tf.Tensor, mask: Any) -> bool:
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and inputs.shape.rank == 4
            and self.axis in (-1, 3)
            and inputs.dtype == tf.float32
            and self.compute_dtype == "float32"
        )

    def _moments(self, inputs: tf.Tensor, mask: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Batch mean and biased variance for the parent's path (float64, mixed precision).

        Keras's ``ops.moments`` is ``tf.nn.moments``, which stops the gradient of the mean
        inside the variance. First derivatives do not change (that term is zero), but second
        derivatives do: a gradient penalty through a float64 kPointwise was 3-10% off its
        finite difference. Computing the variance of the centred input keeps both exact."""
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        axes = self._reduction_axes
        mean = tf.reduce_mean(inputs, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(inputs - mean), axis=axes, keepdims=True)
        return tf.squeeze(mean, axes), tf.squeeze(variance, axes)

    def call(self, inputs: tf.Tensor, training: Any = None, mask: Any = None) -> tf.Tensor:
        if not self._fusable(inputs, mask):
            if not (training and self.trainable):
                return super().call(inputs, training=training, mask=mask)
            before = [tf.convert_to_tensor(v) for v in (self.moving_mean, self.moving_variance)]
            y = super().call(inputs, training=training, mask=mask)
            empty = tf.equal(tf.size(inputs), 0)
            for var, old in zip((self.moving_mean, self.moving_variance), before):
                var.assign(tf.where(empty, old, tf.convert_to_tensor(var)))
            return y
        channels = inputs.shape[-1]
        gamma = (
            tf.convert_to_tensor(self.gamma) if self.scale else tf.ones((channels,), inputs.dtype)
        )
        beta = (
            tf.convert_to_tensor(self.beta) if self.center else tf.zeros((channels,), inputs.dtype)
        )
        if not (training and self.trainable):  # Keras: a frozen BN always runs in inference mode
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance),
                epsilon=self.epsilon,
                is_training=False,
            )
            return y
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        m = tf.cast(tf.size(inputs) // channels, unbiased.dtype)
        # Keras feeds the moving variance the biased variance; with m == 1 it is 0.
        variance = tf.where(m > 1, unbiased * (m - 1) / tf.maximum(m, 1), tf.zeros_like(unbiased))
        for var, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            old = tf.convert_to_tensor(var)
            # An empty batch (m == 0) has no statistics: keep the moving ones.
            var.assign(tf.where(m > 0, old * self.momentum + batch * (1.0 - self.momentum), old))
        return y
