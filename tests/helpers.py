"""Shared test helpers: float64 finite differences, error measures, independent NumPy oracles,
array-library conversion and the hypothesis strategies every test module draws from.

Strategies and checkers live here once (as array-api-tests' ``hypothesis_helpers``); test modules
import them rather than re-declaring them. Every assertion message names the call that failed and
its arguments, e.g. ``Conv2D.backward dkernel rel err 3e-04 > 1e-06 [stride=2, padding='correct']``.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from gpconv.core import network
from gpconv.core.arch import Architecture, HeadSpec, efficientnet, kefficientnet
from gpconv.core.ops import SoftmaxCrossEntropy
from gpconv.core.pointwise import KPointwiseSpec

# Central differences in float64: truncation ~eps^2, round-off ~1e-16/eps, so 1e-6 leaves room.
# Where gpconv.perf.allocator can apply its setting (glibc's mallopt); elsewhere it only reports.
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

FD_EPS = 1e-6
FD_TOL = 1e-6
# Inputs up to this many elements get a full central-difference gradient; larger ones are checked
# with directional derivatives along random directions.
FULL_FD_LIMIT = 600

seeds = st.integers(min_value=0, max_value=2**32 - 1)


# --- formatting and error measures ------------------------------------------------------------


def fmt(config: Mapping[str, Any]) -> str:
    """``[k=v, ...]``: the arguments of a call, for assertion messages."""
    return "[" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + "]"


def rel_err(actual: Any, expected: Any, scale: float = 0.0) -> float:
    """``‖a − b‖ / max(‖a‖, ‖b‖, scale)`` (0 when all are 0)."""
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), scale)
    return 0.0 if scale == 0.0 else float(np.linalg.norm(a - b)) / scale


def assert_close(
    call: str,
    what: str,
    actual: Any,
    expected: Any,
    config: Mapping[str, Any],
    tol: float = 1e-12,
    scale: float = 0.0,
) -> None:
    """Relative-error assertion whose message names the call, the quantity and the arguments.

    The error is relative to ``max(‖a‖, ‖b‖, scale)``: pass the norm of the call's largest output
    as ``scale`` when a quantity may be zero in exact arithmetic (a conv bias's gradient under a
    training-mode BN), so that two libraries' round-off of it is not a 100% error."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, (
        f"{call} {what}.shape={a.shape}, but should be {e.shape} {fmt(config)}"
    )
    err = rel_err(a, e, scale)
    assert err <= tol, f"{call} {what} rel err {err:.1e} > {tol:.0e} {fmt(config)}"


def to_numpy(a: Any) -> np.ndarray:
    """Any CPU array (NumPy, array-api-strict) or Python scalar as a NumPy array."""
    if isinstance(a, np.ndarray | float | int):
        return np.asarray(a)
    return np.from_dlpack(a)


def convert(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every array in nested dicts/tuples/lists (other leaves unchanged)."""
    if isinstance(tree, dict):
        return {k: convert(v, fn) for k, v in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(convert(v, fn) for v in tree)
    if isinstance(tree, np.ndarray) or hasattr(tree, "__array_namespace__"):
        return fn(tree)
    return tree


# --- finite differences -----------------------------------------------------------------------


def numeric_grad(loss: Callable[[], float], x: np.ndarray, eps: float = FD_EPS) -> np.ndarray:
    """Central-difference gradient of ``loss()`` w.r.t. ``x``, perturbing ``x`` in place."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def directional_derivative(
    loss: Callable[[], float],
    xs: Sequence[np.ndarray],
    vs: Sequence[np.ndarray],
    eps: float = FD_EPS,
) -> tuple[float, float]:
    """``(loss(x + eps v) − loss(x − eps v)) / 2 eps``, moving every array of ``xs`` along its
    ``v`` at once (in place) and restoring them afterwards; also returns ``|loss|`` there."""
    olds = [x.copy() for x in xs]
    for x, old, v in zip(xs, olds, vs):
        x[...] = old + eps * v
    up = loss()
    for x, old, v in zip(xs, olds, vs):
        x[...] = old - eps * v
    down = loss()
    for x, old in zip(xs, olds):
        x[...] = old
    return (up - down) / (2 * eps), max(abs(up), abs(down))


