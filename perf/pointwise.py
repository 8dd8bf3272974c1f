"""``gpconv bench --op pointwise``: each backend's grouped 1×1 implementations, forward + backward,
on layer shapes taken from kEffNet, next to the ungrouped conv of the same shape (what
EfficientNet pays for that layer).

Implementations per backend (what the backends expose):

* numpy: ``core.pointwise.GroupedPointwise`` (one batched matmul over groups) vs the same product
  as one dense matmul with a block-diagonal kernel;
* torch: ``backends.torch.pointwise.IMPLS`` (``conv``, ``channels_last``, ``matmul``, ``einsum``),
  each on an NCHW-contiguous and a channels_last input, on the device ``gpconv train`` would use
  (CUDA when present); the model's default for that device is marked;
* cupy: the fused kernel writing ``interleave(conv(x))`` (``backends/cupy/fused.py``) vs core's
  cuBLAS batched matmul plus a separate interleave pass (the ungrouped conv is one cuBLAS matmul);
* tensorflow: ``backends.tensorflow.grouped.IMPLEMENTATIONS`` (``conv``, ``matmul``, ``einsum``,
  ``keras``), each inside a ``tf.function``; ``auto``'s choice for this machine is marked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..core._validate import require_positive_int
from ..core.arch import by_name
from .timing import time_round_robin

UNGROUPED = "ungrouped (G=1)"


@dataclass(frozen=True)
class Case:
    """A grouped 1×1 conv: ``(batch, hw, hw, cin) -> (batch, hw, hw, cout)`` with ``groups``."""

    layer: str
    cin: int
    cout: int
    groups: int
    hw: int
    batch: int

    def __str__(self) -> str:
        shape = f"{self.cin}->{self.cout} G={self.groups} {self.hw}x{self.hw}"
        return f"{shape} (batch {self.batch}, {self.layer})"


def kefficientnet_cases(
    image_size: int = 32,
    skip_stride: int = 3,
    batch: int = 32,
    min_channels_per_group: int = 16,
    count: int = 3,
) -> list[Case]:
    """Distinct grouped pointwise shapes of kEffNet-B0 at ``image_size``: the ``count - 1``
    costliest (MACs) and the one with the most groups, each for a batch of ``batch`` (``count``
    and ``batch`` are ints >= 1). ``ValueError`` if there is none."""
    count = require_positive_int("count", count)
    batch = require_positive_int("batch", batch)
    arch = by_name("kefficientnet-b0", 10, min_channels_per_group, skip_stride)
    specs = arch.pointwise()
    found: dict[tuple[int, int, int, int], tuple[int, Case]] = {}
    for row in arch.layers(image_size):
        spec = specs.get(row.name)
        if spec is None or row.groups < 2 or row.output_shape[0] < 2:  # SE convs run on 1x1
            continue
        key = (spec.cin, spec.cout, row.groups, row.output_shape[0])
        found.setdefault(key, (row.macs, Case(row.name, *key, batch)))
    ranked = [c for _, c in sorted(found.values(), key=lambda mc: -mc[0])]
    if not ranked:
        raise ValueError(
            f"kEffNet-B0 has no grouped pointwise layer at min_channels_per_group="
            f"{min_channels_per_group}, image_size={image_size}, skip_stride={skip_stride} "
            "(every layer is a plain 1x1 conv): nothing to measure"
        )
    chosen = ranked[: max(1, count - 1)]
    most_groups = max(ranked, key=lambda c: c.groups)
    return chosen + ([most_groups] if most_groups not in chosen and count > 1 else [])


def interleave_sites(
    image_size: int = 32,
    skip_stride: int = 3,
    batch: int = 32,
    min_channels_per_group: int = 16,
) -> Counter:
    """Every interleave of kEffNet-B0 in one forward pass: ``Counter({(N, H, W, C, G): times})``
    (channels-last shapes of the tensors interleaved, from ``core.arch``; the squeeze-excite's
    run on ``1×1`` maps)."""
    arch = by_name("kefficientnet-b0", 10, min_channels_per_group, skip_stride)
    specs = arch.pointwise()
    sites: Counter = Counter()
    for row in arch.layers(image_size):
        spec = specs.get(row.name)
        if spec is not None and spec.interleaves:
            sites[(batch, *row.output_shape, spec.groups)] += 1
    return sites


# --- one timing function per backend: {implementation label: fwd+bwd callable} ------------------


def numpy_impls(case: Case) -> tuple[dict[str, Callable[[], Any]], str]:
    from ..core.pointwise import GroupedPointwise

    rng = np.random.default_rng(0)
    g, ci, co = case.groups, case.cin // case.groups, case.cout // case.groups
    x = rng.standard_normal((case.batch, case.hw, case.hw, case.cin)).astype(np.float32)
    dy = rng.standard_normal((case.batch, case.hw, case.hw, case.cout)).astype(np.float32)
    kernel = rng.standard_normal((1, 1, ci, case.cout)).astype(np.float32)
    dense = np.zeros((case.cin, case.cout), np.float32)  # block-diagonal: the same product
    for k in range(g):
        dense[k * ci : (k + 1) * ci, k * co : (k + 1) * co] = kernel[0, 0, :, k * co : (k + 1) * co]
    mask = dense != 0
    full = rng.standard_normal((1, 1, case.cin, case.cout)).astype(np.float32)

    def grouped() -> None:
        _, cache = GroupedPointwise.forward(x, kernel)
        GroupedPointwise.backward(cache, dy)

    def blockdiag() -> None:
        xm, dym = x.reshape(-1, case.cin), dy.reshape(-1, case.cout)
        _ = xm @ dense
        _ = dym @ dense.T, (xm.T @ dym) * mask

    def ungrouped() -> None:
        _, cache = GroupedPointwise.forward(x, full)
        GroupedPointwise.backward(cache, dy)

    return {
        "batched-matmul (core)": grouped,
        "dense block-diagonal": blockdiag,
        UNGROUPED: ungrouped,
    }, "batched-matmul (core)"


def torch_impls(case: Case, device: str | None = None) -> tuple[dict[str, Callable[[], Any]], str]:
    import torch

    from ..backends.torch.model import default_channels_last
    from ..backends.torch.pointwise import IMPLS, GroupedPointwise2d, auto_impl
    from ..train.distributed import Dist
    from ..train.frameworks.torch_fw import default_device

    torch.manual_seed(0)
    formats = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    device = default_device(Dist(), device)  # as gpconv train: CUDA if present, unless told
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def timed(groups: int, impl: str, fmt: str) -> Callable[[], Any]:
        layer = GroupedPointwise2d(case.cin, case.cout, groups, impl=impl).to(device)
        x = torch.randn(case.batch, case.cin, case.hw, case.hw, device=device)
        x = x.contiguous(memory_format=formats[fmt]).requires_grad_(True)
        dy = torch.randn(case.batch, case.cout, case.hw, case.hw, device=device)
        dy = dy.contiguous(memory_format=formats[fmt])

        def run() -> None:
            layer(x).backward(dy)
            sync()  # the timer needs finished work

        return run

    concrete = [impl for impl in IMPLS if impl != "auto"]
    out = {f"{impl} [{fmt}]": timed(case.groups, impl, fmt) for impl in concrete for fmt in formats}
    default = auto_impl(device)
    # UNGROUPED is EfficientNet's layer: that network runs NHWC on every device.
    out[UNGROUPED] = timed(1, default, "channels_last")
    fmt = "channels_last" if default_channels_last(device, grouped=True) else "nchw"
    return out, f"{default} [{fmt}]"


def tensorflow_impls(case: Case) -> tuple[dict[str, Callable[[], Any]], str]:
    import tensorflow as tf

    from ..backends.tensorflow.grouped import IMPLEMENTATIONS, resolve_impl

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((case.batch, case.hw, case.hw, case.cin)), tf.float32)
    dy = tf.constant(rng.standard_normal((case.batch, case.hw, case.hw, case.cout)), tf.float32)

    def timed(fn: Callable, groups: int) -> Callable[[], Any]:
        kernel = tf.constant(rng.standard_normal((1, 1, case.cin // groups, case.cout)), tf.float32)

        @tf.function
        def step() -> list[tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = fn(x, kernel, groups)
            return tape.gradient(y, [x, kernel], output_gradients=dy)

        return lambda: [t.numpy() for t in step()]

    out = {name: timed(fn, case.groups) for name, fn in IMPLEMENTATIONS.items()}
    out[UNGROUPED] = timed(IMPLEMENTATIONS["conv"], 1)
    return out, resolve_impl("auto")


def cupy_impls(case: Case) -> tuple[dict[str, Callable[[], Any]], str]:
    import cupy as cp

    from ..backends.cupy.fused import FusedGroupedPointwise
    from ..core.pointwise import GroupedPointwise, interleave

    rng = np.random.default_rng(0)

    def device(shape: tuple[int, ...]) -> Any:
        return cp.asarray(rng.standard_normal(shape), dtype=cp.float32)

    x = device((case.batch, case.hw, case.hw, case.cin))
    dy = device((case.batch, case.hw, case.hw, case.cout))

    def timed(groups: int, fused: bool) -> Callable[[], Any]:
        kernel = device((1, 1, case.cin // groups, case.cout))
        shuffles = groups > 1 and case.cout // groups > 1

        def run() -> None:
            if fused:
                _, cache = FusedGroupedPointwise.forward(
                    x, kernel, None, groups, interleave_output=shuffles
                )
                FusedGroupedPointwise.backward(cache, dy)
            else:
                y, cache = GroupedPointwise.forward(x, kernel, None, groups)
                if shuffles:  # the separate pass the fused kernel folds into its writes
                    interleave(y, groups)
                GroupedPointwise.backward(cache, dy)
            cp.cuda.get_current_stream().synchronize()  # the timer needs finished work

        return run

    out = {
        "fused + interleave": timed(case.groups, fused=True),
        "cuBLAS batched + interleave pass": timed(case.groups, fused=False),
        UNGROUPED: timed(1, fused=False),
    }
    return out, "fused + interleave"


def device_label(backend: str, device: str | None = None) -> str:
    """Where ``backend``'s implementations above run (``train.frameworks.base.format_device``);
    ``device``: torch's, as in ``torch_impls``."""
    if backend == "torch":
        from ..train.distributed import Dist
        from ..train.frameworks.torch_fw import default_device, torch_device_label

        return torch_device_label(default_device(Dist(), device))
    if backend == "tensorflow":
        from ..train.frameworks.tensorflow_fw import tensorflow_device_label

        return tensorflow_device_label()
    if backend == "cupy":
        from ..train.frameworks.numpy_fw import cupy_device_label

        return cupy_device_label()
    return "cpu"


