"""Parameter exchange logic shared by every backend: validation and layout conversion between
canonical (Keras-layout) parameters and a framework's own.

A backend describes its native tensors by a *layout* per canonical kind; this module does the
checking and converting once, so torch and TensorFlow differ only in their layout tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.arch import Architecture
from ..core.params import validate_params

# Canonical kinds of parameters, by their role (not their shape).
CONV = "conv"  # (kh, kw, Cin/G, Cout): stem and pointwise kernels
DEPTHWISE = "depthwise"  # (kh, kw, C, 1)
DENSE = "dense"  # (Cin, Cout)
VECTOR = "vector"  # biases, BN gamma/beta/moving stats


def kind_of(name: str) -> str:
    """The canonical kind of parameter ``name``."""
    if name.endswith("_dwconv/kernel"):
        return DEPTHWISE
    if name == "predictions/kernel":
        return DENSE
    if name.endswith("/kernel"):
        return CONV
    return VECTOR


def validated(
    arch: Architecture, params: Mapping[str, Any], dtype: Any = np.float32
) -> dict[str, np.ndarray]:
    """Check ``params`` against ``arch`` (one ``ValueError`` listing every missing, unexpected or
    mis-shaped name) and return them as contiguous NumPy arrays of ``dtype`` (one dtype, or
    ``{name: dtype}`` for models whose variables differ, such as Keras mixed precision). Values
    that would overflow that dtype to inf are refused too."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"Expected params to be a mapping {{name: array}}, received {type(params).__name__}"
        )
    arrays = {k: _as_array(k, v) for k, v in params.items()}
    bad_types = [
        f"{k}: dtype {a.dtype}"
        for k, a in arrays.items()
        if not np.issubdtype(a.dtype, np.floating)
    ]
    if bad_types:
        raise TypeError("Expected floating parameters, received:\n  " + "\n  ".join(bad_types))
    validate_params(arch, arrays)
    dtypes = dtype if isinstance(dtype, Mapping) else dict.fromkeys(arrays, dtype)
    with np.errstate(over="ignore"):  # reported below, naming the parameters
        out = {k: np.ascontiguousarray(a, dtype=dtypes[k]) for k, a in arrays.items()}
    # float64 values beyond float32's range (or float32 beyond float16's) would load as inf;
    # values that are NaN or inf already load as they are (validate_params lets them through).
    overflows = [
        f"{k}: max |value| {float(np.max(np.abs(arrays[k][grown]))):.3g} overflows {a.dtype}"
        for k, a in out.items()
        if (grown := ~np.isfinite(a) & np.isfinite(arrays[k])).any()
    ]
    if overflows:
        raise ValueError("Parameters would load as inf:\n  " + "\n  ".join(overflows))
    return out


def _as_array(name: str, value: Any) -> np.ndarray:
    """``value`` (an array, or nested lists of numbers) as a NumPy array."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(
            f"Expected parameter {name!r} to be an array, received {type(value).__name__} ({e})"
        ) from None


def convert(
    params: Mapping[str, np.ndarray], layouts: Mapping[str, Callable[[np.ndarray], np.ndarray]]
) -> dict[str, np.ndarray]:
    """Apply ``layouts[kind_of(name)]`` (a per-kind array transform, identity if absent) to
    each entry."""
    return {k: layouts.get(kind_of(k), _identity)(np.asarray(v)) for k, v in params.items()}


def _identity(a: np.ndarray) -> np.ndarray:
    return a