def check_directional(
    call: str,
    what: str,
    loss: Callable[[], float],
    xs: Sequence[np.ndarray],
    grads: Sequence[Any],
    config: Mapping[str, Any],
    rng: np.random.Generator,
    tol: float = FD_TOL,
) -> None:
    """One random unit direction ``v`` through all of ``xs`` at once: ``<g, v>`` against central
    differences, the error measured relative to ``‖g‖`` (the largest directional derivative over
    unit directions; a random ``v`` alone would give ``~‖g‖/sqrt(n)`` and amplify truncation
    error). A unit ``v`` keeps the step ``eps`` however many entries move. ``atol`` covers the
    differences' round-off when ``g`` is truly zero (e.g. a BN beta whose every consumer is a
    training-mode BN): a deep float64 network computes ``L`` to ~1e-13, so ~1e-7 after ``/ eps``."""
    gs = [to_numpy(g) for g in grads]
    vs = [rng.standard_normal(x.shape) for x in xs]
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in vs))
    vs = [v / norm for v in vs]
    ana = sum(float(np.sum(g * v)) for g, v in zip(gs, vs))
    num, loss_size = directional_derivative(loss, xs, vs)
    g_norm = np.sqrt(sum(float(np.sum(g * g)) for g in gs))
    diff, scale = abs(num - ana), max(abs(num), g_norm)
    atol = 1e-7 * (1.0 + loss_size)
    err = diff / scale if scale else 0.0
    assert diff <= tol * scale + atol, (
        f"{call} {what} directional err {err:.1e} > {tol:.0e} (numeric {num:.9e}, "
        f"analytic {ana:.9e}, |g| {g_norm:.3e}) {fmt(config)}"
    )


def check_grad_entry(
    call: str,
    name: str,
    loss: Callable[[], float],
    x: np.ndarray,
    analytic: Any,
    config: Mapping[str, Any],
    rng: np.random.Generator,
    tol: float = FD_TOL,
    directions: int = 2,
) -> None:
    """Compare one analytic gradient with central differences of ``loss`` w.r.t. ``x``: the full
    numeric gradient for small ``x``, else ``directions`` random directional derivatives.

    Passes when ``‖g − num‖ <= tol·max(‖g‖, ‖num‖) + atol``; ``atol`` (round-off of the
    differences, ~1e-16·|L|/eps per entry) only matters for gradients that are truly zero, such as
    a bias followed by training-mode batch norm."""
    g = to_numpy(analytic)
    assert g.shape == x.shape, (
        f"{call} d{name}.shape={g.shape}, but should be {x.shape} (that of {name}) {fmt(config)}"
    )
    atol = 1e-8 * (1.0 + abs(loss()))
    if x.size <= FULL_FD_LIMIT:
        num = numeric_grad(loss, x)
        diff, scale = (
            float(np.linalg.norm(g - num)),
            max(float(np.linalg.norm(g)), float(np.linalg.norm(num))),
        )
        err = diff / scale if scale else 0.0
        assert diff <= tol * scale + atol * np.sqrt(x.size), (
            f"{call} d{name} rel err {err:.1e} > {tol:.0e} (|diff| {diff:.1e}) {fmt(config)}"
        )
        return
    for _ in range(directions):
        check_directional(call, f"d{name}", loss, [x], [g], config, rng, tol)


