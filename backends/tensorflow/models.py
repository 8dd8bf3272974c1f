"""Keras Functional models built by walking a ``core.arch.Architecture`` (never a second copy of
the block table): stem -> MBConv blocks -> head, with the layer names of the canonical
parameters (``stem_conv``, ``block2a_expand``, ``block2a_dwconv``, ``top``, ``predictions``...).

Keras semantics as ``keras.applications.EfficientNet``: BN epsilon 1e-3 / momentum 0.99 (the
Keras defaults; computed by the fused kernel, see ``normalization``), ``correct_pad`` zero
padding + valid conv for the stem and stride-2 depthwise convs, ``"same"`` for stride-1 depthwise
convs, drop-connect as ``Dropout(rate, noise_shape=(None, 1, 1, 1))`` and dropout before the
classifier. Unlike keras.applications there is no input rescaling layer: inputs go straight to
the stem, as in the reference. Channels-last; the classifier returns logits unless
``classifier_activation`` is set.
"""

from __future__ import annotations

import numbers
from typing import Any

from ...core._validate import require_bool
from ...core.arch import (
    MIN_INPUT_SIZE,
    Architecture,
    HeadSpec,
    MBConvSpec,
    StemSpec,
    require_arch,
)
from ...core.pointwise import KPointwiseSpec
from ._runtime import keras
from .depthwise import SlabGradDepthwiseConv2D
from .normalization import FusedBatchNormalization
from .padding import CorrectPadding2D
from .pointwise import KPointwise

layers = keras.layers

# keras.applications.efficientnet's initialisers (DESIGN.md §1).
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}
# The paper's kEffNet code initialises every kPointwise conv glorot-uniform.
KPOINTWISE_KERNEL_INITIALIZER = "glorot_uniform"


def _init(config: Any) -> Any:
    return keras.initializers.get(config)  # a fresh object per layer (no shared RNG state)


class _Builder:
    """Applies the layers of one architecture to Keras tensors; holds the per-model choices."""

    def __init__(self, arch: Architecture, impl: str) -> None:
        self.arch = arch
        self.impl = impl
        self.pointwise_init = (
            KPOINTWISE_KERNEL_INITIALIZER
            if arch.family == "kefficientnet"
            else CONV_KERNEL_INITIALIZER
        )

    def pointwise(self, spec: KPointwiseSpec, name: str, x: Any) -> Any:
        layer = KPointwise.from_spec(
            spec, impl=self.impl, kernel_initializer=_init(self.pointwise_init), name=name
        )
        return layer(x)

    def spatial(self, x: Any, kernel: int, stride: int, padding: str, name: str) -> tuple[Any, str]:
        """Insert ``correct_pad`` where the spec asks for it; returns the conv's own padding."""
        if padding == "correct":
            return CorrectPadding2D(kernel, stride, name=f"{name}_pad")(x), "valid"
        return x, padding

    def bn_swish(self, x: Any, bn: str, act: str) -> Any:
        x = FusedBatchNormalization(name=bn)(x)
        return layers.Activation("swish", name=act)(x)

    def stem(self, s: StemSpec, x: Any) -> Any:
        x, padding = self.spatial(x, s.kernel, s.stride, s.padding, "stem_conv")
        x = layers.Conv2D(
            s.cout,
            s.kernel,
            strides=s.stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=_init(CONV_KERNEL_INITIALIZER),
            name="stem_conv",
        )(x)
        return self.bn_swish(x, "stem_bn", "stem_activation")

    def block(self, b: MBConvSpec, inputs: Any) -> Any:
        x = inputs
        if b.expand is not None:
            x = self.pointwise(b.expand, f"{b.name}_expand", x)
        x, padding = self.spatial(x, b.kernel, b.stride, b.padding, f"{b.name}_dwconv")
        x = SlabGradDepthwiseConv2D(
            b.kernel,
            strides=b.stride,
            padding=padding,
            use_bias=False,
            depthwise_initializer=_init(CONV_KERNEL_INITIALIZER),
            name=f"{b.name}_dwconv",
        )(x)
        x = self.bn_swish(x, f"{b.name}_bn", f"{b.name}_activation")
        if b.se_reduce is not None:
            s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{b.name}_se_squeeze")(x)
            s = self.pointwise(b.se_reduce, f"{b.name}_se_reduce", s)
            s = self.pointwise(b.se_expand, f"{b.name}_se_expand", s)
            x = layers.Multiply(name=f"{b.name}_se_excite")([x, s])
        x = self.pointwise(b.project, f"{b.name}_project", x)
        if b.residual:
            if b.drop_rate > 0:  # drop-connect: one Bernoulli draw per sample
                x = layers.Dropout(b.drop_rate, noise_shape=(None, 1, 1, 1), name=f"{b.name}_drop")(
                    x
                )
            x = layers.Add(name=f"{b.name}_add")([x, inputs])
        return x

    def head(
        self,
        h: HeadSpec,
        x: Any,
        include_top: bool,
        pooling: str | None,
        classifier_activation: Any,
    ) -> Any:
        x = self.pointwise(h.top, "top", x)
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            if h.dropout > 0:
                x = layers.Dropout(h.dropout, name="top_dropout")(x)
            return layers.Dense(
                h.num_classes,
                activation=classifier_activation,
                kernel_initializer=_init(DENSE_KERNEL_INITIALIZER),
                name="predictions",
            )(x)
        if pooling == "avg":
            return layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if pooling == "max":
            return layers.GlobalMaxPooling2D(name="max_pool")(x)
        return x


