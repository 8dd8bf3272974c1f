"""Backend registry: ``gpconv.backends.get(name)`` -> a ``Backend`` adapter.

Backends are imported lazily so that ``gpconv`` works with only NumPy installed; a framework
that is missing is reported as not installed, with the pip extra that brings it.
"""

from __future__ import annotations

import importlib

from ..core._validate import require_choice
from .base import Backend

# name -> "module:attribute" of the adapter instance
_REGISTRY: dict[str, str] = {
    "numpy": "gpconv.backends.numpy_reference:BACKEND",
    "torch": "gpconv.backends.torch.adapter:BACKEND",
    "tensorflow": "gpconv.backends.tensorflow.adapter:BACKEND",
    "cupy": "gpconv.backends.cupy.adapter:BACKEND",
}


def names() -> list[str]:
    """Every registered backend name, installed or not."""
    return list(_REGISTRY)


def register(name: str, target: str) -> None:
    """Register a third-party backend as ``"package.module:ATTRIBUTE"`` (a ``Backend`` instance)."""
    _REGISTRY[name] = target


def get(name: str) -> Backend:
    """The adapter for backend ``name``; raises ``ValueError`` for an unknown name.

    An adapter is returned even when its framework is not installed, so callers can report it
    (``is_available()``, ``install_hint``); its ``build``, ``forward`` and other interface methods
    then raise ``ImportError`` with the pip command (``base.require(adapter)`` does so at once)."""
    require_choice("backend", name, names())
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["Backend", "get", "names", "register"]