def check_op_grads(
    call: str,
    forward: Callable[..., tuple[Any, dict]],
    backward: Callable[[dict, Any], tuple[Any, dict]],
    inputs: dict[str, np.ndarray],
    config: Mapping[str, Any],
    dx_names: tuple[str, ...] = ("x",),
    seed: int = 0,
    tol: float = FD_TOL,
) -> None:
    """Finite-difference check of an op's backward against its forward, in float64.

    ``forward(**inputs) -> (y, cache)``; ``backward(cache, dy) -> (dx, grads)`` where ``dx`` is
    one array (``dx_names == ("x",)``) or a tuple matched by ``dx_names``. The scalar checked is
    ``L = sum(y * dy)`` for a fixed random ``dy``, so ``dL/dinput`` is exactly what backward
    returns. Every input must receive a gradient (dx *and* every grads entry), and nothing else.
    """
    rng = np.random.default_rng([seed, 0xD1])  # a stream of its own: dy must not equal an input
    inputs = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
    y, cache = forward(**inputs)
    dy = rng.standard_normal(np.shape(y))
    dx, grads = backward(cache, dy)
    dxs = dx if isinstance(dx, tuple) else (dx,)
    analytic = {**dict(zip(dx_names, dxs)), **grads}
    assert set(analytic) == set(inputs), (
        f"{call} returned gradients for {sorted(analytic)}, but should for {sorted(inputs)} "
        f"{fmt(config)}"
    )

    def loss() -> float:
        return float(np.sum(to_numpy(forward(**inputs)[0]) * dy))

    for name, x in inputs.items():
        check_grad_entry(call, name, loss, x, analytic[name], config, rng, tol)


# --- independent oracles ----------------------------------------------------------------------

# DESIGN.md §1's group counts, (Cin, Cout, min channels per group, G): the paper's, not core's.
DESIGN_GROUP_COUNTS = [
    (32, 16, 16, 2),
    (16, 96, 16, 1),
    (96, 4, 16, 4),
    (4, 96, 16, 1),
    (192, 320, 16, 8),
    (1152, 192, 16, 64),
    (1152, 48, 32, 24),
    (320, 1280, 16, 20),
]


def naive_conv2d(
    x: np.ndarray,
    kernel: np.ndarray,
    stride: int,
    pads: tuple[tuple[int, int], ...],
    depthwise: bool = False,
) -> np.ndarray:
    """Textbook convolution (explicit loops over output positions) with explicit zero padding."""
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, c = xp.shape
    k = kernel.shape[0]
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    cout = c if depthwise else kernel.shape[3]
    y = np.zeros((n, ho, wo, cout), dtype=np.result_type(x, kernel))
    for p in range(ho):
        for q in range(wo):
            patch = xp[:, p * stride : p * stride + k, q * stride : q * stride + k, :]
            if depthwise:
                y[:, p, q, :] = np.einsum("nijc,ijc->nc", patch, kernel[..., 0])
            else:
                y[:, p, q, :] = np.einsum("nijc,ijco->no", patch, kernel)
    return y


def naive_grouped_pointwise(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, groups: int
) -> np.ndarray:
    """A per-group loop: output block ``g`` is input block ``g`` times its kernel columns."""
    cin, cout = x.shape[-1], kernel.shape[-1]
    ci, co = cin // groups, cout // groups
    y = np.zeros(x.shape[:-1] + (cout,), dtype=np.result_type(x, kernel))
    for g in range(groups):
        y[..., g * co : (g + 1) * co] = (
            x[..., g * ci : (g + 1) * ci] @ kernel[0, 0, :, g * co : (g + 1) * co]
        )
    return y if bias is None else y + bias


def interleave_by_formula(x: np.ndarray, groups: int) -> np.ndarray:
    """``out[..., s*G + g] = x[..., g*S + s]`` written element by element."""
    c = x.shape[-1]
    s_size = c // groups
    out = np.empty_like(x)
    for g in range(groups):
        for s in range(s_size):
            out[..., s * groups + g] = x[..., g * s_size + s]
    return out


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def batchnorm_ref(x: np.ndarray, gamma, beta, mean, var, eps: float = 1e-3) -> np.ndarray:
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def kpointwise_ref(
    spec: KPointwiseSpec, params: Mapping[str, np.ndarray], x: np.ndarray, training: bool
) -> np.ndarray:
    """DESIGN.md §1 kPointwise written from the text with the naive per-group loop."""
    act = {"swish": lambda v: v * sigmoid_ref(v), "sigmoid": sigmoid_ref, None: lambda v: v}[
        spec.activation
    ]
    axes = tuple(range(x.ndim - 1))

    def conv_bn_act(v: np.ndarray, conv: str, bn: str) -> np.ndarray:
        v = naive_grouped_pointwise(
            v, params[f"{conv}/kernel"], params.get(f"{conv}/bias"), spec.groups
        )
        if spec.bn:
            mean, var = (
                (v.mean(axis=axes), v.var(axis=axes))
                if training
                else (params[f"{bn}/moving_mean"], params[f"{bn}/moving_variance"])
            )
            v = batchnorm_ref(v, params[f"{bn}/gamma"], params[f"{bn}/beta"], mean, var)
        return act(v)

    y1 = conv_bn_act(x, "conv", "bn")
    if spec.groups == 1:
        return y1
    z = interleave_by_formula(y1, spec.groups) if spec.cout // spec.groups > 1 else y1
    return conv_bn_act(z, "conv2", "bn2") + y1 if spec.cin >= spec.cout else z


