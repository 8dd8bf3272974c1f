"""Input validation shared by every core op: clear errors before any computation.

Every check raises ``ValueError``/``TypeError`` that names the argument, what was expected and
what was received, in the style ``Expected x.shape[-1] == 16, received x.shape=(2, 4, 4, 8)``.
"""

from __future__ import annotations

import operator
from typing import Any

from array_api_compat import array_namespace, is_array_api_obj


def namespace(*arrays: Any, names: tuple[str, ...] | None = None) -> Any:
    """The array namespace shared by ``arrays`` (NumPy, CuPy, array-api-strict, ...).

    Raises ``TypeError`` when an argument is not an array or when arrays of different libraries
    are mixed (e.g. a NumPy kernel with a CuPy input).
    """
    names = names or tuple(f"arg{i}" for i in range(len(arrays)))
    present = [(n, a) for n, a in zip(names, arrays) if a is not None]
    for name, a in present:
        if not is_array_api_obj(a):
            raise TypeError(f"Expected {name} to be an array, received {type(a).__name__}")
    try:
        return array_namespace(*(a for _, a in present))
    except TypeError as err:
        kinds = ", ".join(f"{n}: {type(a).__module__}.{type(a).__name__}" for n, a in present)
        raise TypeError(
            f"Arrays from different libraries cannot be mixed; received {kinds}"
        ) from err


def require_float(xp: Any, name: str, a: Any) -> None:
    """Raise ``TypeError`` unless ``a`` has a real floating dtype."""
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(
            f"Expected {name} to have a real floating dtype, received {name}.dtype={a.dtype}"
        )


def require_ndim(name: str, a: Any, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``a`` has rank ``ndim`` (``layout`` names the axes)."""
    if a.ndim != ndim:
        raise ValueError(
            f"Expected {name} of rank {ndim} {layout}, received {name}.shape={tuple(a.shape)}"
        )


def require_dim(name: str, a: Any, axis: int, size: int, why: str = "") -> None:
    """Raise ``ValueError`` unless ``a.shape[axis] == size``."""
    if a.shape[axis] != size:
        reason = f" ({why})" if why else ""
        raise ValueError(
            f"Expected {name}.shape[{axis}] == {size}{reason}, "
            f"received {name}.shape={tuple(a.shape)}"
        )


def require_same_shape(name: str, a: Any, expected: tuple[int, ...], why: str) -> None:
    """Raise ``ValueError`` unless ``a.shape == expected``."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(
            f"Expected {name}.shape={tuple(expected)} ({why}), "
            f"received {name}.shape={tuple(a.shape)}"
        )


def require_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, raising unless it is an integer >= 1 (Python or NumPy
    integers; not bools or floats)."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"Expected {name} to be an int, received {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"Expected {name} >= 1, received {name}={value}")
    return value


def require_divides(groups: int, channels: int, what: str) -> None:
    """Raise ``ValueError`` unless ``groups`` divides ``channels``."""
    if channels % groups:
        raise ValueError(f"Expected groups={groups} to divide {what}={channels}")


def check_dy(cache_shape: tuple[int, ...], dy: Any, op: str) -> None:
    """Raise ``ValueError`` unless ``dy`` has the shape of the forward output of ``op``."""
    if tuple(dy.shape) != tuple(cache_shape):
        raise ValueError(
            f"Expected dy.shape={tuple(cache_shape)} (the output of {op}.forward), "
            f"received dy.shape={tuple(dy.shape)}"
        )
