"""The grouped 1×1 product in TensorFlow, written several ways; which one runs is chosen by
measurement (DESIGN.md §5, ``benchmarks/bench_tf_pointwise.py``).

Every implementation maps ``x (N, H, W, Cin)`` channels-last and ``kernel (1, 1, Cin/G, Cout)``
(the Keras layout: output channel ``g*Co + o`` belongs to group ``g`` and reads only input
channels ``g*Ci .. g*Ci + Ci - 1``) to ``(N, H, W, Cout)``, without bias.

* ``"conv"``: ``tf.nn.conv2d`` with the grouped kernel. TensorFlow's oneDNN CPU kernels (on by
  default on x86) and cuDNN run grouped convolutions natively; this is the fastest measured.
* ``"matmul"``: one batched matmul over groups, ``(G, M, Ci) @ (G, Ci, Co)``, between two
  transposes. Works on every device and with XLA.
* ``"einsum"``: ``tf.einsum`` over the ``(M, G, Ci)`` view; TF lowers it to a batched matmul.
* ``"keras"``: ``keras.ops.conv``, which is what ``keras.layers.Conv2D(groups=G)`` runs. On CPU,
  Keras 3 compiles every grouped convolution with XLA, whose CPU grouped convolution is 30–250×
  slower: the route of the paper's code, kept only so benchmarks can show it.
* ``"auto"``: ``"conv"`` where TensorFlow can differentiate a grouped convolution here in the
  layer's compute dtype (TF's non-oneDNN CPU kernels cannot, nor can oneDNN's in float16),
  otherwise ``"matmul"``; probed once per process and dtype.

Under ``jit_compile=True`` on CPU every implementation is lowered by XLA, whose grouped
convolution is the slow path above: there, ``impl="matmul"`` is the one to choose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ...core._validate import require_choice
from ._runtime import keras, tf

GroupedProduct = Callable[[tf.Tensor, tf.Tensor, int], tf.Tensor]


def grouped_conv(x: tf.Tensor, kernel: tf.Tensor, groups: int) -> tf.Tensor:
    """``tf.nn.conv2d``: TF infers the groups from ``Cin / kernel.shape[2]``."""
    return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")


def grouped_matmul(x: tf.Tensor, kernel: tf.Tensor, groups: int) -> tf.Tensor:
    """``(G, M, Ci) @ (G, Ci, Co)`` with ``M = N*H*W``; a plain matmul when ``groups == 1``."""
    ci, cout = kernel.shape[2], kernel.shape[3]
    out_shape = tf.concat([tf.shape(x)[:-1], [cout]], axis=0)
    if groups == 1:
        return tf.reshape(tf.reshape(x, (-1, ci)) @ tf.reshape(kernel, (ci, cout)), out_shape)
    co = cout // groups
    xg = tf.transpose(tf.reshape(x, (-1, groups, ci)), (1, 0, 2))  # (G, M, Ci)
    w = tf.transpose(tf.reshape(kernel, (ci, groups, co)), (1, 0, 2))  # (G, Ci, Co)
    y = tf.transpose(xg @ w, (1, 0, 2))  # (M, G, Co): channel g*Co + o
    return tf.reshape(y, out_shape)


def grouped_einsum(x: tf.Tensor, kernel: tf.Tensor, groups: int) -> tf.Tensor:
    """``y[m, g, o] = sum_i x[m, g, i] * kernel[0, 0, i, g*Co + o]``."""
    ci, cout = kernel.shape[2], kernel.shape[3]
    xg = tf.reshape(x, (-1, groups, ci))
    w = tf.reshape(kernel, (ci, groups, cout // groups))
    y = tf.einsum("mgi,igo->mgo", xg, w)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [cout]], axis=0))


def grouped_keras_conv(x: tf.Tensor, kernel: tf.Tensor, groups: int) -> tf.Tensor:
    """``keras.ops.conv``, as ``keras.layers.Conv2D(groups=G)`` (XLA-compiled on CPU)."""
    return keras.ops.conv(x, kernel, strides=1, padding="valid", data_format="channels_last")


IMPLEMENTATIONS: dict[str, GroupedProduct] = {
    "conv": grouped_conv,
    "matmul": grouped_matmul,
    "einsum": grouped_einsum,
    "keras": grouped_keras_conv,
}
IMPLS = ("auto", *IMPLEMENTATIONS)


@functools.cache
def grouped_conv_differentiable(dtype: str = "float32") -> bool:
    """Whether ``tf.nn.conv2d`` and both its gradients run for a grouped kernel of ``dtype`` here.

    TF's own (non-oneDNN) CPU kernels raise "Gradients for grouped convolutions are not
    supported on CPU"; oneDNN (the x86 default) supports them in float32 and bfloat16 but not
    float16 (the compute dtype of Keras's ``mixed_float16``); cuDNN supports them.
    """
    # Eagerly even when first asked while tracing a tf.function. init_scope also pauses gradient
    # tapes, so the two gradient kernels are called directly (a tape here recorded nothing, and
    # the probe passed everywhere).
    with tf.init_scope():
        x = tf.ones((1, 1, 1, 4), dtype=dtype)
        kernel = tf.ones((1, 1, 2, 4), dtype=dtype)
        strides = (1, 1, 1, 1)
        try:
            dy = grouped_conv(x, kernel, 2)
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=strides,
                padding="VALID",
            )  # fmt: skip
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=strides,
                padding="VALID",
            )  # fmt: skip
        except (
            tf.errors.InvalidArgumentError,
            tf.errors.UnimplementedError,
            tf.errors.NotFoundError,
        ):
            return False
    return True


def check_impl(impl: str) -> str:
    """``impl`` itself if it names an implementation (or ``"auto"``); ``ValueError`` otherwise."""
    return require_choice("impl", impl, IMPLS)


def resolve_impl(impl: str, dtype: str = "float32") -> str:
    """The concrete implementation name for ``impl`` (``"auto"`` resolved for this machine and
    the compute ``dtype``)."""
    if check_impl(impl) == "auto":
        return "conv" if grouped_conv_differentiable(dtype) else "matmul"
    return impl


def grouped_product(impl: str, dtype: str = "float32") -> GroupedProduct:
    """The function computing the grouped 1×1 product for ``impl`` in compute ``dtype``."""
    return IMPLEMENTATIONS[resolve_impl(impl, dtype)]