def default_input_shape(
    arch: Architecture, include_top: bool
) -> tuple[int | None, int | None, int]:
    """As keras.applications: the variant's resolution with the classifier, any size without."""
    size = arch.resolution if include_top else None
    return (size, size, arch.stem.cin)


def build_model(
    arch: Architecture,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: Any = None,
    impl: str = "auto",
    name: str | None = None,
    input_tensor: Any = None,
) -> keras.Model:
    """A Keras Functional model of ``arch``: images ``(N, H, W, 3)`` -> logits ``(N, classes)``
    (or probabilities with ``classifier_activation="softmax"``). With ``include_top=False`` it
    returns the ``top`` features ``(N, h, w, C)``, or ``(N, C)`` with ``pooling="avg"``/``"max"``.
    ``impl`` selects the grouped-pointwise implementation (``gpconv.backends.tensorflow.grouped``).
    ``input_tensor`` (a Keras tensor: ``keras.Input(...)`` or a layer's output) builds the model
    on that tensor, as keras.applications does; its shape is the input shape.
    """
    require_arch(arch)
    include_top = require_bool("include_top", include_top)  # "false" would build the classifier
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"Expected pooling in (None, 'avg', 'max'), received pooling={pooling!r}")
    if input_tensor is None:
        shape = checked_input_shape(arch, input_shape, include_top)
        inputs = sources = keras.Input(shape=shape, name="input_layer")
    else:
        inputs, sources = _tensor_inputs(arch, input_tensor, input_shape, include_top)
    builder = _Builder(arch, impl)
    x = builder.stem(arch.stem, inputs)
    for b in arch.blocks:
        x = builder.block(b, x)
    outputs = builder.head(arch.head, x, include_top, pooling, classifier_activation)
    return keras.Model(sources, outputs, name=name or model_name(arch))


def _tensor_inputs(
    arch: Architecture, input_tensor: Any, input_shape: Any, include_top: bool
) -> tuple[Any, Any]:
    """keras.applications' ``input_tensor``: the tensor the network starts from, checked, and
    the model's inputs (the ``keras.Input`` it comes from; one tensor when there is one)."""
    if not keras.backend.is_keras_tensor(input_tensor):
        raise TypeError(
            "Expected input_tensor to be a Keras tensor (keras.Input(...) or a layer's "
            f"output), received {type(input_tensor).__name__}"
        )
    shape = tuple(input_tensor.shape[1:])
    checked_input_shape(arch, shape, include_top, "input_tensor.shape[1:]")
    if input_shape is not None and checked_input_shape(arch, input_shape, include_top) != shape:
        raise ValueError(
            f"Expected input_shape=None or input_tensor's shape {shape}, "
            f"received input_shape={tuple(input_shape)}"
        )
    sources = keras.utils.get_source_inputs(input_tensor)
    return input_tensor, sources[0] if len(sources) == 1 else sources


