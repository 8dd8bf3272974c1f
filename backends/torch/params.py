"""Parameter exchange between a torch model's state and canonical parameters (``core.params``).

Canonical names map to state_dict keys by rule, because the modules are named after them:

* layer ``stem_conv``/``stem_bn`` -> ``stem.conv``/``stem.bn``; ``top``/``predictions`` ->
  ``head.top``/``head.predictions``; ``block2a_<part>`` -> ``blocks.block2a.<part>``;
* inner kPointwise names ``conv``, ``bn``, ``conv2``, ``bn2`` are kept;
* ``kernel``/``gamma`` -> ``weight``, ``bias``/``beta`` -> ``bias``, ``moving_mean`` ->
  ``running_mean``, ``moving_variance`` -> ``running_var``.

Layouts: Keras conv ``(kh, kw, Cin/G, Cout)`` <-> torch ``(Cout, Cin/G, kh, kw)``; depthwise
``(kh, kw, C, 1)`` <-> ``(C, 1, kh, kw)``; dense ``(Cin, Cout)`` <-> ``(Cout, Cin)``.
Validation and the per-kind conversion are ``backends/exchange.py``'s, shared with every backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.files import fspath
from ...core.params import check_arch_metadata, read_params_file
from ..exchange import CONV, DENSE, DEPTHWISE, convert, validated

_PARAM = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_BLOCK_LAYER = re.compile(r"^(block\d+[a-z]+)_(\w+)$")

TO_TORCH = {
    CONV: lambda a: a.transpose(3, 2, 0, 1),
    DEPTHWISE: lambda a: a.transpose(2, 3, 0, 1),
    DENSE: lambda a: a.T,
}
FROM_TORCH = {
    CONV: lambda a: a.transpose(2, 3, 1, 0),
    DEPTHWISE: lambda a: a.transpose(2, 3, 0, 1),
    DENSE: lambda a: a.T,
}


def local_torch_name(name: str) -> str:
    """A kPointwise-local canonical name (``conv/kernel``, ``bn2/gamma``) as a state_dict key."""
    *path, param = name.split("/")
    if param not in _PARAM:
        raise ValueError(
            f"Expected a parameter name ending in one of {sorted(_PARAM)}, received {name!r}"
        )
    return ".".join([*path, _PARAM[param]])


def torch_name(name: str) -> str:
    """The state_dict key of canonical parameter ``name`` (``block2a_expand/conv/kernel`` ->
    ``blocks.block2a.expand.conv.weight``)."""
    if not isinstance(name, str):
        raise TypeError(f"Expected name to be a str, received {type(name).__name__} {name!r}")
    layer, _, rest = name.partition("/")
    if layer.startswith("stem_"):
        module = f"stem.{layer[len('stem_') :]}"
    elif layer in ("top", "predictions"):
        module = f"head.{layer}"
    elif m := _BLOCK_LAYER.match(layer):
        module = f"blocks.{m[1]}.{m[2]}"
    else:
        raise ValueError(f"Unknown canonical layer {layer!r} in parameter name {name!r}")
    return f"{module}.{local_torch_name(rest)}"


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def copy_into(module: nn.Module, native: Mapping[str, np.ndarray], keys: Mapping[str, str]) -> None:
    """Copy ``native[name]`` (torch layout) into ``module``'s tensor ``keys[name]``, in place."""
    tensors = _tensors(module)
    with torch.no_grad():
        for name, value in native.items():
            t = tensors[keys[name]]
            if tuple(t.shape) != value.shape:  # a layout bug, not a user error: names agreed
                raise AssertionError(
                    f"{name} -> {keys[name]}: torch shape {tuple(t.shape)} vs {value.shape}"
                )
            t.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def read_from(
    module: nn.Module, names: Iterable[str], keys: Mapping[str, str], grads: bool = False
) -> dict[str, np.ndarray]:
    """Tensors (or, with ``grads``, their ``.grad``) of ``module`` as canonical NumPy arrays:
    copies, never views of the module's memory (``.numpy()`` of a CPU tensor shares it, so an
    export would otherwise change as the model trains on)."""
    tensors = _tensors(module)
    out = {}
    for name in names:
        t = tensors[keys[name]]
        if grads:
            t = t.grad if t.grad is not None else torch.zeros_like(t)
        out[name] = to_numpy(t)
    return {k: np.array(v, order="C") for k, v in convert(out, FROM_TORCH).items()}


