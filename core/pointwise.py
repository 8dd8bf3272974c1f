"""Grouped pointwise convolution, channel interleaving and the kPointwise composite (kEffNet).

Channels-last throughout: any ``(..., C)`` array, usually ``(N, H, W, C)``.

* ``group_count(cin, cout, m)``: how many groups a 1×1 conv gets with at least ``m`` channels each.
* ``GroupedPointwise``: a 1×1 conv whose output block ``g`` sees only input block ``g``
  (contiguous blocks, like ``groups=`` in Keras/PyTorch). Kernel in Keras layout
  ``(1, 1, Cin/G, Cout)``.
* ``interleave`` / ``deinterleave``: the channel shuffle that lets each group of a next grouped
  conv with the same ``G`` (kPointwise's second conv) read channels from ``min(S, G)`` different
  groups of this one: ``out[..., s*G + g] = in[..., g*S + s]`` (``torch.nn.ChannelShuffle(G)``).
* ``KPointwise``: DESIGN.md §1's four-case composite, forward and backward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device, is_cupy_array, is_numpy_array

from ._validate import (
    check_cache,
    check_dy,
    namespace,
    require_bool,
    require_channels,
    require_dim,
    require_divides,
    require_float,
    require_ndim,
    require_positive_int,
)
from .ops.activations import get_activation
from .ops.elementwise import Add
from .ops.normalization import BatchNorm
from .params import shape_problems


def group_count(cin: int, cout: int, min_channels_per_group: int) -> int:
    """Largest ``d <= max(1, min(cin, cout, cin // m))`` dividing both ``cin`` and ``cout``.

    >>> group_count(192, 320, 16), group_count(1152, 48, 32), group_count(16, 96, 16)
    (8, 24, 1)
    """
    cin = require_positive_int("cin", cin)
    cout = require_positive_int("cout", cout)
    m = require_positive_int("min_channels_per_group", min_channels_per_group)
    bound = max(1, min(cin, cout, cin // m))
    return next(d for d in range(bound, 0, -1) if cin % d == 0 and cout % d == 0)


def _check_shuffle(x: Any, groups: int) -> int:
    """Validate ``interleave``/``deinterleave`` arguments: ``x`` an array with a channel axis
    and ``groups`` a positive int dividing ``x.shape[-1]``. Returns ``groups`` as an int."""
    namespace(x, names=("x",))
    groups = require_positive_int("groups", groups)
    if x.ndim < 1:
        raise ValueError(f"Expected x with a channel axis, received x.shape={tuple(x.shape)}")
    require_divides(groups, x.shape[-1], "channels x.shape[-1]")
    return groups


def _shuffle(x: Any, rows: int) -> Any:
    """View channels as ``(rows, C // rows)``, transpose, flatten (arguments already checked).

    ``interleave`` passes ``rows = G`` (``(G, S) -> (S, G)``); ``deinterleave`` passes
    ``rows = S`` (``(S, G) -> (G, S)``), the inverse permutation."""
    xp = namespace(x)
    lead = tuple(x.shape[:-1])
    c = x.shape[-1]
    cols = c // rows if rows else 0  # deinterleave of 0 channels has 0 rows
    y = xp.reshape(x, lead + (rows, cols))
    y = xp.permute_dims(y, tuple(range(len(lead))) + (len(lead) + 1, len(lead)))  # swap last two
    return xp.reshape(y, lead + (c,))


def interleave(x: Any, groups: int) -> Any:
    """``out[..., s*G + g] = x[..., g*S + s]`` with ``S = C // G`` (in kPointwise, ``C = Cout`` so
    ``S`` is ``Co``, a group's width): view channels as ``(G, S)``, transpose to ``(S, G)``,
    flatten. A permutation, so its backward is ``deinterleave``.

    Shapes: x ``(..., C)`` -> ``(..., C)``; ``groups`` divides ``C``."""
    groups = _check_shuffle(x, groups)
    return _shuffle(x, groups)


def deinterleave(x: Any, groups: int) -> Any:
    """Inverse of ``interleave``: view channels as ``(S, G)``, transpose to ``(G, S)``, flatten.

    Shapes: x ``(..., C)`` -> ``(..., C)``; ``groups`` divides ``C``."""
    groups = _check_shuffle(x, groups)
    return _shuffle(x, x.shape[-1] // groups)


class Interleave:
    """The interleave as an op: forward ``interleave(x, G)``; backward ``deinterleave(dy, G)``
    (the gradient of a permutation is the inverse permutation)."""

    @staticmethod
    def forward(x: Any, groups: int) -> tuple[Any, dict]:
        return interleave(x, groups), {
            "op": "Interleave",
            "groups": groups,
            "y_shape": tuple(x.shape),
        }

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "Interleave")
        check_dy(cache["y_shape"], dy, "Interleave")
        return deinterleave(dy, cache["groups"]), {}


# NOTE: for group g, the batched matmul reads Ci strided columns from every row of x; on large
# NumPy inputs that walk is cache/TLB bound (1152->192, G=64: ~2x slower than needed). Working
# through blocks of rows of about this many bytes keeps each block in cache. Ungrouped convs
# (one plain matmul) and other libraries (CuPy) take all rows at once.
ROW_BLOCK_BYTES = 1 << 20


def _row_blocks(a: Any, width: int, groups: int) -> list[slice]:
    """Slices over the rows of ``a`` ``(M, ...)``: for grouped NumPy convs, blocks of about
    ``ROW_BLOCK_BYTES`` counting ``width`` values per row, i.e.
    ``ROW_BLOCK_BYTES // (width * itemsize)`` rows; else one block of all ``M`` rows (no block
    when ``M == 0``)."""
    m = a.shape[0]
    rows = max(1, m)
    if groups > 1 and is_numpy_array(a):
        rows = max(1, ROW_BLOCK_BYTES // (width * a.dtype.itemsize))
    return [slice(r, min(r + rows, m)) for r in range(0, m, rows)]


def _group(xp: Any, a: Any, groups: int) -> Any:
    """``(B, G*c) -> (G, B, c)``: channel block ``g`` of every row, as matrix ``g``."""
    b, c = a.shape
    return xp.permute_dims(xp.reshape(a, (b, groups, c // groups)), (1, 0, 2))


def _ungroup(xp: Any, a: Any) -> Any:
    """``(G, B, c) -> (B, G*c)``, the inverse of ``_group``."""
    groups, b, c = a.shape
    return xp.reshape(xp.permute_dims(a, (1, 0, 2)), (b, groups * c))


def _native_matmul(a: Any) -> Any | None:
    """The library's own ``matmul``, which takes ``out=``, for NumPy and CuPy arrays; else None
    (the array API has no ``out=``)."""
    if is_numpy_array(a):
        return np.matmul
    if is_cupy_array(a):
        import cupy

        return cupy.matmul
    return None


def _matmul_ungrouped(xp: Any, a: Any, b: Any, out: Any, rows: slice) -> None:
    """``out[rows, :] = _ungroup(a @ b)`` for ``a (G, B, k)``, ``b (G, k, c)``, ``out (M, G*c)``.

    NumPy and CuPy write group ``g``'s product straight into columns ``g*c ...`` of ``out``
    (BLAS / cuBLAS with leading dimension ``G*c``): no temporary, and no transposing copy out of
    it, which took ~20% of a NumPy grouped conv's forward + backward at 192->192, G=12 (~2% with
    CuPy on an H100). Other libraries take the temporary."""
    matmul = _native_matmul(out)
    if matmul is not None:
        groups, bsz, c = a.shape[0], a.shape[1], b.shape[2]
        block = xp.reshape(out[rows, :], (bsz, groups, c))  # a view: the rows are contiguous
        matmul(a, b, out=xp.permute_dims(block, (1, 0, 2)))
    else:
        out[rows, :] = _ungroup(xp, a @ b)


def check_grouped_pointwise(
    x: Any, kernel: Any, bias: Any | None, groups: int | None
) -> tuple[Any, int]:
    """Validate ``GroupedPointwise`` arguments: x ``(..., Cin)``, kernel ``(1, 1, Cin/G, Cout)``,
    bias ``(Cout,)`` or ``None``. Returns ``(array namespace, groups)``, inferring
    ``groups = Cin / kernel.shape[2]`` when it is ``None``. Shared with other implementations of
    the same op (the CuPy fused kernels) so that bad input fails identically everywhere."""
    xp = namespace(x, kernel, bias, names=("x", "kernel", "bias"))
    require_float(xp, "x", x)
    require_float(xp, "kernel", kernel)
    if x.ndim < 1:
        raise ValueError(f"Expected x of shape (..., Cin), received x.shape={tuple(x.shape)}")
    require_ndim("kernel", kernel, 4, "(1, 1, Cin/G, Cout)")
    if tuple(kernel.shape[:2]) != (1, 1):
        raise ValueError(f"Expected a 1x1 kernel, received kernel.shape={tuple(kernel.shape)}")
    cin, ci, cout = x.shape[-1], kernel.shape[2], kernel.shape[3]
    if groups is None:
        if ci < 1:
            raise ValueError(
                "Expected kernel.shape[2] >= 1 (input channels per group), "
                f"received kernel.shape={tuple(kernel.shape)}"
            )
        if cin % ci:
            raise ValueError(
                f"Expected kernel.shape[2] to divide x.shape[-1]={cin}, "
                f"received kernel.shape={tuple(kernel.shape)}"
            )
        groups = cin // ci
    require_positive_int("groups", groups)
    require_channels("x", cin, "kernel", cout)
    require_divides(groups, cin, "input channels x.shape[-1]")
    require_divides(groups, cout, "output channels kernel.shape[3]")
    require_dim("kernel", kernel, 2, cin // groups, f"Cin/G = {cin}/{groups}")
    if bias is not None:
        require_ndim("bias", bias, 1, "(Cout,)")
        require_float(xp, "bias", bias)
        require_dim("bias", bias, 0, cout, "output channels")
    return xp, groups


class GroupedPointwise:
    """Grouped 1×1 convolution:
    ``y[..., g*Co + o] = sum_i x[..., g*Ci + i] * W[g, i, o] + b[g*Co + o]``.

    Shapes: x ``(..., Cin)``, kernel ``(1, 1, Ci, Cout)`` (Keras layout) with ``Ci = Cin/G``,
    ``Co = Cout/G``, so ``W[g, i, o] = kernel[0, 0, i, g*Co + o]``; bias ``(Cout,)``;
    ``G = Cin / kernel.shape[2]`` unless ``groups`` is given. y ``(..., Cout)``.
    Computed as a batched matmul over groups, ``(G, M, Ci) @ (G, Ci, Co)`` with ``M`` the
    product of the leading axes, on blocks of the ``M`` rows (see ``ROW_BLOCK_BYTES``).

    Backward per group, with ``x2`` and ``dy2`` the ``(M, Cin)`` and ``(M, Cout)`` matrices of x
    and dy, ``x_g = x2[:, g*Ci:(g+1)*Ci]`` ``(M, Ci)`` and ``dy_g = dy2[:, g*Co:(g+1)*Co]``:
    ``dW[g] = x_g^T @ dy_g``, ``dx_g = dy_g @ W[g]^T``, ``db = sum_M dy``. grads: ``"kernel"``
    in the kernel's layout, ``"bias"`` when there is one.
    """

    @staticmethod
    def forward(
        x: Any, kernel: Any, bias: Any | None = None, groups: int | None = None
    ) -> tuple[Any, dict]:
        xp, groups = check_grouped_pointwise(x, kernel, bias, groups)
        cin, ci, cout = x.shape[-1], kernel.shape[2], kernel.shape[3]
        co = cout // groups
        x2 = xp.reshape(x, (-1, cin))  # (M, Cin)
        w = xp.permute_dims(xp.reshape(kernel, (ci, groups, co)), (1, 0, 2))  # (G, Ci, Co)
        dtype = xp.result_type(x.dtype, kernel.dtype)
        y = xp.empty((x2.shape[0], cout), dtype=dtype, device=device(x))
        for rows in _row_blocks(x2, max(cin, cout), groups):
            _matmul_ungrouped(xp, _group(xp, x2[rows, :], groups), w, y, rows)
        y = xp.reshape(y, tuple(x.shape[:-1]) + (cout,))
        if bias is not None:
            y = y + bias
        cache = {
            "op": "GroupedPointwise",
            "x2": x2,
            "w": w,
            "has_bias": bias is not None,
            "y_shape": tuple(y.shape),
            "kernel_shape": tuple(kernel.shape),
        }
        return y, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "GroupedPointwise")
        xp = check_dy(cache["y_shape"], dy, "GroupedPointwise", like=cache["x2"])
        x2, w = cache["x2"], cache["w"]
        groups, _, co = w.shape
        cin, cout = x2.shape[1], groups * co
        dy2 = xp.reshape(dy, (-1, cout))
        dtype = xp.result_type(dy.dtype, w.dtype)
        dx = xp.empty((dy2.shape[0], cin), dtype=dtype, device=device(dy))
        dw = xp.zeros(w.shape, dtype=xp.result_type(x2.dtype, dy.dtype), device=device(dy))
        for rows in _row_blocks(x2, max(cin, cout), groups):
            dyg = _group(xp, dy2[rows, :], groups)  # (G, B, Co)
            dw = dw + xp.matrix_transpose(_group(xp, x2[rows, :], groups)) @ dyg  # (G, Ci, Co)
            _matmul_ungrouped(xp, dyg, xp.matrix_transpose(w), dx, rows)
        grads = {"kernel": xp.reshape(xp.permute_dims(dw, (1, 0, 2)), cache["kernel_shape"])}
        if cache["has_bias"]:
            grads["bias"] = xp.sum(dy2, axis=0)
        return xp.reshape(dx, tuple(dy.shape[:-1]) + (cin,)), grads


@dataclass(frozen=True)
class KPointwiseSpec:
    """Structure of one kPointwise layer (DESIGN.md §1). ``groups == 1`` is a plain 1×1 conv,
    which is also how every pointwise conv of the original EfficientNet is described.

    ``bn``: a batch norm after each conv; ``activation``: ``"swish"``, ``"sigmoid"`` or ``None``,
    after each BN (after the conv and its bias where ``bn`` is False); ``bias``: a bias in each
    conv (the squeeze-excite convs, which have no BN). The second conv, when there is one, has
    the same settings and its own parameters."""

    cin: int
    cout: int
    groups: int = 1
    bn: bool = True
    activation: str | None = None
    bias: bool = False

    def __post_init__(self) -> None:
        require_positive_int("cin", self.cin)
        require_positive_int("cout", self.cout)
        require_positive_int("groups", self.groups)
        require_divides(self.groups, self.cin, "cin")
        require_divides(self.groups, self.cout, "cout")
        require_bool("bn", self.bn)
        require_bool("bias", self.bias)
        get_activation(self.activation)

    @classmethod
    def from_min_channels(
        cls, cin: int, cout: int, min_channels_per_group: int | None, **kw: Any
    ) -> KPointwiseSpec:
        """Spec with ``group_count(cin, cout, m)`` groups; ``m=None`` means ungrouped
        (EfficientNet)."""
        if min_channels_per_group is None:
            return cls(cin, cout, 1, **kw)
        return cls(cin, cout, group_count(cin, cout, min_channels_per_group), **kw)

    @property
    def interleaves(self) -> bool:
        """DESIGN.md §1 step 3: interleave when grouped and each group has more than one
        output channel."""
        return self.groups > 1 and self.cout // self.groups > 1

    @property
    def has_second_conv(self) -> bool:
        """DESIGN.md §1 step 4: a second grouped conv plus residual when grouped and
        ``cin >= cout``."""
        return self.groups > 1 and self.cin >= self.cout

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """``{local name: (shape, trainable)}``; names are ``conv``/``bn`` (+ ``conv2``/``bn2``)."""
        shapes: dict[str, tuple[tuple[int, ...], bool]] = {}
        convs = [("conv", "bn", self.cin)] + (
            [("conv2", "bn2", self.cout)] if self.has_second_conv else []
        )
        for conv, bn, cin in convs:
            shapes[f"{conv}/kernel"] = ((1, 1, cin // self.groups, self.cout), True)
            if self.bias:
                shapes[f"{conv}/bias"] = ((self.cout,), True)
            if self.bn:
                for p, trainable in (
                    ("gamma", True),
                    ("beta", True),
                    ("moving_mean", False),
                    ("moving_variance", False),
                ):
                    shapes[f"{bn}/{p}"] = ((self.cout,), trainable)
        return shapes

    def macs(self, spatial: int) -> int:
        """Multiply-accumulates over ``spatial`` = H*W positions (conv products only)."""
        per_conv = spatial * (self.cin // self.groups) * self.cout
        second = spatial * (self.cout // self.groups) * self.cout if self.has_second_conv else 0
        return per_conv + second


def _conv_bn_act(spec: KPointwiseSpec, params: dict, x: Any, conv: str, bn: str, training: bool):
    """``act(BN(gconv(x)))`` forward (one ``f`` of docs/method.md §5); returns the output and
    the per-step caches ``(c_conv, c_bn, c_act)``, ``None`` for a step the spec omits."""
    y, c_conv = GroupedPointwise.forward(
        x, params[f"{conv}/kernel"], params.get(f"{conv}/bias"), spec.groups
    )
    c_bn = c_act = None
    if spec.bn:
        y, c_bn = BatchNorm.forward(
            y,
            params[f"{bn}/gamma"],
            params[f"{bn}/beta"],
            params[f"{bn}/moving_mean"],
            params[f"{bn}/moving_variance"],
            training=training,
        )
    act = get_activation(spec.activation)
    if act is not None:
        y, c_act = act.forward(y)
    return y, (c_conv, c_bn, c_act)


def _conv_bn_act_backward(
    spec: KPointwiseSpec, caches: tuple, dy: Any, conv: str, bn: str, grads: dict
):
    """VJP of ``_conv_bn_act`` (one ``fᵀ`` of docs/method.md §6): the steps' backwards in
    reverse order. Adds the parameter gradients to ``grads`` under ``conv``/``bn`` names and
    returns the gradient of the conv's input."""
    c_conv, c_bn, c_act = caches
    act = get_activation(spec.activation)
    if act is not None:
        dy, _ = act.backward(c_act, dy)
    if spec.bn:
        dy, g = BatchNorm.backward(c_bn, dy)
        grads.update({f"{bn}/{k}": v for k, v in g.items()})
    dx, g = GroupedPointwise.backward(c_conv, dy)
    grads.update({f"{conv}/{k}": v for k, v in g.items()})
    return dx


class KPointwise:
    """kPointwise (DESIGN.md §1), channels-last ``(..., Cin) -> (..., Cout)``, in its steps:

    1. ``G == 1``: ``out = act(BN(conv(x)))``, a plain 1×1 conv; nothing else.
    2. ``G > 1``: ``y1 = act(BN(gconv_G(x)))``;
    3. ``z = interleave(y1, G)`` if ``Cout // G > 1`` else ``y1``;
    4. ``out = act(BN(gconv2_G(z))) + y1`` if ``Cin >= Cout`` else ``z`` — the residual adds the
       *non-interleaved* ``y1``.

    Backward, in reverse: ``dy`` reaches ``y1`` twice when there is a second conv — directly
    through the residual and through ``conv2 -> deinterleave`` — and the two are summed before
    the first conv's backward.

    ``params`` uses the local names of ``KPointwiseSpec.param_shapes``; ``grads`` likewise.
    In training mode ``cache["moving_stats"]`` holds the updated BN moving statistics.
    """

    @staticmethod
    def forward(
        spec: KPointwiseSpec, params: dict, x: Any, training: bool = False
    ) -> tuple[Any, dict]:
        check_kpointwise_inputs(spec, params, x)
        training = require_bool("training", training)
        y1, c1 = _conv_bn_act(spec, params, x, "conv", "bn", training)
        z = interleave(y1, spec.groups) if spec.interleaves else y1
        cache: dict = {"op": "KPointwise", "spec": spec, "c1": c1, "y_shape": tuple(y1.shape)}
        out = z
        if spec.has_second_conv:
            y2, cache["c2"] = _conv_bn_act(spec, params, z, "conv2", "bn2", training)
            out, _ = Add.forward(y2, y1)
        cache["moving_stats"] = _moving_stats(params, cache) if training and spec.bn else {}
        return out, cache

    @staticmethod
    def backward(cache: dict, dy: Any) -> tuple[Any, dict]:
        check_cache(cache, "KPointwise")
        check_dy(cache["y_shape"], dy, "KPointwise")
        spec: KPointwiseSpec = cache["spec"]
        grads: dict = {}
        dz = dy
        dy1 = None
        if spec.has_second_conv:
            dy1 = dy  # the residual branch
            dz = _conv_bn_act_backward(spec, cache["c2"], dy, "conv2", "bn2", grads)
        dz = deinterleave(dz, spec.groups) if spec.interleaves else dz
        dy1 = dz if dy1 is None else dy1 + dz
        dx = _conv_bn_act_backward(spec, cache["c1"], dy1, "conv", "bn", grads)
        return dx, grads


def check_kpointwise_inputs(spec: KPointwiseSpec, params: Mapping[str, Any], x: Any) -> None:
    """Validate a kPointwise call before any computation: ``spec`` a ``KPointwiseSpec``, ``x``
    a floating array ``(..., spec.cin)``, one ``ValueError`` listing every missing, unexpected or
    mis-shaped parameter of ``spec``, and every parameter a floating array of ``x``'s library
    (errors name it, e.g. ``params['bn2/gamma']``). Shared with other implementations of the
    layer (the CuPy fused one) so that bad input fails identically."""
    if not isinstance(spec, KPointwiseSpec):
        raise TypeError(f"Expected spec to be a KPointwiseSpec, received {type(spec).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a dict {{name: array}}, received {type(params).__name__}"
        )
    namespace(x, names=("x",))
    if x.ndim < 1 or x.shape[-1] != spec.cin:
        raise ValueError(
            f"Expected x.shape[-1] == {spec.cin} (the layer's Cin), "
            f"received x.shape={tuple(x.shape)}"
        )
    problems = shape_problems(spec.param_shapes(), params)
    if problems:
        raise ValueError(f"Parameters do not match {spec}: " + "; ".join(problems))
    names = ("x",) + tuple(f"params[{k!r}]" for k in params)
    xp = namespace(x, *params.values(), names=names)
    for name, a in zip(names, (x, *params.values())):
        require_float(xp, name, a)


def _moving_stats(params: dict, cache: dict) -> dict:
    """Updated moving mean/variance of ``bn`` (and ``bn2``) after a training forward, keyed by
    the local parameter names (``{"bn/moving_mean": ..., ...}``)."""
    out = {}
    for bn, key in (("bn", "c1"), ("bn2", "c2")):
        if key in cache:
            # cache[key] is _conv_bn_act's (c_conv, c_bn, c_act): [1] is the BN's cache
            m, v = BatchNorm.updated_moving_stats(
                params[f"{bn}/moving_mean"], params[f"{bn}/moving_variance"], cache[key][1]
            )
            out[f"{bn}/moving_mean"], out[f"{bn}/moving_variance"] = m, v
    return out