def checked_input_shape(
    arch: Architecture, input_shape: Any, include_top: bool, name: str = "input_shape"
) -> tuple[int | None, int | None, int]:
    """``input_shape`` (a tuple, list, ``tf.TensorShape`` or 1-d array) as ``(H, W, 3)`` of
    Python ints or None (``None``: the default), or a ``TypeError``/``ValueError`` naming it as
    ``name``."""
    if input_shape is None:
        return default_input_shape(arch, include_top)
    try:
        if isinstance(input_shape, (str, bytes)):
            raise TypeError
        dims = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"Expected {name} a tuple (H, W, {arch.stem.cin}), "
            f"received {type(input_shape).__name__} {input_shape!r}"
        ) from None
    if any(
        d is not None and (isinstance(d, bool) or not isinstance(d, numbers.Integral)) for d in dims
    ):
        raise TypeError(f"Expected {name} of ints or None, received {name}={dims!r}")
    shape = tuple(None if d is None else int(d) for d in dims)
    if len(shape) != 3 or shape[-1] != arch.stem.cin:
        raise ValueError(
            f"Expected {name} (H, W, {arch.stem.cin}) (channels-last), received {name}={shape}"
        )
    if any(size is not None and size < MIN_INPUT_SIZE for size in shape[:2]):
        # The rule of core's Architecture.layers and of gpconv train/bench/summary.
        raise ValueError(
            f"Expected {name} H and W >= {MIN_INPUT_SIZE} (or None), received {name}={shape}"
        )
    return shape


def model_name(arch: Architecture) -> str:
    """``efficientnetb0``, ``kefficientnetb0_16ch`` (keras.applications style)."""
    suffix = f"_{arch.min_channels_per_group}ch" if arch.family == "kefficientnet" else ""
    return f"{arch.family}{arch.variant}{suffix}"


def intermediate_layers(arch: Architecture) -> dict[str, str]:
    """``{intermediate key: layer name}`` for the keys of ``core.network``'s
    ``cache["intermediates"]``: ``stem``, each block, ``top``, ``logits``."""
    out = {"stem": "stem_activation"}
    for b in arch.blocks:
        out[b.name] = f"{b.name}_add" if b.residual else f"{b.name}_project"
    out["top"] = "top"
    out["logits"] = "predictions"
    return out


def intermediates_model(model: keras.Model, arch: Architecture) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are ``intermediate_layers(arch)``."""
    names = intermediate_layers(require_arch(arch))
    outputs = {key: model.get_layer(layer).output for key, layer in names.items()}
    return keras.Model(model.input, outputs, name=f"{model.name}_intermediates")


def batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` in ``model``, in order, those inside ``KPointwise`` layers
    (and nested models) included. ``model.layers`` lists only the top level: kEffNet-B0 16ch has 17
    batch norms there and 48 more inside its ``KPointwise`` layers, so keras.io's fine-tuning
    recipe (unfreeze the top layers but keep every ``BatchNormalization`` frozen) must take them
    from here: setting a ``KPointwise`` trainable makes its batch norms trainable too."""
    if not isinstance(model, keras.Layer):
        raise TypeError(
            f"Expected model to be a Keras layer or model, received {type(model).__name__}"
        )
    # _flatten_layers is how Keras itself walks sub-layers; it has no public equivalent.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


__all__ = [
    "batch_norm_layers",
    "build_model",
    "checked_input_shape",
    "default_input_shape",
    "intermediate_layers",
    "intermediates_model",
    "model_name",
]
