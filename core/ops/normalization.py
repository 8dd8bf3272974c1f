"""Batch normalisation over ``(N, H, W)`` per channel, with Keras semantics.

Keras, not PyTorch: ``eps = 1e-3``, running stats ``r <- 0.99 r + 0.01 batch`` and the running
variance fed the *biased* batch variance (Keras 3; tf.keras 2's fused kernel fed the unbiased
one). PyTorch uses eps 1e-5, the unbiased variance, and a momentum that weighs the *batch*
value, the opposite convention: its default 0.1 is ``r <- 0.9 r + 0.1 batch``, and Keras's 0.99
is PyTorch's ``momentum=0.01``. Porting any of the three silently changes the model.
"""

from __future__ import annotations

import math
from typing import Any

from .._validate import (
    check_cache,
    check_dy,
    namespace,
    require_bool,
    require_dim,
    require_float,
    require_fraction,
    require_min_ndim,
    require_nonnegative,
    require_same_shape,
)

EPSILON = 1e-3
MOMENTUM = 0.99


class BatchNorm:
    """``y = gamma * (x - mu) / sigma + beta`` with ``sigma = sqrt(var + eps)``, per channel.

    Shapes: x ``(N, ..., C)`` (``(N, H, W, C)`` or ``(N, C)``), gamma/beta/moving stats ``(C,)``.
    Training uses the batch mean ``mu`` and biased batch variance ``var = mean((x - mu)**2)``,
    each reduced over every axis but the last (``m = N*H*W`` elements per channel for
    ``(N, H, W, C)``); inference uses the moving statistics.
    An empty batch has no statistics: it is normalised as in inference (moving stats unchanged).

    Backward (training), with ``xhat = (x - mu) / sigma`` and sums/means over the same ``m``
    elements per channel: ``dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))``,
    ``dgamma = sum(dy * xhat)``, ``dbeta = sum(dy)``. ``mu`` and ``sigma`` depend on every ``x``
    of the channel: the two subtracted terms are the gradient's paths through them, and they make
    ``sum(dx) = 0`` per channel (derivation: docs/method.md §7). ``mean(dy)`` and
    ``mean(dy * xhat)`` are ``dbeta / m`` and ``dgamma / m``, which the code reuses.
    Backward (inference): the statistics are constants, so ``dx = gamma / sigma * dy``.
    """

    @staticmethod
    def forward(
        x: Any,
        gamma: Any,
        beta: Any,
        moving_mean: Any,
        moving_variance: Any,
        training: bool = False,
        eps: float = EPSILON,
    ) -> tuple[Any, dict]:
        names = ("x", "gamma", "beta", "moving_mean", "moving_variance")
        arrays = (x, gamma, beta, moving_mean, moving_variance)
        xp = namespace(*arrays, names=names)
        # A batch axis as well as the channel axis: the batch statistics need samples to reduce.
        require_min_ndim("x", x, 2, "(N, ..., C)")
        require_float(xp, "x", x)
        eps = require_nonnegative("eps", eps)
        training = require_bool("training", training)
        c = x.shape[-1]
        for name, a in zip(names[1:], arrays[1:]):
            if a.ndim != 1:
                raise ValueError(
                    f"Expected {name} of shape ({c},), received {name}.shape={tuple(a.shape)}"
                )
            require_dim(name, a, 0, c, "channels, x.shape[-1]")
            require_float(xp, name, a)
        axes = tuple(range(x.ndim - 1))
        # An empty batch has no statistics, so it takes the inference path (see the docstring).
        # math.prod(shape), not x.size: a torch tensor's size is a method
        training = training and math.prod(x.shape) > 0
        if training:
            mean = xp.mean(x, axis=axes)
            var = xp.mean((x - mean) ** 2, axis=axes)  # biased, as Keras
        else:
            mean, var = moving_mean, moving_variance
        inv_std = 1.0 / xp.sqrt(var + eps)
        xhat = (x - mean) * inv_std
        y = gamma * xhat + beta
        cache = {
            "op": "BatchNorm",
            "xhat": xhat,
            "gamma": gamma,
            "inv_std": inv_std,
            "training": training,
            "batch_mean": mean,
            "batch_variance": var,
            "y_shape": tuple(y.shape),
        }
        return y, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "BatchNorm")
        xp = check_dy(cache["y_shape"], dy, "BatchNorm", like=cache["xhat"])
        xhat, gamma, inv_std = cache["xhat"], cache["gamma"], cache["inv_std"]
        axes = tuple(range(dy.ndim - 1))
        dgamma = xp.sum(dy * xhat, axis=axes)
        dbeta = xp.sum(dy, axis=axes)
        if cache["training"]:
            m = math.prod(xhat.shape[:-1])  # N*H*W values per channel
            dx = gamma * inv_std * (dy - dbeta / m - xhat * (dgamma / m))
        else:
            dx = gamma * inv_std * dy
        return dx, {"gamma": dgamma, "beta": dbeta}

    @staticmethod
    def updated_moving_stats(
        moving_mean: Any, moving_variance: Any, cache: dict, momentum: float = MOMENTUM
    ) -> tuple[Any, Any]:
        """New ``(moving_mean, moving_variance)`` after a training step, Keras's update rule:
        ``moving = momentum * moving + (1 - momentum) * batch``, ``0 <= momentum <= 1``."""
        # The checked Python float: a NumPy scalar momentum would promote float32 stats (NEP 50).
        momentum = require_fraction("momentum", momentum)
        check_cache(cache, "BatchNorm")
        names = ("BatchNorm.forward's arrays", "moving_mean", "moving_variance")
        xp = namespace(cache["batch_mean"], moving_mean, moving_variance, names=names)
        for name, a in (("moving_mean", moving_mean), ("moving_variance", moving_variance)):
            require_same_shape(name, a, tuple(cache["batch_mean"].shape), "channels of forward")
            require_float(xp, name, a)  # integer statistics would come back as floats
        if not cache["training"]:
            return moving_mean, moving_variance
        mean = momentum * moving_mean + (1.0 - momentum) * cache["batch_mean"]
        var = momentum * moving_variance + (1.0 - momentum) * cache["batch_variance"]
        return mean, var
