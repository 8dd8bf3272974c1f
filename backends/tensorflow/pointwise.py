"""Keras 3 layers of the method: ``GroupedPointwise``, ``InterleaveChannels`` and ``KPointwise``.

Channels-last ``(N, H, W, C)`` throughout. Kernels are stored in the canonical Keras layout
``(1, 1, Cin/G, Cout)``, the same as ``keras.layers.Conv2D(groups=G)``, so parameters exchange
with the reference (and with Conv2D-based Keras models) without any conversion.
"""

from __future__ import annotations

from typing import Any

from ...core._validate import require_bool, require_divides, require_positive_int
from ...core.pointwise import KPointwiseSpec, group_count
from ._runtime import SERIALIZATION_PACKAGE, keras, tf
from .grouped import check_impl, grouped_product
from .normalization import FusedBatchNormalization
from .shuffle import interleave

register = keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)


def _channels(input_shape: tuple, layer: str) -> int:
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{layer} expects inputs (N, H, W, C) with a known C (channels-last), "
            f"received input_shape={tuple(input_shape)}"
        )
    return int(input_shape[-1])


def _fix_channels(layer: keras.layers.Layer, channels: int, ndim: int | None = 4) -> None:
    """Once built, ``layer`` accepts only inputs with ``channels`` channels (as ``Conv2D``).

    Without this a layer built for 48 channels and later called on 96 would compute a valid
    product with twice the channels per group, a different function, instead of failing.
    """
    layer.input_spec = keras.InputSpec(ndim=ndim, min_ndim=None if ndim else 1, axes={-1: channels})


@register
class GroupedPointwise(keras.layers.Layer):
    """Grouped 1×1 convolution ``(N, H, W, Cin) -> (N, H, W, filters)``.

    Output block ``g`` (channels ``g*Co .. g*Co + Co - 1``, ``Co = filters / groups``) sees only
    input block ``g``, as ``keras.layers.Conv2D(filters, 1, groups=groups)``. Weights: ``kernel``
    ``(1, 1, Cin/groups, filters)`` and, with ``use_bias``, ``bias`` ``(filters,)``.

    ``impl`` picks how the product is computed (see ``grouped``): ``"auto"`` (default, the
    fastest that works here), ``"conv"``, ``"matmul"``, ``"einsum"`` or ``"keras"``.
    """

    def __init__(
        self,
        filters: int,
        groups: int = 1,
        use_bias: bool = False,
        impl: str = "auto",
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = require_positive_int("filters", filters)
        self.groups = require_positive_int("groups", groups)
        require_divides(self.groups, self.filters, "filters")
        self.use_bias = require_bool("use_bias", use_bias)  # bool("false") would be True
        self.impl = check_impl(impl)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape: tuple) -> None:
        cin = _channels(input_shape, "GroupedPointwise")
        require_divides(self.groups, cin, "input channels input_shape[-1]")
        _fix_channels(self, cin)
        self._product = grouped_product(self.impl, self.compute_dtype)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(1, 1, cin // self.groups, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if not x.dtype.is_floating:  # Keras casts floating inputs only; TF's op error is opaque
            raise TypeError(f"Expected floating-point x, received x.dtype={x.dtype.name}")
        y = self._product(x, tf.convert_to_tensor(self.kernel), self.groups)
        return tf.nn.bias_add(y, self.bias) if self.use_bias else y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.filters)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "groups": self.groups,
            "use_bias": self.use_bias,
            "impl": self.impl,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@register
