"""Canonical parameters: names, initialisation, validation, and file save/load.

Names are ``<layer>/<param>`` with Keras layouts (see ``Architecture.param_shapes``):

* ``stem_conv/kernel (3, 3, 3, C)``, ``stem_bn/{gamma,beta,moving_mean,moving_variance}``;
* per block ``blockNx``: ``_expand/...``, ``_dwconv/kernel (k, k, C, 1)``, ``_bn/...``,
  ``_se_reduce/...``, ``_se_expand/...``, ``_project/...``;
* kPointwise layers hold ``conv/kernel (1, 1, Cin/G, Cout)`` [+ ``conv/bias``] [+ ``bn/...``] and,
  with a second grouped conv, ``conv2/...`` and ``bn2/...``;
* ``top/...`` and ``predictions/{kernel (C, K), bias (K,)}``.

Files are safetensors, or NumPy ``.npz`` when the path ends in ``.npz`` (``core.npz``): no pickle
is ever involved in loading.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from ._validate import counted, make_rng, refuse_masked, require_bool
from .files import (
    header_metadata,
    read_header,
    readable_file,
    refuse_numpy_less_dtypes,
    writable_path,
    write_atomic,
)
from .npz import METADATA_KEY, is_zip, npz_bytes, read_npz, read_npz_metadata

if TYPE_CHECKING:
    from .arch import Architecture


def sub_params(params: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``params`` under ``prefix/``, with the prefix stripped."""
    head = prefix + "/"
    return {k[len(head) :]: v for k, v in params.items() if k.startswith(head)}


def shape_problems(
    expected: Mapping[str, tuple[tuple[int, ...], bool]], params: Mapping[str, Any]
) -> list[str]:
    """Every missing, unexpected or mis-shaped name of ``params`` against ``expected``
    (``{name: (shape, trainable)}``, as ``param_shapes()`` returns), one line each."""
    problems = [
        f"missing {k}: expected shape {s}" for k, (s, _) in expected.items() if k not in params
    ]
    problems += [
        f"unexpected {k}: received shape {_shape(v)}"
        for k, v in params.items()
        if k not in expected
    ]
    problems += [
        f"{k}: expected shape {s}, received shape {_shape(params[k])}"
        for k, (s, _) in expected.items()
        if k in params and _shape(params[k]) != s
    ]
    return problems


def validate_params(
    arch: Architecture, params: Mapping[str, Any], dtype: Any = None, values: bool = True
) -> None:
    """Raise one ``ValueError`` listing every missing, unexpected or mis-shaped parameter, every
    parameter of a non-floating dtype and, with ``dtype`` (float16, float32 or float64; anything
    else is a ``TypeError``), every parameter of another dtype. ``arch`` is an ``Architecture``
    or any layout with ``name`` and ``param_shapes()``.

    With ``values`` (the default, for the load paths), also every BN ``moving_variance`` with a
    negative entry, which inference would turn into NaN (``sqrt(var + eps)``). NaN and inf are
    let through, as ``load_params`` loads them. ``network.forward`` passes ``values=False``: a
    scan of every variance per call would sync a GPU once per BN layer."""
    from .arch import require_arch  # arch -> pointwise -> params: imported here, not above

    values = require_bool("values", values)
    if not callable(getattr(arch, "param_shapes", None)):  # backends pass their own layouts
        require_arch(arch)
    expected = arch.param_shapes()
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a dict {{name: array}}, received {type(params).__name__}"
        )
    problems = shape_problems(expected, params)
    # Not np.dtype(dtype): an int dtype would list every parameter as wrong, and 'foo' or a torch
    # dtype raise NumPy's 'data type not understood', which names no argument.
    want = None if dtype is None else float_dtype("dtype", dtype).name
    for k, (shape, _) in expected.items():
        if k in params and _shape(params[k]) == shape:
            name = _dtype_name(params[k])
            if want is not None and name != want:
                problems.append(f"{k}: expected dtype {want}, received dtype {name}")
            elif want is None and not _is_floating(name):
                problems.append(f"{k}: expected a floating dtype, received dtype {name}")
            elif values and k.endswith("/moving_variance"):
                problems += _negative_variance(k, params[k])
    if problems:
        listing = "\n  ".join(problems)
        count = counted(len(problems), "problem")
        raise ValueError(f"Parameters do not match {arch.name} ({count}):\n  {listing}")


def _negative_variance(name: str, a: Any) -> list[str]:
    """``[problem]`` if the variance ``a`` (any array library) has an entry < 0, else ``[]``."""
    xp = array_namespace(a)
    negative = a < 0  # False for NaN, which loads as it is
    count = int(xp.sum(xp.astype(negative, xp.int64)))
    if not count:
        return []
    lowest = float(xp.min(xp.where(negative, a, xp.zeros_like(a))))
    return [
        f"{name}: expected variances >= 0, received {count} of {math.prod(a.shape)} "
        f"negative (min {lowest:.6g})"
    ]


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(getattr(a, "shape", ()))