def to_numpy(t: Any) -> Any:
    """A tensor as a NumPy array (detached, on the CPU; bfloat16, which NumPy lacks, as the
    float32 of the same values); anything else unchanged."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def load_params(model: nn.Module, canonical: Mapping[str, Any]) -> None:
    """Copy canonical parameters (``{name: array}``, Keras layouts) into ``model`` (built by
    ``gpconv.backends.torch``). Raises one ``ValueError`` listing every missing, unexpected or
    mis-shaped name, before anything is copied."""
    model = unwrap(model)
    arch = _arch_of(model)
    _require_module_matches(model, arch)
    if isinstance(canonical, Mapping):
        canonical = {k: to_numpy(v) for k, v in canonical.items()}
    arrays = validated(arch, canonical, dtype=_dtype_of(model))
    copy_into(model, convert(arrays, TO_TORCH), {k: torch_name(k) for k in arrays})


def export_params(model: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and moving statistic of ``model`` in canonical names and Keras layouts
    (a bfloat16 model's as float32)."""
    model = unwrap(model)
    arch = _arch_of(model)
    _require_module_matches(model, arch)
    names = list(arch.param_shapes())
    return read_from(model, names, {k: torch_name(k) for k in names})


def export_grads(model: nn.Module) -> dict[str, np.ndarray]:
    """The ``.grad`` of every trainable parameter, canonical names and layouts (zeros if unset)."""
    model = unwrap(model)
    arch = _arch_of(model)
    _require_module_matches(model, arch)
    names = [k for k, (_, trainable) in arch.param_shapes().items() if trainable]
    return read_from(model, names, {k: torch_name(k) for k in names}, grads=True)


def _require_module_matches(model: nn.Module, arch: Any) -> None:
    """Raise one ``ValueError`` listing every tensor of ``model`` that is missing or has another
    shape than ``arch`` gives it, as after replacing a layer (``model.head.predictions =
    nn.Linear(...)``): exchanging parameters needs the module that ``arch`` describes."""
    tensors = _tensors(model)
    problems = []
    for name, (shape, _) in arch.param_shapes().items():
        key = torch_name(name)
        # A zero-byte view of the canonical shape, to read the torch shape off the layout table.
        want = convert({name: np.broadcast_to(np.empty((), np.float32), shape)}, TO_TORCH)[name]
        if key not in tensors:
            problems.append(f"{key} ({name}): not in the module")
        elif tuple(tensors[key].shape) != want.shape:
            problems.append(
                f"{key} ({name}): the module has shape {tuple(tensors[key].shape)}, "
                f"{arch.name} has {want.shape}"
            )
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(
            f"The module no longer matches model.arch ({arch.name}; {len(problems)} problems), "
            "was a layer replaced? Build the model with the architecture you want instead "
            f"(e.g. num_classes=...):\n  {listing}"
        )


def load_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a canonical safetensors or ``.npz`` file (``core.params.save_params``) into ``model``,
    refusing a file whose metadata records another architecture (``check_arch_metadata``)."""
    path = fspath(path)  # a TypeError naming path for None or a number, not os.fspath's
    arch = _arch_of(unwrap(model))  # before reading a file that cannot go anywhere
    params, metadata = read_params_file(path)
    check_arch_metadata(arch, metadata, path)
    load_params(model, params)


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under a ``torch.compile`` wrapper (whose state_dict keys are prefixed)."""
    return getattr(model, "_orig_mod", model)


def _arch_of(model: nn.Module) -> Any:
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError(
            "Expected a model built by gpconv.backends.torch (with .arch), "
            f"received {type(model).__name__}"
        )
    return arch


# bfloat16 models exchange float32 arrays (NumPy has no bfloat16; the cast back is exact).
_NUMPY_DTYPES = {
    torch.float16: np.float16,
    torch.bfloat16: np.float32,
    torch.float32: np.float32,
    torch.float64: np.float64,
}


def _dtype_of(model: nn.Module) -> np.dtype:
    dtype = next(model.parameters()).dtype
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(
            f"Expected a model of dtype {', '.join(map(str, _NUMPY_DTYPES))}, received {dtype}"
        )
    return np.dtype(_NUMPY_DTYPES[dtype])
