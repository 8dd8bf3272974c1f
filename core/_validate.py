"""Input validation shared by every core op: clear errors before any computation.

Every check raises ``ValueError``/``TypeError`` that names the argument, what was expected and
what was received, in the style ``Expected x.shape[-1] == 16, received x.shape=(2, 4, 4, 8)``.
"""

from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np
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
        refuse_masked(name, a)
    try:
        return array_namespace(*(a for _, a in present))
    except TypeError as err:
        kinds = ", ".join(f"{n}: {array_kind(a)}" for n, a in present)
        raise TypeError(
            f"Arrays from different libraries cannot be mixed; received {kinds}"
        ) from err


def refuse_masked(name: str, a: Any) -> None:
    """Raise ``TypeError`` for a NumPy masked array: the ops would compute with the values the
    mask hides (or, in ``numpy.ma``'s own functions, skip them), silently either way."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"Expected {name} to be a plain array, received a numpy.ma.MaskedArray (its mask "
            f"would be ignored); pass {name}.filled(value) or np.asarray({name}) to choose"
        )


def array_kind(a: Any) -> str:
    """An array's library and type, as errors name it: ``numpy.ndarray``, ``torch.Tensor``."""
    return f"{type(a).__module__}.{type(a).__name__}"


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


def require_min_ndim(name: str, a: Any, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``a`` has rank ``ndim`` or more (``layout`` names the axes)."""
    if a.ndim < ndim:
        raise ValueError(
            f"Expected {name} of shape {layout} ({name}.ndim >= {ndim}), "
            f"received {name}.shape={tuple(a.shape)}"
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


def _as_int(name: str, value: Any, expected: str) -> int:
    """``value`` as a Python int, or ``TypeError`` for anything but a Python or NumPy integer."""
    # bool is an int subclass, and floats or non-scalar arrays are rejected rather than truncated:
    # a 32.5-pixel image or seed=True is a bug in the caller, not a request.
    if not isinstance(value, bool) and hasattr(type(value), "__index__"):
        try:
            return operator.index(value)
        except TypeError:  # e.g. a float or non-scalar NumPy array: ndarray has __index__
            pass
    raise TypeError(f"Expected {name} to be {expected}, received {type(value).__name__} {value!r}")


def require_int(name: str, value: Any) -> int:
    """Return ``value`` as an int, raising ``TypeError`` unless it is a Python or NumPy integer
    (not a bool, a float or a string)."""
    return _as_int(name, value, "an int")


def require_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising unless it is an integer >= ``minimum`` (Python or NumPy
    integers; not bools or floats)."""
    value = _as_int(name, value, "an int")
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}, received {name}={value}")
    return value


def require_choice(name: str, value: Any, choices: Any) -> Any:
    """Return ``value`` if it is one of ``choices`` (shown as given: a tuple, a sorted list...),
    else ``ValueError`` listing them. A list or dict where a name belongs is refused the same
    way, not with ``in``'s bare 'unhashable type: list'."""
    try:
        known = value in choices
    except (TypeError, ValueError):  # unhashable, or an array: no truth value
        known = False
    if not known:
        raise ValueError(f"Expected {name} in {choices}, received {name}={value!r}")
    return value


def require_bool(name: str, value: Any) -> bool:
    """Return ``value`` unless it is not a ``bool`` (NumPy bools allowed): a flag given as
    ``"no"`` or ``1`` is a caller's bug that truthiness would silently turn into ``True``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"Expected {name} to be True or False, received {type(value).__name__} {value!r}"
        )
    return bool(value)


def _as_real(name: str, value: Any) -> float:
    """``value`` as a float, or ``TypeError`` for anything but a real number (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected {name} to be a real number, received {type(value).__name__} {value!r}"
        )
    return float(value)


