"""Spatial convolutions, channels-last: the stem ``Conv2D`` and ``DepthwiseConv2D``.

Both are written as a sum over kernel taps: for tap ``(i, j)`` the strided window
``xpad[:, i::s, j::s, :]`` of the padded input (its first ``Ho × Wo`` positions) meets kernel
slice ``kernel[i, j]``. This needs only slicing and ``matmul`` (so it runs on any array-API
library) and makes the backward read as the forward in reverse: each tap scatters ``dy`` back
through the same window.

Padding follows TensorFlow/Keras, the trap behind many EfficientNet ports:

* ``"same"``: total padding ``k - 1`` per axis, the extra pixel at the bottom/right (stride 1).
* ``"correct"``: Keras ``correct_pad`` for stride 2, ``(k//2 - (1 - size % 2), k//2)``, then a
  valid convolution. PyTorch's symmetric ``padding=k//2`` differs whenever the size is even.
  The stem keeps this padding at stride 1 (``skip_stride_cnt >= 0``), where an even size
  shrinks by one: 32 -> 31.
* ``"valid"``: no padding.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from .._validate import (
    check_cache,
    check_dy,
    namespace,
    require_channels,
    require_dim,
    require_float,
    require_ndim,
    require_positive_int,
)

PADDINGS = ("same", "correct", "valid")


def pad_amounts(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) zero padding of one spatial axis of length ``size``.

    ``kernel`` and ``stride`` are ints >= 1 (a 0 kernel gave ``(-1, 0)``); ``size`` is not
    checked here, as backends pass traced shapes (``output_size`` checks it)."""
    kernel = require_positive_int("kernel", kernel)
    stride = require_positive_int("stride", stride)
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if stride != 1:
            raise ValueError(
                f"Expected stride=1 with padding='same' (Keras uses 'correct' for stride 2), "
                f"received stride={stride}"
            )
        return ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
    if padding == "correct":
        before = kernel // 2 - (1 - size % 2)
        if before < 0:  # k == 1 on an even size: Keras's correct_pad gives -1, no padding fits
            raise ValueError(
                f"Expected kernel >= 2 or an odd size with padding='correct', received "
                f"kernel={kernel}, size={size}"
            )
        return (before, kernel // 2)
    raise ValueError(f"Expected padding in {PADDINGS}, received padding={padding!r}")


def output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Spatial output length (>= 1) of a convolution along one axis of length ``size``.

    ``size`` is an int >= 0, ``kernel`` and ``stride`` ints >= 1: a float would return a float
    length, a 0 stride divide by zero, and a kernel wider than the padded axis a length of 0 or
    less; each is a ``TypeError``/``ValueError`` naming the argument instead."""
    size = require_positive_int("size", size, minimum=0)
    kernel = require_positive_int("kernel", kernel)
    stride = require_positive_int("stride", stride)
    before, after = pad_amounts(size, kernel, stride, padding)
    out = (size + before + after - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"Expected size to fit a {kernel}-wide kernel once padded (padding={padding!r}), "
            f"received size={size}, padded to {size + before + after}"
        )
    return out


def _pad(xp: Any, x: Any, pads: tuple[tuple[int, int], tuple[int, int]]) -> Any:
    """Zero-pad ``x`` ``(N, H, W, C)`` by ``((top, bottom), (left, right))`` -> ``xpad``."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    n, h, w, c = x.shape
    out = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype, device=device(x))
    out[:, top : top + h, left : left + w, :] = x
    return out


def _windows(ho: int, wo: int, k: int, stride: int):
    """Yield ``(i, j, (rows, cols))``: the input window read by kernel tap ``(i, j)``."""
    for i in range(k):
        for j in range(k):
            yield (
                i,
                j,
                (
                    slice(i, i + stride * (ho - 1) + 1, stride),
                    slice(j, j + stride * (wo - 1) + 1, stride),
                ),
            )


