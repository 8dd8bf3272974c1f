"""The backend interface: what every framework adapter implements, and what conformance calls.

A backend turns a ``core.arch.Architecture`` into a native model and exchanges parameters with the
reference in canonical form (``{name: np.ndarray}``, Keras layouts, see ``core.params``). All data
crossing this interface is NumPy, channels-last ``(N, H, W, C)``; each backend converts at the edge.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from ..core.arch import Architecture
from ..core.ops.loss import check_labels
from ..core.pointwise import KPointwiseSpec

F = TypeVar("F", bound=Callable[..., Any])


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a blocked/broken finder
        return False


def require(backend: Backend) -> None:
    """Raise ``ImportError`` naming ``backend`` and how to install it unless
    ``backend.is_available()``. (A function, not a method: the interface that adapters implement
    stays the methods below.)"""
    if backend.is_available():
        return
    label = backend.name or type(backend).__name__
    missing = [m for m in backend.requires if not _importable(m)]
    how = backend.install_hint or f"install {', '.join(backend.requires)}"
    if missing:
        raise ImportError(
            f"backend {label!r} is not installed (cannot import {', '.join(missing)}): {how}"
        )
    # e.g. cupy: the module is there but no CUDA device is
    raise ImportError(f"backend {label!r} is not available on this machine: {how}")


def images_in(
    x: Any, channels: int, dtype: Any = np.float32, what: str = "images", name: str = "x"
) -> np.ndarray:
    """Images (or other channels-last activations: ``what``, argument ``name``) crossing the
    interface, checked: floating ``(N, H, W, channels)``, returned as contiguous ``dtype``
    (float32 is what the framework models run). Integer images are refused rather than cast:
    they are usually 0-255 data that was not scaled."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != channels:
        raise ValueError(
            f"Expected {what} of shape (N, H, W, {channels}) (channels-last), "
            f"received {name}.shape={x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"Expected floating {what}, received {name}.dtype={x.dtype}")
    return np.ascontiguousarray(x, dtype=dtype)


def labels_in(labels: Any, n: int, classes: int) -> np.ndarray:
    """Class labels crossing the interface, checked: integers of shape ``(n,)`` in
    ``[0, classes)``, returned as int64 (never a silent cast of 1.7 to class 1)."""
    labels = np.asarray(labels)
    check_labels(np, labels, n, classes)
    return labels.astype(np.int64)


def _not_implemented(backend: Backend, method: str) -> NotImplementedError:
    """The error of an interface method that an adapter did not define: named, because
    ``gpconv check`` shows only the message (a bare ``NotImplementedError`` printed as nothing)."""
    return NotImplementedError(
        f"{type(backend).__name__}.{method}() is not implemented: every method of "
        "gpconv.backends.base.Backend is needed (docs/adding-a-backend.md)"
    )


def _guarded(method: F) -> F:
    """``method`` preceded by ``require(self)``."""

    @functools.wraps(method)
    def guarded(self: Backend, *args: Any, **kwargs: Any) -> Any:
        require(self)
        return method(self, *args, **kwargs)

    guarded._requires_backend = True  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]