class InterleaveChannels(keras.layers.Layer):
    """Channel interleave of ``(..., C)`` with ``groups`` groups of ``S = C / groups``:
    ``out[..., s*G + g] = in[..., g*S + s]`` (view channels as ``(G, S)``, transpose, flatten;
    ``torch.nn.ChannelShuffle(G)``). Its gradient is the inverse permutation. In training mode two
    groups take a faster route on CPU (``shuffle.zip_halves``), with the same values."""

    def __init__(self, groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = require_positive_int("groups", groups)

    def build(self, input_shape: tuple) -> None:
        if not input_shape or input_shape[-1] is None:
            raise ValueError(
                "InterleaveChannels needs a known channel count, "
                f"received input_shape={input_shape}"
            )
        require_divides(self.groups, int(input_shape[-1]), "channels input_shape[-1]")
        _fix_channels(self, int(input_shape[-1]), ndim=None)

    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        return interleave(x, self.groups, training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups}


def _fresh(initializer: Any) -> Any:
    """A copy of ``initializer`` made from its config, for one sub-layer. A Keras 3 initializer
    without a seed fixes a random one when it is created and draws the same numbers on every
    call, so ``conv`` and ``conv2`` sharing one object would start as copies of each other (as
    two layers given the same string get separate objects). A seeded one keeps its seed."""
    return keras.initializers.get(keras.initializers.serialize(initializer))


@register
class KPointwise(keras.layers.Layer):
    """kPointwise (DESIGN.md §1), ``(N, H, W, Cin) -> (N, H, W, filters)``:

    1. ``y1 = act(BN(conv(x)))``, ``conv`` a ``GroupedPointwise`` with ``G`` groups (with
       ``G == 1`` this is the whole layer: a plain 1×1 conv);
    2. ``z = interleave(y1, G)`` when ``filters / G > 1``, else ``z = y1``;
    3. when ``Cin >= filters``: ``out = act(BN2(conv2(z))) + y1`` — the residual adds the
       *non-interleaved* ``y1``; otherwise ``out = z``.

    ``G`` is ``groups`` if given, else ``group_count(Cin, filters, min_channels_per_group)``
    (core's rule), decided when the layer is built. Sub-layers ``conv``, ``bn`` (if ``use_bn``),
    ``interleave``, ``conv2``, ``bn2``; ``canonical_variables()`` names their weights as the
    reference does (``conv/kernel``, ``bn/gamma``, ...). ``activation`` is any Keras activation.
    """

    def __init__(
        self,
        filters: int,
        min_channels_per_group: int | None = 16,
        groups: int | None = None,
        use_bn: bool = True,
        activation: Any = None,
        use_bias: bool = False,
        impl: str = "auto",
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = require_positive_int("filters", filters)
        if groups is None and min_channels_per_group is None:
            raise ValueError("KPointwise needs groups or min_channels_per_group, received neither")
        self.groups = None if groups is None else require_positive_int("groups", groups)
        if self.groups is not None:  # as GroupedPointwise: now, naming the argument
            require_divides(self.groups, self.filters, "filters")
        self.min_channels_per_group = (
            None
            if min_channels_per_group is None
            else require_positive_int("min_channels_per_group", min_channels_per_group)
        )
        self.use_bn = require_bool("use_bn", use_bn)  # bool("false") would be True
        self.activation = keras.activations.get(activation)
        self.use_bias = require_bool("use_bias", use_bias)
        self.impl = check_impl(impl)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.spec: KPointwiseSpec | None = None

    @classmethod
    def from_spec(cls, spec: KPointwiseSpec, **kwargs: Any) -> KPointwise:
        """The layer for a core ``KPointwiseSpec`` (its groups, BN, activation and bias)."""
        return cls(
            spec.cout,
            min_channels_per_group=None,  # the groups are given: a rule would only mislead
            groups=spec.groups,
            use_bn=spec.bn,
            activation=spec.activation,
            use_bias=spec.bias,
            **kwargs,
        )

    def build(self, input_shape: tuple) -> None:
        cin = _channels(input_shape, "KPointwise")
        if self.groups is not None:  # else core's spec names it "cin", not the layer's input
            require_divides(self.groups, cin, "input channels input_shape[-1]")
        _fix_channels(self, cin)
        groups = self.groups or group_count(cin, self.filters, self.min_channels_per_group)
        # The core spec decides the structure (interleave? second conv?): one rule, not two.
        self.spec = spec = KPointwiseSpec(
            cin, self.filters, groups, bn=self.use_bn, bias=self.use_bias
        )
        out_shape = (*input_shape[:-1], self.filters)
        self.conv, self.bn = self._conv_bn("", input_shape, out_shape)
        self.interleave = (
            InterleaveChannels(groups, name="interleave", **self._sublayer_kwargs())
            if spec.interleaves
            else None
        )
        self.conv2 = self.bn2 = None
        if spec.has_second_conv:
            self.conv2, self.bn2 = self._conv_bn("2", out_shape, out_shape)

    def _sublayer_kwargs(self) -> dict[str, Any]:
        """What each sub-layer inherits. ``trainable``: Keras propagates ``layer.trainable =
        False`` only to sub-layers that exist, and a layer rebuilt from its config
        (``load_model``, ``clone_model``, ``from_config``) is frozen *before* ``build`` makes
        them, so they would come back trainable: their kernels in ``model.trainable_weights``
        and their BN updating its moving statistics in ``fit``."""
        return {"dtype": self.dtype_policy, "trainable": self.trainable}

    def _conv_bn(self, suffix: str, in_shape: tuple, out_shape: tuple):
        conv = GroupedPointwise(
            self.filters,
            self.spec.groups,
            self.use_bias,
            self.impl,
            _fresh(self.kernel_initializer),
            _fresh(self.bias_initializer),
            name=f"conv{suffix}",
            **self._sublayer_kwargs(),
        )
        conv.build(in_shape)
        bn = None
        if self.use_bn:  # Keras defaults are the method's: epsilon 1e-3, momentum 0.99
            bn = FusedBatchNormalization(name=f"bn{suffix}", **self._sublayer_kwargs())
            bn.build(out_shape)
        return conv, bn

    def _conv_bn_act(self, conv, bn, x: tf.Tensor, training: Any) -> tf.Tensor:
        y = conv(x)
        if bn is not None:
            y = bn(y, training=training)
        return self.activation(y)

    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        y1 = self._conv_bn_act(self.conv, self.bn, x, training)
        z = self.interleave(y1, training=training) if self.interleave is not None else y1
        if self.conv2 is None:
            return z
        return self._conv_bn_act(self.conv2, self.bn2, z, training) + y1

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.filters)

    def canonical_variables(self) -> dict[str, Any]:
        """``{local canonical name: variable}`` in the order of ``KPointwiseSpec.param_shapes``."""
        out: dict[str, Any] = {}
        for suffix, conv, bn in (("", self.conv, self.bn), ("2", self.conv2, self.bn2)):
            if conv is None:
                continue
            out[f"conv{suffix}/kernel"] = conv.kernel
            if conv.use_bias:
                out[f"conv{suffix}/bias"] = conv.bias
            if bn is not None:
                for p in ("gamma", "beta", "moving_mean", "moving_variance"):
                    out[f"bn{suffix}/{p}"] = getattr(bn, p)
        return out

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "min_channels_per_group": self.min_channels_per_group,
            "groups": self.groups,
            "use_bn": self.use_bn,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "impl": self.impl,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
