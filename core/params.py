"""Canonical parameters: names, initialisation, validation, and safetensors save/load.

Names are ``<layer>/<param>`` with Keras layouts (see ``Architecture.param_shapes``):

* ``stem_conv/kernel (3, 3, 3, C)``, ``stem_bn/{gamma,beta,moving_mean,moving_variance}``;
* per block ``blockNx``: ``_expand/...``, ``_dwconv/kernel (k, k, C, 1)``, ``_bn/...``,
  ``_se_reduce/...``, ``_se_expand/...``, ``_project/...``;
* kPointwise layers hold ``conv/kernel (1, 1, Cin/G, Cout)`` [+ ``conv/bias``] [+ ``bn/...``] and,
  with a second grouped conv, ``conv2/...`` and ``bn2/...``;
* ``top/...`` and ``predictions/{kernel (C, K), bias (K,)}``.

Files are safetensors: no pickle is ever involved in loading.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validate import make_rng

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


def validate_params(arch: Architecture, params: Mapping[str, Any], dtype: Any = None) -> None:
    """Raise one ``ValueError`` listing every missing, unexpected or mis-shaped parameter, every
    parameter of a non-floating dtype and, with ``dtype``, every parameter of another dtype.
    ``arch`` is an ``Architecture`` or any layout with ``name`` and ``param_shapes()``."""
    from .arch import require_arch  # arch -> pointwise -> params: imported here, not above

    if not callable(getattr(arch, "param_shapes", None)):  # backends pass their own layouts
        require_arch(arch)
    expected = arch.param_shapes()
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a dict {{name: array}}, received {type(params).__name__}"
        )
    problems = shape_problems(expected, params)
    want = None if dtype is None else np.dtype(dtype).name
    for k, (shape, _) in expected.items():
        if k in params and _shape(params[k]) == shape:
            name = _dtype_name(params[k])
            if want is not None and name != want:
                problems.append(f"{k}: expected dtype {want}, received dtype {name}")
            elif want is None and not _is_floating(name):
                problems.append(f"{k}: expected a floating dtype, received dtype {name}")
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(
            f"Parameters do not match {arch.name} ({len(problems)} problems):\n  {listing}"
        )


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(getattr(a, "shape", ()))


def _dtype_name(a: Any) -> str:
    """``"float32"`` for NumPy/CuPy dtypes and for ``array_api_strict.float32`` alike."""
    return str(getattr(a, "dtype", type(a).__name__)).rsplit(".", 1)[-1]


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
    as safetensors atomically (temp file, fsync, rename); ``metadata`` values are stored with
    ``str``. An existing file at ``path`` is replaced only once the new one is complete."""
    from safetensors.numpy import save

    path = _writable_path(path)
    _require_str_keys("params", params)
    _require_str_keys("metadata", {} if metadata is None else metadata)
    # order="C" rather than ascontiguousarray, which turns 0-d arrays (step counters) into (1,).
    arrays = {k: np.asarray(_to_numpy(k, v), order="C") for k, v in params.items()}
    # None, not {}: safetensors writes an unreadable header for no tensors and empty metadata.
    text = {k: str(v) for k, v in (metadata or {}).items()} or None
    write_atomic(path, save(arrays, metadata=text))


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
    """Read a safetensors file; with ``arch``, check the architecture its metadata names
    (``check_arch_metadata``) and validate names, shapes and dtypes (``dtype``, or any floating
    dtype), raising one error listing every problem.

    A file that is no valid safetensors file raises ``ValueError`` naming it (and, for a torch,
    NumPy or Keras file, saying which it is); one with a dtype NumPy lacks (bfloat16), a
    ``TypeError``. Non-finite values load as they are."""
    from safetensors.numpy import load

    path = _readable_file(path)
    if dtype is not None:
        dtype = float_dtype("dtype", dtype)
    header = _read_header(path)  # our checks first: they name the fault and the file's kind
    metadata = _metadata(path, header)
    _refuse_numpy_less_dtypes(path, header)
    with open(path, "rb") as f:
        try:
            params = load(f.read())
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{path!r} is not a valid safetensors file: {err}") from err
    if arch is not None:
        check_arch_metadata(arch, metadata, path)
        validate_params(arch, params, dtype)
    return params


# safetensors dtypes that NumPy has; safetensors.numpy fails on the others with a bare KeyError.
_NUMPY_SAFETENSORS_DTYPES = frozenset(
    ("F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL")
)


def _refuse_numpy_less_dtypes(path: str, header: Mapping[str, Any]) -> None:
    """``TypeError`` naming the tensors of ``header`` (of file ``path``) whose dtype NumPy lacks,
    such as ``BF16`` from a bfloat16 torch model."""
    odd = {
        k: v.get("dtype")
        for k, v in header.items()
        if k != "__metadata__"
        and isinstance(v, dict)
        and isinstance(v.get("dtype"), str)
        and v["dtype"] not in _NUMPY_SAFETENSORS_DTYPES
    }
    if odd:
        names = ", ".join(f"{k} ({d})" for k, d in list(odd.items())[:3])
        more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
        raise TypeError(
            f"Expected {path!r} to hold float16, float32 or float64 tensors, received "
            f"{len(odd)} of dtypes {sorted(set(map(str, odd.values())))} that NumPy cannot "
            f"represent: {names}{more}. Save float32 copies instead (with safetensors.torch: "
            "save_file({k: v.float() for k, v in tensors.items()}, path))"
        )


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
    """The string metadata stored in a safetensors header (``{}`` if it has none)."""
    path = _readable_file(path)
    return _metadata(path, _read_header(path))