def require_real(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising ``TypeError`` unless it is a real number (not a bool
    or a string)."""
    return _as_real(name, value)


def require_rate(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a real number in ``[0, 1)``."""
    value = _as_real(name, value)
    if not 0.0 <= value < 1.0:  # also false for NaN
        raise ValueError(f"Expected 0 <= {name} < 1, received {name}={value}")
    return value


def require_fraction(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a real number in ``[0, 1]`` (a BN
    momentum: 1 freezes the moving statistics, 0 replaces them by each batch's)."""
    value = _as_real(name, value)
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"Expected 0 <= {name} <= 1, received {name}={value}")
    return value


def require_nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a finite real number >= 0."""
    value = _as_real(name, value)
    if not 0.0 <= value < float("inf"):  # also false for NaN
        raise ValueError(f"Expected {name} >= 0 and finite, received {name}={value}")
    return value


def require_positive_real(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a finite real number > 0."""
    value = _as_real(name, value)
    if not 0.0 < value < float("inf"):  # also false for NaN
        raise ValueError(f"Expected {name} > 0 and finite, received {name}={value}")
    return value


def require_real_scalar(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number or a 0-d real floating array (the
    gradient of a scalar loss, say); a bool, a vector or a complex number is a caller's bug."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return
    if is_array_api_obj(value) and value.ndim == 0:
        if array_namespace(value).isdtype(value.dtype, "real floating"):
            return
    shape = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""
    raise TypeError(
        f"Expected {name} to be a real number or 0-d floating array, "
        f"received {type(value).__name__}{shape} {getattr(value, 'dtype', '')}".rstrip()
    )


def require_binary(name: str, xp: Any, mask: Any) -> None:
    """Raise ``ValueError`` unless every entry of ``mask`` is 0 or 1 (any dtype)."""
    if xp.isdtype(mask.dtype, "bool"):
        return
    # One pass over the mask (a fraction of the multiply it feeds); on a GPU this syncs once.
    if not bool(xp.all((mask == 0) | (mask == 1))):
        lo, hi = float(xp.min(mask)), float(xp.max(mask))
        raise ValueError(
            f"Expected {name} of 0s and 1s (keep or drop; the 1/(1 - rate) scale is applied "
            f"by the op), received values in [{lo}, {hi}], {name}.shape={tuple(mask.shape)}"
        )


def make_rng(
    name: str, seed: Any, generator_ok: bool = False, none_ok: bool = False
) -> np.random.Generator:
    """The NumPy generator for ``seed``: the one place core turns seeds into generators, so every
    caller rejects a bad seed with the same message naming its argument.

    ``seed`` is an integer >= 0 (Python or NumPy), or, where the caller allows it, a ready
    ``np.random.Generator`` (used as is) or ``None`` (fresh entropy from the OS).
    """
    if generator_ok and isinstance(seed, np.random.Generator):
        return seed
    if none_ok and seed is None:
        return np.random.default_rng()
    options = ["a non-negative int"]
    options += ["a numpy.random.Generator"] if generator_ok else []
    options += ["None"] if none_ok else []
    expected = " or ".join([", ".join(options[:-1]), options[-1]] if len(options) > 1 else options)
    value = _as_int(name, seed, expected)
    if value < 0:
        raise ValueError(f"Expected {name} >= 0, received {name}={value}")
    return np.random.default_rng(value)


def require_divides(groups: int, channels: int, what: str) -> None:
    """Raise ``ValueError`` unless ``groups`` divides ``channels``."""
    if channels % groups:
        raise ValueError(f"Expected groups={groups} to divide {what}={channels}")


def require_channels(x_name: str, cin: int, kernel_name: str, cout: int) -> None:
    """``ValueError`` unless a conv has at least one input channel (``x_name.shape[-1]``) and
    one output channel (``kernel_name.shape[-1]``): with none, its backward has no rows to
    reshape, and no layer of the method has none."""
    for name, channels in ((f"{x_name}.shape[-1]", cin), (f"{kernel_name}.shape[-1]", cout)):
        if channels < 1:
            raise ValueError(f"Expected {name} >= 1 (channels), received {name}={channels}")


def check_cache(cache: Any, op: str) -> None:
    """``TypeError`` unless ``cache`` is what ``op.forward`` returned: every core op tags its
    cache with its name (``cache["op"]``), so a cache passed to another op's backward, which
    could compute a wrong gradient from keys that happen to match, is refused by name."""
    if isinstance(cache, dict) and cache.get("op") == op:
        return
    if isinstance(cache, dict) and "op" in cache:
        got = f"the cache of {cache['op']}.forward"
    elif isinstance(cache, dict):
        got = f"dict with keys {sorted(cache)}"
    else:
        got = type(cache).__name__
    raise TypeError(f"Expected cache to be the cache {op}.forward returned, received {got}")


def check_dy(cache_shape: tuple[int, ...], dy: Any, op: str, like: Any = None) -> Any:
    """Raise ``TypeError`` unless ``dy`` is a real floating array (of the library of ``like``, an
    array the forward of ``op`` saved, when given), ``ValueError`` unless it has the shape of the
    forward output of ``op``. Returns ``dy``'s array namespace, for the backward to compute in."""
    if not is_array_api_obj(dy):
        raise TypeError(
            f"Expected dy to be an array (the gradient of {op}'s output), "
            f"received {type(dy).__name__}"
        )
    xp = array_namespace(dy)
    require_float(xp, "dy", dy)
    if like is not None:
        xp = namespace(like, dy, names=(f"{op}.forward's arrays", "dy"))
    if tuple(dy.shape) != tuple(cache_shape):
        raise ValueError(
            f"Expected dy.shape={tuple(cache_shape)} (the output of {op}.forward), "
            f"received dy.shape={tuple(dy.shape)}"
        )
    return xp


def counted(n: int, noun: str) -> str:
    """``"1 problem"``, ``"3 problems"``: a count for a message."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
