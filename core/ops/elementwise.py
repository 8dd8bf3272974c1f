"""Element-wise ops of the MBConv block: residual add, squeeze-excite scaling, dropout."""

from __future__ import annotations

from typing import Any

from .._validate import (
    check_cache,
    check_dy,
    namespace,
    require_binary,
    require_float,
    require_ndim,
    require_rate,
    require_same_shape,
)


class Add:
    """``y = a + b`` (same shape); backward sends ``dy`` to both: ``(da, db) = (dy, dy)``, the
    caller's ``dy`` itself, twice (no copies)."""

    @staticmethod
    def forward(a: Any, b: Any) -> tuple[Any, dict]:
        xp = namespace(a, b, names=("a", "b"))
        require_float(xp, "a", a)
        require_float(xp, "b", b)
        require_same_shape("b", b, tuple(a.shape), "the shape of a")
        return a + b, {"op": "Add", "y_shape": tuple(a.shape)}

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[tuple[Any, Any], dict]:
        check_cache(cache, "Add")
        check_dy(cache["y_shape"], dy, "Add")
        return (dy, dy), {}


class ChannelScale:
    """Squeeze-excite's excite: ``y[n,h,w,c] = x[n,h,w,c] * s[n,0,0,c]``.

    Shapes: x ``(N, H, W, C)``, s ``(N, 1, 1, C)``.
    Backward: ``dx = dy * s``; ``ds[n,0,0,c] = sum_{h,w} dy * x`` (sum over the broadcast axes).
    """

    @staticmethod
    def forward(x: Any, s: Any) -> tuple[Any, dict]:
        xp = namespace(x, s, names=("x", "s"))
        require_ndim("x", x, 4, "(N, H, W, C)")
        require_float(xp, "x", x)
        require_float(xp, "s", s)
        n, _, _, c = x.shape
        require_same_shape("s", s, (n, 1, 1, c), "one scale per sample and channel")
        return x * s, {"op": "ChannelScale", "x": x, "s": s}

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[tuple[Any, Any], dict]:
        check_cache(cache, "ChannelScale")
        x, s = cache["x"], cache["s"]
        xp = check_dy(tuple(x.shape), dy, "ChannelScale", like=x)
        return (dy * s, xp.sum(dy * x, axis=(1, 2), keepdims=True)), {}


class Dropout:
    """Inverted dropout with an explicit 0/1 ``mask``: ``y = x * mask / (1 - rate)``.

    The mask has x's rank, each axis 1 or x's size, and broadcasts against x: ``x.shape`` for
    dropout, ``(N, 1, 1, 1)`` for drop-connect (stochastic depth per sample, as Keras's
    ``Dropout(noise_shape=(None, 1, 1, 1))``).
    Backward: ``dx = dy * mask / (1 - rate)``. ``mask=None`` is the identity (inference; ``x``
    and ``dy`` are returned as they are), and so is ``rate == 0``, which ignores ``mask`` (one
    set of masks then serves an architecture and its ``without_dropout`` copy). ``rate`` is a
    real number in ``[0, 1)``; ``mask`` holds only 0s and 1s (bool or any dtype).
    """

    @staticmethod
    def forward(x: Any, mask: Any | None, rate: float) -> tuple[Any, dict]:
        rate = require_rate("rate", rate)
        xp = namespace(x, mask, names=("x", "mask"))
        require_float(xp, "x", x)
        if mask is None or rate == 0.0:
            return x, {"op": "Dropout", "scale": None, "y_shape": tuple(x.shape)}
        if mask.ndim != x.ndim or any(m not in (1, d) for m, d in zip(mask.shape, x.shape)):
            raise ValueError(
                f"Expected mask broadcastable to x.shape={tuple(x.shape)} (of the same rank, "
                f"each axis 1 or x's size), received mask.shape={tuple(mask.shape)}"
            )
        # A 2.0 or 0.5 "mask" would silently rescale the kept activations a second time.
        require_binary("mask", xp, mask)
        scale = xp.astype(mask, x.dtype) / (1.0 - rate)
        return x * scale, {"op": "Dropout", "scale": scale, "y_shape": tuple(x.shape)}

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "Dropout")
        check_dy(cache["y_shape"], dy, "Dropout", like=cache["scale"])
        return (dy if cache["scale"] is None else dy * cache["scale"]), {}