# --- random parameters ------------------------------------------------------------------------


def random_kpointwise_params(
    spec: KPointwiseSpec, rng: np.random.Generator, dtype: Any = np.float64
) -> dict[str, np.ndarray]:
    """Well-scaled random parameters (non-trivial BN statistics) under the spec's local names."""
    params = {}
    for name, (shape, _) in spec.param_shapes().items():
        p = name.rsplit("/", 1)[1]
        if p == "kernel":
            v = rng.standard_normal(shape) / np.sqrt(shape[2])
        elif p == "gamma":
            v = 1.0 + 0.2 * rng.standard_normal(shape)
        elif p == "moving_variance":
            v = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            v = 0.2 * rng.standard_normal(shape)
        params[name] = v.astype(dtype)
    return params


# --- whole networks ---------------------------------------------------------------------------


def checkpoint_params(v: float) -> dict[str, np.ndarray]:
    """Two small float32 arrays scaled by ``v``: parameters for checkpoint and best-file tests,
    where ``v`` tells one save from another."""
    return {
        "a/kernel": np.full((2, 3), v, np.float32),
        "b/bias": np.arange(4, dtype=np.float32) * v,
    }


def tiny_architecture(
    family: str = "kefficientnet",
    num_classes: int = 3,
    min_channels_per_group: int = 4,
    skip_stride_cnt: int = 1,
    blocks: int = 4,
    top_filters: int = 48,
) -> Architecture:
    """The first ``blocks`` MBConv blocks of B0 and a narrow head, built with the table API.

    With the defaults: stem 3->32 (stride 1, correct_pad), block1a (no expand; SE and project
    grouped with a second conv), block2a (stride 2, expand grouped + interleave), block2b
    (residual + drop-connect), block3a (5x5, stride 2); top 24->48 kPointwise; 3 classes.
    """
    build = kefficientnet if family == "kefficientnet" else efficientnet
    args = (min_channels_per_group,) if family == "kefficientnet" else ()
    full = build("b0", num_classes, *args, skip_stride_cnt=skip_stride_cnt)
    kept = full.blocks[:blocks]
    m = min_channels_per_group if family == "kefficientnet" else None
    top = KPointwiseSpec.from_min_channels(
        kept[-1].cout, top_filters, m, activation=full.head.top.activation
    )
    return replace(full, blocks=kept, head=HeadSpec(top, full.head.dropout, num_classes))