IMPLS_BY_BACKEND: dict[str, Callable[[Case], tuple[dict[str, Callable[[], Any]], str]]] = {
    "numpy": numpy_impls,
    "torch": torch_impls,
    "tensorflow": tensorflow_impls,
    "cupy": cupy_impls,
}


def bench_pointwise(
    backend: str, cases: list[Case], steps: int = 5, warmup: int = 1, device: str | None = None
) -> list[dict[str, Any]]:
    """Rows ``{backend, device, case, impl, ms, default, fastest}`` for every implementation and
    case; ``device`` steers torch (``train.device``)."""
    make = partial(torch_impls, device=device) if backend == "torch" else IMPLS_BY_BACKEND[backend]
    rows, label = [], device_label(backend, device)
    for case in cases:
        impls, default = make(case)
        timings = time_round_robin(impls, steps, warmup)
        grouped = {k: t for k, t in timings.items() if k != UNGROUPED}
        fastest = min(grouped, key=lambda k: grouped[k].median)
        for name, t in timings.items():
            rows.append(
                {
                    "backend": backend,
                    "device": label,
                    "case": str(case),
                    "layer": case.layer,
                    "cin": case.cin,
                    "cout": case.cout,
                    "groups": case.groups,
                    "hw": case.hw,
                    "batch": case.batch,
                    "impl": name,
                    "ms": t.ms,
                    "default": name == default,
                    "fastest": name == fastest,
                }
            )
    return rows