class Backend:
    """Base class of backend adapters. Subclasses set ``name``, ``requires`` and ``extra`` and
    implement the methods below; ``is_available`` needs no override.

    The registry hands out adapters whose framework is missing (so ``gpconv check`` can report
    them as not installed), so every interface method (``ENTRY_POINTS``) of every subclass is
    wrapped, here, to raise ``ImportError`` with the pip command when ``is_available()`` is false.
    Without that an adapter that inherits a NumPy implementation (cupy) would build a CPU model
    and fail later with a bare ``ModuleNotFoundError``, or not at all.
    """

    name: str = ""
    requires: tuple[str, ...] = ()  # importable modules the backend needs
    extra: str = ""  # pip extra that installs them
    # The kPointwise implementations a user can pick (the grouped product's kernel), the
    # default first; ``impl`` is this adapter's. Empty for a backend with one way to compute.
    impls: tuple[str, ...] = ()
    impl: str = ""

    @property
    def install_hint(self) -> str:
        return f"pip install 'gpconv[{self.extra}]'" if self.extra else ""

    def is_available(self) -> bool:
        return all(_importable(m) for m in self.requires)

    def with_impl(self, impl: str) -> Backend:
        """This adapter computing kPointwise with ``impl`` (one of ``impls``), named
        ``"<name>[impl=<impl>]"`` unless ``impl`` is the default, so that ``gpconv check`` can
        prove every implementation a user may pick. Subclasses with ``impls`` take the impl as
        their constructor's first argument. Needs no framework: nothing is imported."""
        variant = type(self)(self.checked_impl(impl))  # type: ignore[call-arg]
        if impl != self.impls[0]:  # the new adapter's own name: __init__ may set it
            variant.name = f"{variant.name}[impl={impl}]"
        return variant

    def checked_impl(self, impl: str, argument: str = "impl") -> str:
        """``impl`` if it is one of ``impls``, else ``ValueError`` naming ``argument``, the
        choices and the value: adapters' constructors call it, so that a typo fails where it
        is made and not when a model is first built."""
        if impl not in self.impls:
            choices = f"one of {self.impls}" if self.impls else "none: it has one implementation"
            raise ValueError(
                f"Expected {argument} of backend {self.name!r} ({choices}), "
                f"received {argument}={impl!r}"
            )
        return impl

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only the methods this class itself defines: inherited ones are guarded already, and
        # their guard asks the instance's own is_available().
        for method in ENTRY_POINTS:
            fn = cls.__dict__.get(method)
            if callable(fn) and not getattr(fn, "_requires_backend", False):
                setattr(cls, method, _guarded(fn))

    # --- whole networks -------------------------------------------------------------------
    def build(self, arch: Architecture) -> Any:
        """A native float32 model of ``arch`` (returns logits), freshly initialised."""
        raise _not_implemented(self, "build")

    def load_params(self, model: Any, params: Mapping[str, np.ndarray]) -> None:
        """Copy canonical parameters into ``model``; one ``ValueError`` lists every bad
        name/shape."""
        raise _not_implemented(self, "load_params")

    def export_params(self, model: Any) -> dict[str, np.ndarray]:
        """Every parameter (trainable and moving statistics) in canonical names and layouts, as
        copies: the export must not change when the model does."""
        raise _not_implemented(self, "export_params")

    def forward(self, model: Any, x: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
        """Run ``x`` ``(N, H, W, 3)``; returns ``{"logits", "stem", <block names>..., "top"}``
        (the same intermediates as ``core.network.forward``'s cache). Training mode uses batch
        statistics and updates the model's moving statistics."""
        raise _not_implemented(self, "forward")

    def loss_and_grads(
        self, model: Any, x: np.ndarray, labels: np.ndarray, training: bool = True
    ) -> dict[str, Any]:
        """Mean softmax cross-entropy and its gradients: ``{"loss": float, "logits",
        "dx" (N, H, W, 3), "grads": {canonical trainable name: array in Keras layout}}``;
        updates moving stats in training."""
        raise _not_implemented(self, "loss_and_grads")

    # --- single layers (property tests) ---------------------------------------------------
    def kpointwise(
        self,
        spec: KPointwiseSpec,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        dy: np.ndarray,
        training: bool = False,
    ) -> dict[str, Any]:
        """Build the backend's kPointwise layer for ``spec``, load ``params`` (local names of
        ``spec.param_shapes()``), run ``x`` ``(N, H, W, Cin)`` and pull back ``dy``.
        Returns ``{"y", "dx", "grads": {local name: array}, "moving_stats": {local name: array}}``.
        """
        raise _not_implemented(self, "kpointwise")

    def interleave(self, x: np.ndarray, groups: int) -> np.ndarray:
        """The backend's channel interleave of channels-last ``x``."""
        raise _not_implemented(self, "interleave")

    def param_count(self, model: Any) -> tuple[int, int]:
        """``(trainable, non_trainable)`` as the framework itself counts them."""
        raise _not_implemented(self, "param_count")


# The base's own methods that need no framework, which adapters inherit as they are.
FRAMEWORK_FREE = ("is_available", "with_impl", "checked_impl")
# Every interface method that needs the framework: all other public methods.
ENTRY_POINTS: tuple[str, ...] = tuple(
    n
    for n, v in vars(Backend).items()
    if callable(v) and not n.startswith("_") and n not in FRAMEWORK_FREE
)
# The base's own stubs too: an unavailable backend that lacks a method says "install", not
# NotImplementedError.
for _method in ENTRY_POINTS:
    setattr(Backend, _method, _guarded(vars(Backend)[_method]))
del _method