def _prepare(x: Any, kernel: Any, stride: int, padding: str, depthwise: bool):
    """Validate a conv call; returns ``(xp, pads, k, Ho, Wo)``: the array namespace, the
    ``((top, bottom), (left, right))`` padding, the kernel size and the output's spatial size."""
    xp = namespace(x, kernel, names=("x", "kernel"))
    require_ndim("x", x, 4, "(N, H, W, C)")
    require_ndim("kernel", kernel, 4, "(kh, kw, Cin, Cout)" if not depthwise else "(kh, kw, C, 1)")
    require_float(xp, "x", x)
    require_float(xp, "kernel", kernel)
    require_positive_int("stride", stride)
    kh, kw = kernel.shape[:2]
    if kh != kw or kh < 1:
        raise ValueError(
            f"Expected a square kernel of size >= 1, received kernel.shape={tuple(kernel.shape)}"
        )
    require_dim("kernel", kernel, 2, x.shape[-1], "input channels, x.shape[-1]")
    if depthwise:
        require_dim("kernel", kernel, 3, 1, "depth multiplier")
    require_channels("x", x.shape[-1], "kernel", kernel.shape[-1])
    n, h, w, _ = x.shape
    pads = (pad_amounts(h, kh, stride, padding), pad_amounts(w, kh, stride, padding))
    try:
        ho, wo = output_size(h, kh, stride, padding), output_size(w, kh, stride, padding)
    except ValueError as err:  # said of x, which the caller passed, not of one axis's size
        raise ValueError(
            f"Input x.shape={tuple(x.shape)} is too small for a {kh}x{kh} kernel"
        ) from err
    return xp, pads, kh, ho, wo


class Conv2D:
    """Dense k×k convolution (the stem), no bias.

    Shapes: x ``(N, H, W, Cin)``, kernel ``(k, k, Cin, Cout)`` -> y ``(N, Ho, Wo, Cout)``, with
    ``s`` the stride, ``xpad`` x zero-padded (``correct_pad``, ``same`` or ``valid``) and
    ``Ho = (H + pad_top + pad_bottom - k) // s + 1`` (``Wo`` likewise).

    Forward:  ``y[n,p,q,:] = sum_{i,j} xpad[n, s*p+i, s*q+j, :] @ kernel[i, j]``.
    Backward: ``dkernel[i,j] = sum_{n,p,q} xpad[n,s*p+i,s*q+j,:]^T dy[n,p,q,:]`` and
    ``dxpad[n, s*p+i, s*q+j, :] += dy[n,p,q,:] @ kernel[i,j]^T``, then crop the padding.
    """

    @staticmethod
    def forward(x: Any, kernel: Any, stride: int = 1, padding: str = "same") -> tuple[Any, dict]:
        xp, pads, k, ho, wo = _prepare(x, kernel, stride, padding, depthwise=False)
        xpad = _pad(xp, x, pads)
        y = None
        for i, j, win in _windows(ho, wo, k, stride):
            term = xpad[:, win[0], win[1], :] @ kernel[i, j, ...]
            y = term if y is None else y + term
        cache = {
            "op": "Conv2D",
            "xpad": xpad,
            "kernel": kernel,
            "stride": stride,
            "pads": pads,
            "x_shape": tuple(x.shape),
            "y_shape": tuple(y.shape),
        }
        return y, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "Conv2D")
        xp = check_dy(cache["y_shape"], dy, "Conv2D", like=cache["xpad"])
        xpad, kernel, stride = cache["xpad"], cache["kernel"], cache["stride"]
        k = kernel.shape[0]
        _, ho, wo, cout = dy.shape
        cin = xpad.shape[-1]
        dy2 = xp.reshape(dy, (-1, cout))
        dxpad, dkernel = _grad_buffers(xp, xpad, kernel, dy)
        for i, j, win in _windows(ho, wo, k, stride):
            patch = xp.reshape(xpad[:, win[0], win[1], :], (-1, cin))
            dkernel[i, j, ...] = xp.matrix_transpose(patch) @ dy2
            dxpad[:, win[0], win[1], :] += dy @ xp.matrix_transpose(kernel[i, j, ...])
        return _crop(dxpad, cache), {"kernel": dkernel}


