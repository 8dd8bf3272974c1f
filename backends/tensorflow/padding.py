"""Keras ``correct_pad`` as a layer: the zero padding before every stride-2 (and the stem) conv.

The amounts are core's ``pad_amounts(size, k, stride, "correct")``, i.e.
``(k//2 - (1 - size % 2), k//2)`` per spatial axis, computed from the *actual* size: with a
static shape they are Python ints; with an unknown size (``input_shape=(None, None, 3)``) they
are chosen at run time from its parity, where ``keras.applications`` silently assumes even.
"""

from __future__ import annotations

from typing import Any

from ...core._validate import require_positive_int
from ...core.ops.conv import pad_amounts
from ._runtime import SERIALIZATION_PACKAGE, keras, tf


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CorrectPadding2D(keras.layers.Layer):
    """Zero-pad ``(N, H, W, C) -> (N, H + t + b, W + l + r, C)`` for a following valid
    ``kernel_size`` × ``kernel_size`` convolution of stride ``strides`` (channels-last)."""

    def __init__(self, kernel_size: int, strides: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_size = require_positive_int("kernel_size", kernel_size)
        self.strides = require_positive_int("strides", strides)

    def build(self, input_shape: Any) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                f"Expected inputs (N, H, W, C) of rank 4, received shape {tuple(input_shape)}"
            )
        super().build(input_shape)

    def _amounts(self, size: int | None) -> tuple[int, int] | None:
        if size is None:
            return None
        return pad_amounts(size, self.kernel_size, self.strides, "correct")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        pads: list[Any] = [(0, 0)]
        for axis in (1, 2):
            static = self._amounts(x.shape[axis])
            if static is not None:
                pads.append(static)
            else:
                # "correct" padding depends only on the size's parity.
                even, odd = self._amounts(2), self._amounts(1)
                pads.append(tf.where(tf.shape(x)[axis] % 2 == 0, even, odd))
        pads.append((0, 0))
        if all(isinstance(p, tuple) for p in pads):
            return tf.pad(x, pads)
        y = tf.pad(x, tf.stack([tf.convert_to_tensor(p, tf.int32) for p in pads]))
        if x.shape[-1] is None:
            return y
        # Pad amounts known only at run time leave every dimension unknown to graph shape
        # inference, the channels too, and TFLite cannot lower the next conv without them:
        # restate the channel count (a reshape; TFLite has no tf.ensure_shape).
        return tf.reshape(y, tf.concat([tf.shape(y)[:-1], [x.shape[-1]]], axis=0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        out = list(input_shape)
        for axis in (1, 2):
            pads = self._amounts(input_shape[axis])
            out[axis] = None if pads is None else input_shape[axis] + sum(pads)
        return tuple(out)

    def get_config(self) -> dict:
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides}