def _metadata(path: str, header: Mapping[str, Any]) -> dict[str, str]:
    """The ``__metadata__`` of ``header`` (of file ``path``): ``ValueError`` unless it maps
    strings to strings, as the safetensors format says (and ``load_params`` enforces)."""
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path!r} is not a valid safetensors file: its metadata is not a JSON object"
        )
    odd = {k: v for k, v in meta.items() if not isinstance(v, str)}
    if odd:
        k, v = next(iter(odd.items()))
        raise ValueError(
            f"{path!r} is not a valid safetensors file: its metadata values must be strings, "
            f"received {k}={v!r} ({type(v).__name__})"
        )
    return dict(meta)


def _readable_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it names a regular file (or a link to one), else
    ``FileNotFoundError``, ``IsADirectoryError`` or ``ValueError`` naming it. Checked before
    opening: opening a FIFO blocks until someone writes to it, and ``/dev/zero`` never ends."""
    path = _fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected a safetensors file, received the folder {path!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No parameter file at {path!r}")
    if not os.path.isfile(path):
        raise ValueError(
            f"Expected a safetensors file, received {path!r}, which is no regular file "
            "(a device, FIFO or socket)"
        )
    return path


def _fspath(path: Any) -> str:
    """``path`` (a ``str`` or ``os.PathLike``) as a ``str``, else ``TypeError``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected path to be a str or os.PathLike, received {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):  # a PathLike of bytes
        raise TypeError(f"Expected path to be a str or os.PathLike of str, received {path!r}")
    if not path:
        raise ValueError("Expected path to name a file, received ''")
    return path


# safetensors refuses longer headers (its MAX_HEADER_SIZE): refuse them before reading one.
_MAX_HEADER_BYTES = 100_000_000

# First bytes of the files most often taken for safetensors ones, to say what a file is instead.
_FOREIGN_FORMATS = (
    (b"PK\x03\x04", "a zip archive (torch.save's .pt/.pth, NumPy's .npz or a Keras .keras file)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (such as Keras's .weights.h5)"),
    (b"\x80", "a pickle (torch.save's legacy format)"),
)


def _read_header(path: str) -> dict[str, Any]:
    """The JSON header of the safetensors file ``path`` (tensor entries and ``__metadata__``);
    ``ValueError`` naming the file and the fault: no 8-byte length, a length past the file's end
    or safetensors' limit (read nothing that long), bytes that are no UTF-8 JSON object, or a
    key given twice."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        blob = f.read(8)
        try:
            if len(blob) < 8:
                raise ValueError(
                    f"it holds {size} bytes, fewer than the 8 of a safetensors header length"
                )
            n = int.from_bytes(blob, "little")
            if n > _MAX_HEADER_BYTES:  # so no safetensors file: say what it is, if we can tell
                raise ValueError(
                    _foreign_format(blob)
                    or f"header length {n} exceeds safetensors' limit of {_MAX_HEADER_BYTES}"
                )
            if n > size - 8:
                raise ValueError(f"header length {n} does not fit the file ({size} bytes)")
            header = json.loads(f.read(n), object_pairs_hook=_no_duplicate_keys)
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
            return header
        except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{path!r} is not a valid safetensors file: {err}") from err


def _foreign_format(blob: bytes) -> str:
    """What a file whose first 8 bytes are ``blob`` is instead of safetensors, with advice, or
    ``""``. Only for a length field past safetensors' limit: a real header length may begin with
    any byte (0x80, say), so a truncated safetensors file must not be called a pickle."""
    kind = next((what for magic, what in _FOREIGN_FORMATS if blob.startswith(magic)), "")
    if not kind:
        return ""
    return (
        f"it is {kind}. gpconv reads parameters from safetensors files only (it never "
        "unpickles): write them with core.params.save_params(path, export_params(model)); "
        "Keras .weights.h5 and .keras files load with keras's model.load_weights"
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; ``ValueError`` for a key given twice, which parsers resolve
    differently (Python's json and safetensors keep the last; others the first or refuse)."""
    out = dict(pairs)
    if len(out) < len(pairs):
        twice = next(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise ValueError(f"its header gives the key {twice!r} twice")
    return out


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
    array = np.asarray(a)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Expected params[{name!r}] to be a numeric array, received "
            f"{type(a).__name__} of dtype {array.dtype}"
        )
    return array


def _writable_path(path: str | os.PathLike) -> str:
    """``path`` as a string, or ``IsADirectoryError``/``FileNotFoundError`` before anything is
    written (a temp file left beside a path that cannot be replaced would be litter)."""
    path = _fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected path to name a file, received the folder {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No folder {folder!r} to write {path!r} in")
    return path


def write_atomic(path: str, blob: bytes) -> None:
    """Write ``blob`` to ``path`` via a temp file, fsync and rename: readers see the old file or
    the new one, never a torn one. On failure (a full disk) the temp file is removed and ``path``
    is left as it was. ``ValueError``, before anything is written, if ``path`` is a device, FIFO
    or socket (``/dev/stdout`` too): the rename would replace that node with a regular file."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        raise ValueError(
            f"Expected path to name a regular file, received {path!r}, which is none "
            "(a device, FIFO or socket): refusing to replace it"
        )
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
