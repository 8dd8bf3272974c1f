"""Fully connected layer (the classifier head)."""

from __future__ import annotations

from typing import Any

from .._validate import check_cache, check_dy, namespace, require_dim, require_float, require_ndim


class Dense:
    """``y = x @ kernel + bias``: x ``(N, Cin)``, kernel ``(Cin, Cout)`` (Keras layout),
    bias ``(Cout,)``.

    Backward: ``dx = dy @ kernel^T``, ``dkernel = x^T @ dy``, ``dbias = sum_n dy``.
    """

    @staticmethod
    def forward(x: Any, kernel: Any, bias: Any | None = None) -> tuple[Any, dict]:
        xp = namespace(x, kernel, bias, names=("x", "kernel", "bias"))
        require_ndim("x", x, 2, "(N, Cin)")
        require_ndim("kernel", kernel, 2, "(Cin, Cout)")
        require_float(xp, "x", x)
        require_float(xp, "kernel", kernel)
        require_dim("kernel", kernel, 0, x.shape[1], "input features, x.shape[1]")
        if bias is not None:
            require_ndim("bias", bias, 1, "(Cout,)")
            require_float(xp, "bias", bias)
            require_dim("bias", bias, 0, kernel.shape[1], "output features, kernel.shape[1]")
        y = x @ kernel
        if bias is not None:
            y = y + bias
        return y, {
            "op": "Dense",
            "x": x,
            "kernel": kernel,
            "has_bias": bias is not None,
            "y_shape": tuple(y.shape),
        }

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "Dense")
        xp = check_dy(cache["y_shape"], dy, "Dense", like=cache["x"])
        x, kernel = cache["x"], cache["kernel"]
        grads = {"kernel": xp.matrix_transpose(x) @ dy}
        if cache["has_bias"]:
            grads["bias"] = xp.sum(dy, axis=0)
        return dy @ xp.matrix_transpose(kernel), grads