def tiny_batch(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A batch for ``tiny_architecture``'s models: float32 images ``(n, 9, 9, 3)`` drawn from a
    standard normal and labels ``0, 1, 2, 0, ...`` (``arange(n) % 3``)."""
    x = np.random.default_rng(seed).standard_normal((n, 9, 9, 3)).astype(np.float32)
    return x, np.arange(n) % 3


def drop_masks(arch: Architecture, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One 0/1 mask per dropout site, each with a kept and a dropped entry."""
    rng = np.random.default_rng(seed)
    masks = {}
    for b in arch.blocks:
        if b.residual and b.drop_rate > 0:
            m = (rng.random((n, 1, 1, 1)) < 0.5).astype(np.float64)
            m.reshape(-1)[:2] = (0.0, 1.0)
            masks[f"{b.name}_drop"] = m
    if arch.head.dropout > 0:
        m = (rng.random((n, arch.head.top.cout)) >= arch.head.dropout).astype(np.float64)
        m.reshape(-1)[:2] = (0.0, 1.0)
        masks["top_dropout"] = m
    return masks


def random_network_params(arch: Architecture, seed: int = 0) -> dict[str, np.ndarray]:
    """``init_params`` in float64 with non-trivial BN parameters and statistics."""
    params = network.init_params(arch, seed, dtype=np.float64)
    rng = np.random.default_rng([seed, 7])
    for name, v in params.items():
        p = name.rsplit("/", 1)[1]
        if p == "gamma":
            v[...] = 1.0 + 0.2 * rng.standard_normal(v.shape)
        elif p in ("beta", "moving_mean", "bias"):
            v[...] = 0.1 * rng.standard_normal(v.shape)
        elif p == "moving_variance":
            v[...] = rng.uniform(0.5, 1.5, v.shape)
    return params


def calibrated_params(
    arch: Architecture, params: dict[str, np.ndarray], x: np.ndarray
) -> dict[str, np.ndarray]:
    """``params`` with every BN's moving statistics set to its batch statistics on ``x``, so that
    an inference forward on ``x`` is well conditioned (neither exploding nor vanishing)."""
    _, cache = network.forward(arch, params, x, training=True, rng=0)
    batch = {k: (v - 0.99 * params[k]) / 0.01 for k, v in cache["moving_stats"].items()}
    return {**params, **batch}


def one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread where threadpoolctl is installed. The network checks multiply
    tiny activations by large weights: on a shared 2-core machine, BLAS threads spinning for
    such products make them many times slower, never faster."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def check_network_grads(
    call: str,
    arch: Architecture,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    labels: np.ndarray,
    config: Mapping[str, Any],
    training: bool,
    masks: dict | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    tol: float = FD_TOL,
) -> None:
    """Whole-network check of ``loss_and_grads`` (softmax cross-entropy of the logits) by
    directional derivatives: one random direction per entry of ``groups`` (``{label: [param
    names]}``; default one per trainable tensor) and one through the input ``x``."""
    rng = np.random.default_rng([seed, 0xBEEF])
    trainable = [k for k, (_, t) in arch.param_shapes().items() if t]
    groups = groups if groups is not None else {f"d[{k}]": [k] for k in trainable}

    def loss() -> float:
        logits, _ = network.forward(arch, params, x, training=training, masks=masks)
        return float(to_numpy(SoftmaxCrossEntropy.forward(logits, labels)[0]))

    with one_blas_thread():
        out = network.loss_and_grads(arch, params, x, labels, training=training, masks=masks)
        grads = out["grads"]
        assert list(grads) == trainable, (
            f"{call} grads keys differ from the trainable parameters {fmt(config)}"
        )
        for label, names in groups.items():
            xs, gs = [params[k] for k in names], [grads[k] for k in names]
            check_directional(call, label, loss, xs, gs, config, rng, tol)
        check_directional(call, "dx", loss, [x], [out["dx"]], config, rng, tol)


def groups_by_layer(arch: Architecture) -> dict[str, list[str]]:
    """Trainable parameter names grouped by stem / block / head, for one direction each."""
    groups: dict[str, list[str]] = {}
    for k, (_, t) in arch.param_shapes().items():
        if t:
            layer = k.split("/", 1)[0]
            key = (
                "stem"
                if layer.startswith("stem")
                else layer.split("_", 1)[0]
                if layer.startswith("block")
                else "head"
            )
            groups.setdefault(f"d[{key}/*]", []).append(k)
    return groups


# --- hypothesis strategies --------------------------------------------------------------------


@st.composite
def conv_cases(draw: st.DrawFn, depthwise: bool = False) -> dict[str, Any]:
    """Small valid (x shape, kernel, stride, padding) combinations, odd and even sizes."""
    k = draw(st.sampled_from((3, 5)))
    stride = draw(st.sampled_from((1, 2)))
    padding = draw(
        st.sampled_from(("same", "correct", "valid") if stride == 1 else ("correct", "valid"))
    )
    low = k if padding == "valid" else 1
    h, w = draw(st.integers(low, low + 5)), draw(st.integers(low, low + 5))
    n = draw(st.integers(1, 2))
    cin = draw(st.integers(1, 3))
    cout = cin if depthwise else draw(st.integers(1, 3))
    return {"k": k, "stride": stride, "padding": padding, "x_shape": (n, h, w, cin), "cout": cout}