def _dtype_name(a: Any) -> str:
    """``"float32"`` for NumPy/CuPy dtypes (either byte order: ``>f4`` too) and for
    ``array_api_strict.float32`` alike."""
    dtype = getattr(a, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype.name
    return str(dtype if dtype is not None else type(a).__name__).rsplit(".", 1)[-1]


def _is_floating(name: str) -> bool:
    return name in ("float16", "bfloat16", "float32", "float64")


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's fan_in/fan_out: conv kernels ``(kh, kw, cin, cout)`` count the receptive field."""
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _variance_scaling_normal(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float
) -> np.ndarray:
    # Keras truncates at 2 sigma and rescales so the truncated distribution keeps the variance.
    std = math.sqrt(scale / _fans(shape)[1]) / 0.87962566103423978
    z = rng.standard_normal(shape)
    while np.any(bad := np.abs(z) > 2.0):
        z[bad] = rng.standard_normal(int(bad.sum()))
    return z * std


def _glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def _initial_value(
    arch: Architecture, name: str, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    param = name.rsplit("/", 1)[1]
    if param in ("beta", "moving_mean", "bias"):
        return np.zeros(shape)
    if param in ("gamma", "moving_variance"):
        return np.ones(shape)
    if name == "predictions/kernel":
        limit = math.sqrt(3.0 * (1.0 / 3.0) / _fans(shape)[1])
        return rng.uniform(-limit, limit, shape)
    pointwise = "/conv" in name  # kPointwise kernels live at <layer>/conv/kernel or conv2/kernel
    if pointwise and arch.family == "kefficientnet":
        return _glorot_uniform(rng, shape)
    return _variance_scaling_normal(rng, shape, 2.0)


def init_params(
    arch: Architecture, seed: int = 0, dtype: Any = np.float32, xp: Any = None
) -> dict[str, Any]:
    """Fresh parameters with DESIGN.md's initialisers (as the paper's Keras code), as NumPy arrays
    (or arrays of namespace ``xp``) of ``dtype``. Deterministic in ``seed``, an int >= 0."""
    from .arch import require_arch

    require_arch(arch)
    rng = make_rng("seed", seed)
    dtype = float_dtype("dtype", dtype)
    if xp is not None and not callable(getattr(xp, "asarray", None)):  # e.g. the name "numpy"
        raise TypeError(
            "Expected xp to be None or an array namespace (a module such as numpy or cupy), "
            f"received {type(xp).__name__} {xp!r}"
        )
    params = {
        name: _initial_value(arch, name, shape, rng).astype(dtype)
        for name, (shape, _) in arch.param_shapes().items()
    }
    if xp is not None:
        params = {k: xp.asarray(v) for k, v in params.items()}
    return params


def save_params(
    path: str | os.PathLike, params: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``params`` (``{name: array}``; torch bfloat16 tensors as float32, the same values)
    atomically (temp file, fsync, rename): as a NumPy ``.npz`` if ``path`` ends in ``.npz``, else
    as safetensors. ``metadata`` values are stored with ``str``. An existing file at ``path`` is
    replaced only once the new one is complete."""
    from safetensors.numpy import save

    path = writable_path(path)
    _require_str_keys("params", params)
    _require_str_keys("metadata", {} if metadata is None else metadata)
    if METADATA_KEY in params:  # both formats keep the metadata under this name
        raise ValueError(
            f"Expected parameter names other than {METADATA_KEY!r}, which both file formats "
            "reserve for the metadata: pass metadata=... instead"
        )
    # order="C" rather than ascontiguousarray, which turns 0-d arrays (step counters) into (1,).
    arrays = {k: np.asarray(_to_numpy(k, v), order="C") for k, v in params.items()}
    # None, not {}: safetensors writes an unreadable header for no tensors and empty metadata.
    text = {k: str(v) for k, v in (metadata or {}).items()} or None
    blob = npz_bytes(arrays, text) if _is_npz_name(path) else save(arrays, metadata=text)
    write_atomic(path, blob)


def _is_npz_name(path: str) -> bool:
    return path.lower().endswith(".npz")


def _require_str_keys(name: str, mapping: Any) -> None:
    """``TypeError`` unless ``mapping`` is a ``Mapping`` whose keys are all ``str``."""
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"Expected {name} to be a dict {{str: ...}}, received {type(mapping).__name__}"
        )
    odd = [k for k in mapping if not isinstance(k, str)]
    if odd:
        raise TypeError(
            f"Expected the keys of {name} to be str, received {odd[0]!r} "
            f"({type(odd[0]).__name__}){f' and {len(odd) - 1} more' if len(odd) > 1 else ''}"
        )


def load_params(
    path: str | os.PathLike, arch: Architecture | None = None, dtype: Any = None
) -> dict[str, np.ndarray]:
    """Read a safetensors or NumPy ``.npz`` file (told apart by their first bytes, whatever the
    name); with ``arch``, check the architecture its metadata names (``check_arch_metadata``)
    and validate names, shapes and dtypes (``dtype``, or any floating dtype), raising one error
    listing every problem. Without ``arch``, ``dtype`` (if given) is checked on every array.

    A file that is neither raises ``ValueError`` naming it (and, for a torch, NumPy ``.npy`` or
    Keras file, saying which it is); a safetensors file with a dtype NumPy lacks (bfloat16), a
    ``TypeError``. Non-finite values load as they are; with ``arch``, a negative moving variance
    is refused (``validate_params``)."""
    if dtype is not None:
        dtype = float_dtype("dtype", dtype)
    params, metadata = read_params_file(path)
    if arch is not None:
        check_arch_metadata(arch, metadata, os.fspath(path))
        validate_params(arch, params, dtype)
    elif dtype is not None:  # checked, not converted: as with arch
        wrong = [
            f"{k}: {_dtype_name(v)}" for k, v in params.items() if _dtype_name(v) != dtype.name
        ]
        if wrong:
            listing = "\n  ".join(wrong)
            raise ValueError(
                f"Expected every array of {os.fspath(path)!r} to have dtype {dtype.name}, "
                f"received ({len(wrong)} arrays):\n  {listing}"
            )
    return params


def read_params_file(
    path: str | os.PathLike,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(arrays, metadata)`` of a safetensors or ``.npz`` file from one read: what
    ``load_params(path)`` and ``read_metadata(path)`` return, of the same bytes even when another
    process replaces the file in between (a run saving ``params.safetensors`` each epoch). For
    callers that check the metadata themselves (``check_arch_metadata`` with ``ignore``)."""
    path = readable_file(path)
    return read_npz(path) if is_zip(path) else _read_safetensors(path)


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(arrays, metadata)`` of the safetensors file ``path``, checked as ``load_params`` says."""
    from safetensors.numpy import load

    # One open file for the header and the tensors: opening ``path`` twice could read the
    # metadata of one file and the tensors of its replacement (save_params renames over it).
    with open(path, "rb") as f:
        header = read_header(path, f)  # our checks first: they name the fault and the file's kind
        metadata = header_metadata(path, header)
        refuse_numpy_less_dtypes(path, header)
        f.seek(0)
        blob = f.read()
    try:
        return load(blob), metadata
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path!r} is not a valid safetensors file: {err}") from err


def arch_metadata(arch: Architecture) -> dict[str, str]:
    """What a parameter file's metadata records about the architecture it is for: ``arch`` (the
    name, e.g. ``kefficientnet-b0-16ch``), ``num_classes`` and ``skip_stride_cnt``. The last
    changes no parameter shape, so only the metadata can tell a file's value from another."""
    return {
        "arch": arch.name,
        "num_classes": str(arch.num_classes),
        "skip_stride_cnt": str(arch.skip_stride_cnt),
    }


def check_arch_metadata(
    arch: Architecture, metadata: Mapping[str, str], source: str, ignore: tuple[str, ...] = ()
) -> None:
    """``ValueError`` if ``metadata`` (of the file ``source``) records another architecture than
    ``arch`` (``arch_metadata``'s keys, except ``ignore``). Keys the file lacks (files written
    before they were recorded, or by other tools) are not checked."""
    expected = arch_metadata(arch)
    problems = [
        f"{k}={metadata[k]} (the model: {v})"
        for k, v in expected.items()
        if k not in ignore and k in metadata and metadata[k] != v
    ]
    if problems:
        raise ValueError(
            f"{source!r} holds parameters for another architecture than {arch.name}: "
            f"{', '.join(problems)}. Build the model with the file's settings (to load it into "
            "this one on purpose, pass the dict of core.params.load_params(path), unchecked)"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors or ``.npz`` parameter file (``{}`` if it has none)."""
    path = readable_file(path)
    if is_zip(path):
        return read_npz_metadata(path)
    return header_metadata(path, read_header(path))


def float_dtype(name: str, dtype: Any) -> np.dtype:
    """``dtype`` as a NumPy floating dtype (float16/32/64), or ``TypeError`` naming ``name``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in ("float16", "float32", "float64"):
        raise TypeError(
            f"Expected {name} to be a real floating dtype (float16, float32, float64), "
            f"received {name}={dtype!r}"
        )
    return resolved


def _to_numpy(name: str, a: Any) -> np.ndarray:
    if hasattr(a, "get"):  # CuPy
        a = a.get()
    elif hasattr(a, "detach"):  # a torch tensor, even one that requires grad
        a = a.detach().cpu()
        # NumPy has no bfloat16; its float32 holds the same values (as backends.torch exports).
        a = (a.float() if str(a.dtype) == "torch.bfloat16" else a).numpy()
    refuse_masked(f"params[{name!r}]", a)
    array = np.asarray(a)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Expected params[{name!r}] to be a numeric array, received "
            f"{type(a).__name__} of dtype {array.dtype}"
        )
    return array
