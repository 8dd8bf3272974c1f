"""Parameter exchange between Keras models and the reference's canonical parameters.

Canonical names are ``<layer>/<param>`` in Keras layouts (``core.params``), and the layers of
these models carry exactly those layer names, so the exchange is a name lookup: no layout
conversion is needed in TensorFlow. Validation is the shared one (``backends.exchange``):
one ``ValueError`` lists every missing, unexpected or mis-shaped name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exchange import validated
from ._runtime import keras
from .pointwise import KPointwise

_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _layer_variables(layer: keras.layers.Layer) -> dict[str, Any]:
    """``{param: variable}`` of one layer, in canonical local names."""
    if isinstance(layer, KPointwise):
        return layer.canonical_variables()
    if isinstance(layer, keras.layers.BatchNormalization):
        return {p: getattr(layer, p) for p in _BN}
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
        out = {"kernel": layer.kernel}  # DepthwiseConv2D's kernel is (k, k, C, 1), as canonical
        if layer.use_bias:
            out["bias"] = layer.bias
        return out
    if layer.weights:
        raise TypeError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has weights but no canonical "
            "names; gpconv models contain only Conv2D, DepthwiseConv2D, BatchNormalization, "
            "Dense and KPointwise layers with weights"
        )
    return {}


def canonical_variables(model: keras.Model) -> dict[str, Any]:
    """``{canonical name: keras.Variable}`` for every parameter of ``model`` (moving stats too)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model (e.g. gpconv.backends.tensorflow.KEfficientNetB0()), "
            f"received {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on data or build it first")
    return {
        f"{layer.name}/{p}": v for layer in model.layers for p, v in _layer_variables(layer).items()
    }


@dataclass(frozen=True)
class _Layout:
    """The canonical names and shapes a model holds, in the form ``validated`` checks against
    (``name`` and ``param_shapes()``, as ``core.arch.Architecture``)."""

    name: str
    shapes: dict[str, tuple[tuple[int, ...], bool]]

    def param_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        return self.shapes


def _layout(name: str, variables: Mapping[str, Any]) -> _Layout:
    return _Layout(name, {k: (tuple(v.shape), bool(v.trainable)) for k, v in variables.items()})


def assign(name: str, variables: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Validate ``params`` against ``variables`` (all names, all shapes, one error) and assign."""
    dtypes = {k: np.dtype(var.dtype) for k, var in variables.items()}
    values = validated(_layout(name, variables), params, dtype=dtypes)
    for k, var in variables.items():
        var.assign(values[k])


def export_params(model: keras.Model) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` (trainable weights and BN moving statistics) as
    ``{canonical name: np.ndarray}`` in Keras layouts, e.g. ``block2a_project/conv/kernel``."""
    return {k: np.array(v.numpy()) for k, v in canonical_variables(model).items()}


def load_params(model: keras.Model, params: Mapping[str, Any]) -> None:
    """Copy canonical ``params`` into ``model``. Raises one ``ValueError`` listing every missing,
    unexpected or mis-shaped name (and ``TypeError`` for non-floating arrays); nothing is
    assigned unless everything matches."""
    variables = canonical_variables(model)  # first: it checks that model is a Keras model
    assign(model.name, variables, params)