@st.composite
def kpointwise_cases(draw: st.DrawFn, max_channels: int = 24) -> dict[str, Any]:
    """KPointwise configurations: channel counts built from a common factor so that grouped,
    interleaved and second-conv cases all occur; min-channels, bias, bn, activation, training."""
    f = draw(st.integers(1, 4))
    cin = f * draw(st.integers(1, max_channels // f))
    cout = f * draw(st.integers(1, max_channels // f))
    m = draw(st.integers(1, 8))
    spec = KPointwiseSpec.from_min_channels(
        cin,
        cout,
        m,
        bn=draw(st.booleans()),
        activation=draw(st.sampled_from((None, "swish", "sigmoid"))),
        bias=draw(st.booleans()),
    )
    n = draw(st.integers(1, 2))
    hw = draw(st.integers(1, 3))
    return {
        "spec": spec,
        "m": m,
        "x_shape": (n, hw, hw, cin),
        "training": draw(st.booleans()),
        "seed": draw(seeds),
    }


def torch_devices() -> list[Any]:
    """``pytest.mark.parametrize`` values for a torch device: ``"cpu"``, and ``"cuda"`` marked
    ``gpu`` and skipped without a CUDA device. Call only where torch is importable."""
    import torch

    no_cuda = not torch.cuda.is_available()
    cuda_marks = [pytest.mark.gpu, pytest.mark.skipif(no_cuda, reason="needs a CUDA device")]
    return ["cpu", pytest.param("cuda", marks=cuda_marks)]


def count_file_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``core.params`` checks before each read of a parameter file, recorded in the
    returned list: one entry per reading call (``load_params``, ``read_metadata`` and
    ``read_params_file`` each start with a ``readable_file`` check). That a call opens the file
    once is ``test_read_params_file_gives_the_metadata_of_the_arrays_it_read``'s."""
    from gpconv.core import params as core_params

    opened: list[str] = []
    check = core_params.readable_file

    def recording(path: Any) -> str:
        opened.append(check(path))
        return opened[-1]

    monkeypatch.setattr(core_params, "readable_file", recording)
    return opened


def assert_predict_is_per_image_and_pure(fw: Any, x: np.ndarray, rtol: float = 1e-4) -> None:
    """A training framework's ``predict`` runs in inference mode: each image's logits are those
    it gets alone (batch norm on the moving statistics, not the batch's), and no parameter or
    moving statistic changes. ``atol`` scales with the logits (about 1e-5 at initialisation)."""
    before = fw.export_params()
    together = fw.predict(x)
    alone = np.concatenate([fw.predict(x[i : i + 1]) for i in range(len(x))])
    scale = float(np.abs(together).max())
    np.testing.assert_allclose(alone, together, rtol=rtol, atol=rtol * scale)
    for name, value in fw.export_params().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def failing(rows: Sequence[Any]) -> list[Any]:
    """The conformance ``CheckResult`` rows that did not pass."""
    return [r for r in rows if not r.passed]


def describe(rows: Sequence[Any]) -> str:
    """Conformance rows one per line, for assertion messages."""
    return "\n".join(
        f"{r.backend} {r.check} [{r.layer}] {r.config}: {r.error:.3g} vs {r.tolerance:.3g} "
        f"{r.status} {r.detail}"
        for r in rows
    )


def one_row_report(status: str = "pass", seed: int = 0) -> Any:
    """A ``gpconv check`` report of one numpy interleave row with ``status`` (error 1 against a
    tolerance of 0 when it failed, 0 when it passed), as a stand-in for ``conformance.runner.run``
    where only the command's handling of the report is under test."""
    from gpconv.conformance.results import CheckResult
    from gpconv.conformance.runner import Report

    error = 0.0 if status == "pass" else 1.0
    row = CheckResult("numpy", "interleave order", "interleave", "C=12 G=3", error, 0.0, status)
    return Report(rows=[row], backends={"numpy": {"status": "checked"}}, seed=seed)
