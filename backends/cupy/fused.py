"""Fused grouped pointwise convolution + interleave on CuPy, and kPointwise built on it.

``FusedGroupedPointwise`` is ``core.pointwise.GroupedPointwise`` computed by the CUDA kernels of
``kernels`` with the interleave folded into how they read or write channels, so kPointwise never
runs a separate permutation pass over its activations:

* with a second conv (``Cin >= Cout``), conv2 reads ``y1`` *through* the interleave
  (``interleave_input=True``) and the residual adds the very same ``y1``;
* interleaving without a second conv, conv1 writes ``interleave(conv(x))`` directly
  (``interleave_output=True``); BN and the activation then run on the interleaved layout with
  their per-channel parameters permuted by ``core.pointwise.interleave``, and the gradients and
  moving statistics are mapped back with ``deinterleave`` so names and layouts equal core's.

BN, activations and the residual are core's ops. Shapes are channels-last ``(..., C)``, usually
``(N, H, W, C)``; kernel ``(1, 1, Cin/G, Cout)`` (Keras layout), bias ``(Cout,)`` by logical
channel, as in core.

The arrays are used through the array API (``array_api_compat``), and every launch goes through
``kernels.launch``: on CuPy arrays that is the GPU; the CPU tests swap in an emulator that runs
the same kernel source on NumPy arrays.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from ...core._validate import check_dy, require_bool
from ...core.ops.activations import get_activation
from ...core.ops.elementwise import Add
from ...core.ops.normalization import BatchNorm
from ...core.pointwise import (
    KPointwiseSpec,
    check_grouped_pointwise,
    check_kpointwise_inputs,
    deinterleave,
    interleave,
)
from . import kernels

# Debugging/testing aid: allocate kernel outputs filled with NaN instead of uninitialised, so an
# element a kernel fails to write shows up in any comparison.
POISON_OUTPUTS = False

BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")


def _empty(xp: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
    if POISON_OUTPUTS:
        return xp.full(shape, float("nan"), dtype=dtype, device=device(like))
    return xp.empty(shape, dtype=dtype, device=device(like))


def _matrix(xp: Any, a: Any, columns: int, dtype: Any) -> Any:
    """``a`` as a C-contiguous ``(rows, columns)`` matrix of ``dtype`` (a copy only if needed)."""
    a = xp.astype(xp.reshape(a, (-1, columns)), dtype, copy=False)
    return a if a.flags.c_contiguous else a.copy()


def _kernel_dtype(xp: Any, **arrays: Any) -> Any:
    """The dtype the kernels compute in (``result_type`` of ``arrays``, as core's conv), which
    must be float32 or float64; ``TypeError`` naming each argument's dtype otherwise."""
    present = {k: a for k, a in arrays.items() if a is not None}
    dtype = xp.result_type(*present.values())
    if dtype not in (xp.float32, xp.float64):
        received = ", ".join(f"{k}.dtype={a.dtype}" for k, a in present.items())
        raise TypeError(
            f"Expected float32 or float64 arrays for the fused kernels, received {received}"
        )
    return dtype


class FusedGroupedPointwise:
    """Grouped 1×1 conv with optional interleaved input and/or output, in one kernel per pass.

    ``forward(x, kernel, bias, groups, interleave_input, interleave_output)`` returns
    ``y = interleave?(GroupedPointwise(interleave?(x)))`` — ``interleave_input`` applies
    ``interleave(x, G)`` before the conv, ``interleave_output`` ``interleave(., G)`` after it (bias
    is added before, by logical channel) — without materialising either permutation.
    x ``(..., Cin)``, kernel ``(1, 1, Cin/G, Cout)``, bias ``(Cout,)``; y ``(..., Cout)``.

    ``backward(cache, dy)`` returns ``dx`` in the layout of the ``x`` handed in and
    ``{"kernel", "bias"}`` in core's layouts (the bias gradient by logical channel).
    Validation is core's (``check_grouped_pointwise``); float32 and float64 only.
    """

    @staticmethod
    def forward(
        x: Any,
        kernel: Any,
        bias: Any | None = None,
        groups: int | None = None,
        interleave_input: bool = False,
        interleave_output: bool = False,
    ) -> tuple[Any, dict]:
        xp, groups = check_grouped_pointwise(x, kernel, bias, groups)
        maps = (
            require_bool("interleave_input", interleave_input),
            require_bool("interleave_output", interleave_output),
        )
        dtype = _kernel_dtype(xp, x=x, kernel=kernel, bias=bias)
        cin, cout = x.shape[-1], kernel.shape[3]
        x2 = _matrix(xp, x, cin, dtype)  # (M, Cin)
        w = _matrix(xp, kernel, cout, dtype)  # (Ci, Cout)
        b = _matrix(xp, bias, cout, dtype)[0] if bias is not None else w
        y = _empty(xp, (x2.shape[0], cout), dtype, x)
        if x2.shape[0]:  # the kernel is read as is: the maps are applied in shared memory
            kernels.launch(kernels.forward_launch(x2, w, b, bias is not None, y, groups, *maps))
        y = xp.reshape(y, tuple(x.shape[:-1]) + (cout,))
        cache = {
            "x2": x2,
            "w": w,
            "groups": groups,
            "maps": maps,
            # core's gradient dtypes: dx result_type(dy, kernel), the kernel's result_type(x, dy)
            "dtypes": (x.dtype, kernel.dtype),
            "has_bias": bias is not None,
            "x_shape": tuple(x.shape),
            "y_shape": tuple(y.shape),
            "kernel_shape": tuple(kernel.shape),
        }
        return y, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        x2, w, groups = cache["x2"], cache["w"], cache["groups"]
        xp = check_dy(cache["y_shape"], dy, "FusedGroupedPointwise", like=x2)
        m, cin = x2.shape
        ci, cout = w.shape
        # The kernels compute in one dtype, the widest of the forward's and dy's; the gradients
        # are then cast to core's dtypes (a float64 bias must not make dx float64).
        dtype = _kernel_dtype(xp, x=x2, dy=dy)
        x_dtype, kernel_dtype = cache["dtypes"]
        x2, w = _matrix(xp, x2, cin, dtype), _matrix(xp, w, cout, dtype)
        dy2 = _matrix(xp, dy, cout, dtype)
        dx = _empty(xp, (m, cin), dtype, dy)
        chunks, rows = kernels.dweight_chunks(
            m,
            ci * cout,
            kernels.multiprocessors(x2),
            kernels.dweight_threads(cin, cout, groups),
        )
        partial = _empty(xp, (chunks, ci * cout), dtype, dy)
        if m:
            wd = _matrix(xp, kernels.dinput_weights(w, groups), cin, dtype)
            kernels.launch(kernels.dinput_launch(dy2, wd, dx, groups, *cache["maps"]))
            kernels.launch(kernels.dweight_launch(x2, dy2, partial, rows, groups, *cache["maps"]))
            dw = xp.sum(partial, axis=0)
        else:
            dw = xp.zeros((ci * cout,), dtype=dtype, device=device(x2))
        dw = xp.astype(dw, xp.result_type(x_dtype, dy.dtype), copy=False)
        dx = xp.astype(dx, xp.result_type(dy.dtype, kernel_dtype), copy=False)
        grads = {"kernel": xp.reshape(dw, cache["kernel_shape"])}
        if cache["has_bias"]:
            # by memory position (the bias is by logical channel), in dy's dtype as in core
            db = xp.sum(xp.reshape(dy, (-1, cout)), axis=0)
            grads["bias"] = deinterleave(db, groups) if cache["maps"][1] else db
        return xp.reshape(dx, cache["x_shape"]), grads


# --- kPointwise -------------------------------------------------------------------------------


def _conv_bn_act(
    spec: KPointwiseSpec,
    params: dict,
    x: Any,
    conv: str,
    bn: str,
    training: bool,
    interleave_input: bool = False,
    interleave_output: bool = False,
) -> tuple[Any, tuple]:
    """``act(BN(fused conv(x)))``; with ``interleave_output`` the BN parameters are permuted to
    the interleaved channel order the conv wrote. Returns the output and the per-step caches."""
    y, c_conv = FusedGroupedPointwise.forward(
        x,
        params[f"{conv}/kernel"],
        params.get(f"{conv}/bias"),
        spec.groups,
        interleave_input=interleave_input,
        interleave_output=interleave_output,
    )
    c_bn = c_act = None
    bn_params: dict = {}
    if spec.bn:
        bn_params = {p: params[f"{bn}/{p}"] for p in BN_PARAMS}
        if interleave_output:
            bn_params = {p: interleave(v, spec.groups) for p, v in bn_params.items()}
        y, c_bn = BatchNorm.forward(y, **bn_params, training=training)
    act = get_activation(spec.activation)
    if act is not None:
        y, c_act = act.forward(y)
    return y, (c_conv, c_bn, c_act, bn_params, interleave_output)


def _conv_bn_act_backward(
    spec: KPointwiseSpec, caches: tuple, dy: Any, conv: str, bn: str, grads: dict
) -> Any:
    c_conv, c_bn, c_act, _, interleaved = caches
    act = get_activation(spec.activation)
    if act is not None:
        dy, _ = act.backward(c_act, dy)
    if spec.bn:
        dy, g = BatchNorm.backward(c_bn, dy)
        # per-channel gradients of the interleaved layout, back to the parameters' order
        grads.update(
            {f"{bn}/{k}": deinterleave(v, spec.groups) if interleaved else v for k, v in g.items()}
        )
    dx, g = FusedGroupedPointwise.backward(c_conv, dy)
    grads.update({f"{conv}/{k}": v for k, v in g.items()})
    return dx


def _moving_stats(spec: KPointwiseSpec, cache: dict) -> dict:
    """Keras's moving-statistics update of each BN, in the parameters' channel order."""
    out = {}
    for bn, key in (("bn", "c1"), ("bn2", "c2")):
        if key in cache:
            _, c_bn, _, used, interleaved = cache[key]
            stats = BatchNorm.updated_moving_stats(
                used["moving_mean"], used["moving_variance"], c_bn
            )
            if interleaved:
                stats = tuple(deinterleave(s, spec.groups) for s in stats)
            out[f"{bn}/moving_mean"], out[f"{bn}/moving_variance"] = stats
    return out


class FusedKPointwise:
    """``core.pointwise.KPointwise`` (same arguments, outputs, gradients, ``cache["moving_stats"]``
    and errors) on the fused kernels: no separate interleave pass (see the module docstring).

    Channels-last ``(..., Cin) -> (..., Cout)``. ``G == 1`` and layers that do not interleave run
    the same kernels with identity maps. Backward: with a second conv, conv2's ``dx`` is
    already in ``y1``'s layout (the kernel wrote it back through the interleave), so
    ``dy1 = dy + dx2``; without one, ``dy`` flows back through the interleaved BN into conv1.
    """

    @staticmethod
    def forward(
        spec: KPointwiseSpec, params: dict, x: Any, training: bool = False
    ) -> tuple[Any, dict]:
        check_kpointwise_inputs(spec, params, x)
        training = require_bool("training", training)
        write_interleaved = spec.interleaves and not spec.has_second_conv
        y1, c1 = _conv_bn_act(
            spec, params, x, "conv", "bn", training, interleave_output=write_interleaved
        )
        cache: dict = {"spec": spec, "c1": c1, "y_shape": tuple(y1.shape)}
        out = y1
        if spec.has_second_conv:
            y2, cache["c2"] = _conv_bn_act(
                spec, params, y1, "conv2", "bn2", training, interleave_input=spec.interleaves
            )
            out, _ = Add.forward(y2, y1)
        cache["moving_stats"] = _moving_stats(spec, cache) if training and spec.bn else {}
        return out, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_dy(cache["y_shape"], dy, "FusedKPointwise")
        spec: KPointwiseSpec = cache["spec"]
        grads: dict = {}
        dy1 = dy
        if spec.has_second_conv:
            dy1 = dy + _conv_bn_act_backward(spec, cache["c2"], dy, "conv2", "bn2", grads)
        dx = _conv_bn_act_backward(spec, cache["c1"], dy1, "conv", "bn", grads)
        return dx, grads
