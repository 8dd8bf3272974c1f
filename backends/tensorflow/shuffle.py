"""The channel interleave in TensorFlow: ``out[..., s*G + g] = in[..., g*S + s]``, ``S = C / G``.

``interleave_by_transpose`` is the textbook route: view the channels as ``(G, S)``, transpose,
flatten. TensorFlow's CPU transpose (Eigen's tensor shuffle) slows down as the output's innermost
axis gets shorter, and here that axis has ``G`` elements: with two groups (kEffNet-B0's 40→240
expands, ``(32, 31, 31, 240)`` in the train benchmark) it took 15–24 ms forward, 3–5 times a
full 2-D transpose of the same tensor (4.8 ms). Two groups are a *zip* of the channel halves, and a
complex tensor is exactly such a zip: ``tf.complex(a, b)`` stores ``a[s], b[s]`` side by side,
so bitcasting it back to floats is the interleave, bit for bit. That route (``zip_halves``) took
4.9 ms against the transpose's 18.4 (1 thread, forward); its backward, the inverse permutation,
splits a complex view into real and imaginary parts (``unzip_halves``), and each is the other's
gradient, so higher derivatives work too. For four groups and more, zipping twice or more lost
to the transpose on most shapes, so they keep it (docs/train.md; the whole step's interleaves:
benchmarks/bench_tf_shuffle.py).

The zip runs where it was measured and where it pays: in training-mode calls (a gradient
follows; inference, ``model.export`` and TFLite conversion keep the transpose, and TFLite has
no complex numbers), on float32/float64 tensors (``tf.complex`` takes no other dtype), on a
TensorFlow that sees no GPU (GPU transposes are different kernels, not measured here), outside
XLA (which cannot bitcast complex numbers), and not on a tensor that carries a forward-mode
tangent (forward-mode derivatives see the ops inside, and ``tf.bitcast`` has none).
"""

from __future__ import annotations

import functools
from typing import Any

from ._runtime import tf

ZIP_DTYPES = {tf.float32: tf.complex64, tf.float64: tf.complex128}


def interleave_by_transpose(x: tf.Tensor, groups: int) -> tf.Tensor:
    """``(..., C) -> (..., C)``: channels viewed as ``(G, S)``, transposed to ``(S, G)``."""
    rank, c = x.shape.rank, x.shape[-1]
    shape = tf.shape(x)
    y = tf.reshape(x, tf.concat([shape[:-1], [groups, c // groups]], axis=0))
    y = tf.transpose(y, [*range(rank - 1), rank, rank - 1])
    return tf.reshape(y, shape)


@tf.custom_gradient
def zip_halves(x: tf.Tensor) -> tuple[tf.Tensor, object]:
    """The interleave with two groups, ``(..., 2S) -> (..., 2S)``: ``out[..., 2s + h] =
    x[..., h*S + s]``, as the float view of ``complex(first half, second half)``. Gradient:
    ``unzip_halves``. ``x`` float32 or float64 with a known, even channel count."""
    s = x.shape[-1] // 2
    pairs = tf.complex(x[..., :s], x[..., s:])  # (..., S) complex: (x[s], x[S + s])
    return tf.reshape(tf.bitcast(pairs, x.dtype), tf.shape(x)), unzip_halves


@tf.custom_gradient
def unzip_halves(x: tf.Tensor) -> tuple[tf.Tensor, object]:
    """The inverse of ``zip_halves`` (the interleave with ``C / 2`` groups): ``out[..., h*S + s]
    = x[..., 2s + h]``, from the complex view of ``x``'s pairs. Gradient: ``zip_halves``."""
    s = x.shape[-1] // 2
    pairs_shape = tf.concat([tf.shape(x)[:-1], [s, 2]], axis=0)
    pairs = tf.bitcast(tf.reshape(x, pairs_shape), ZIP_DTYPES[x.dtype])
    return tf.concat([tf.math.real(pairs), tf.math.imag(pairs)], axis=-1), zip_halves


@functools.cache
def _sees_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def _in_xla_context() -> bool:
    """Whether the ops being built will be compiled by XLA (``tf.function(jit_compile=True)``,
    Keras's ``jit_compile``). TensorFlow answers this only through a private function, which
    Keras 2 used for the same purpose; if it is gone, assume XLA (the transpose is always safe).
    """
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - depends on TensorFlow's private layout
        return True
    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


def _has_tangent(x: tf.Tensor) -> bool:
    """Whether a forward accumulator (``tf.autodiff.ForwardAccumulator``) carries a tangent
    for ``x``. It would differentiate the ops inside the zip, and ``tf.bitcast`` has no
    derivative. Only TensorFlow's private ``forwardprop_util`` can tell; if it is gone, assume
    one does (the transpose is always safe)."""
    try:
        from tensorflow.python.eager import forwardprop_util
    except ImportError:  # pragma: no cover - depends on TensorFlow's private layout
        return True
    return any(forwardprop_util.pack_tangents([x]).indices)


def zips(x: tf.Tensor, groups: int, training: Any) -> bool:
    """Whether ``interleave(x, groups, training)`` takes the ``zip_halves`` route (see the
    module). ``training`` counts only as the Python value ``True`` (Keras's training mode)."""
    return (
        training is True
        and groups == 2
        and x.dtype in ZIP_DTYPES
        and not _sees_gpu()
        and not _in_xla_context()
        and not _has_tangent(x)
    )


def interleave(x: tf.Tensor, groups: int, training: Any) -> tf.Tensor:
    """``out[..., s*G + g] = x[..., g*S + s]`` for ``x (..., C)`` with a known ``C`` that
    ``groups`` divides (the caller checks); the same values whichever route runs."""
    if zips(x, groups, training):
        return zip_halves(x)
    return interleave_by_transpose(x, groups)