class DepthwiseConv2D:
    """Depthwise k×k convolution (depth multiplier 1), no bias.

    Shapes: x ``(N, H, W, C)``, kernel ``(k, k, C, 1)`` (Keras layout) -> y ``(N, Ho, Wo, C)``;
    ``s``, ``xpad``, ``Ho`` and ``Wo`` as in ``Conv2D``.

    Forward:  ``y[n,p,q,c] = sum_{i,j} xpad[n, s*p+i, s*q+j, c] * kernel[i, j, c, 0]``.
    Backward: ``dkernel[i,j,c,0] = sum_{n,p,q} xpad[n,s*p+i,s*q+j,c] * dy[n,p,q,c]`` and
    ``dxpad[n, s*p+i, s*q+j, c] += dy[n,p,q,c] * kernel[i,j,c,0]``, then crop the padding.
    """

    @staticmethod
    def forward(x: Any, kernel: Any, stride: int = 1, padding: str = "same") -> tuple[Any, dict]:
        xp, pads, k, ho, wo = _prepare(x, kernel, stride, padding, depthwise=True)
        xpad = _pad(xp, x, pads)
        y = None
        for i, j, win in _windows(ho, wo, k, stride):
            term = xpad[:, win[0], win[1], :] * kernel[i, j, :, 0]
            y = term if y is None else y + term
        cache = {
            "op": "DepthwiseConv2D",
            "xpad": xpad,
            "kernel": kernel,
            "stride": stride,
            "pads": pads,
            "x_shape": tuple(x.shape),
            "y_shape": tuple(y.shape),
        }
        return y, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "DepthwiseConv2D")
        xp = check_dy(cache["y_shape"], dy, "DepthwiseConv2D", like=cache["xpad"])
        xpad, kernel, stride = cache["xpad"], cache["kernel"], cache["stride"]
        k = kernel.shape[0]
        _, ho, wo, _ = dy.shape
        dxpad, dkernel = _grad_buffers(xp, xpad, kernel, dy)
        for i, j, win in _windows(ho, wo, k, stride):
            dkernel[i, j, :, 0] = xp.sum(xpad[:, win[0], win[1], :] * dy, axis=(0, 1, 2))
            dxpad[:, win[0], win[1], :] += dy * kernel[i, j, :, 0]
        return _crop(dxpad, cache), {"kernel": dkernel}


def _grad_buffers(xp: Any, xpad: Any, kernel: Any, dy: Any) -> tuple[Any, Any]:
    """Zeroed ``(dxpad, dkernel)``, shaped as ``xpad`` and ``kernel``, to accumulate the taps in.

    Their dtypes are ``result_type(dy, kernel)`` and ``result_type(xpad, dy)``, the dtypes of
    ``dy @ kernel^T`` and ``xpad^T @ dy``, as every other op's backward returns: buffers made
    ``zeros_like`` the forward's arrays silently cast a float64 ``dy``'s taps down to float32."""
    dev = device(dy)
    dxpad = xp.zeros(xpad.shape, dtype=xp.result_type(dy.dtype, kernel.dtype), device=dev)
    dkernel = xp.zeros(kernel.shape, dtype=xp.result_type(xpad.dtype, dy.dtype), device=dev)
    return dxpad, dkernel


def _crop(dxpad: Any, cache: dict) -> Any:
    """``dx`` ``(N, H, W, C)`` from ``dxpad``: the padding is constant zeros, so its gradient
    is dropped."""
    (top, _), (left, _) = cache["pads"]
    _, h, w, _ = cache["x_shape"]
    return dxpad[:, top : top + h, left : left + w, :]
