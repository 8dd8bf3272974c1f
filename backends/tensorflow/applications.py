"""``keras.applications``-style constructors: ``EfficientNetB0..B7`` and ``KEfficientNetB0..B7``.

Each builds the architecture with ``core.arch`` and the model with ``models.build_model``::

    model = KEfficientNetB0(classes=10, input_shape=(32, 32, 3), skip_stride_cnt=3)
    logits = model(images)                                  # (N, 10) logits
    probs = KEfficientNetB0(classes=10, input_shape=(32, 32, 3),
                            classifier_activation="softmax")(images)  # or keras.ops.softmax(logits)

The arguments are keras.applications' in its order (``include_top, weights, input_tensor,
input_shape, pooling, classes, classifier_activation``), then gpconv's (``skip_stride_cnt``,
``min_channels_per_group``, ``impl``, ``name``). Differences from keras.applications:

* Models return **logits** by default (``classifier_activation=None``): train them with
  ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
* There is no rescaling layer inside: feed standardised images (per-channel mean 0, std 1, as
  ``gpconv train`` does), not raw ``[0, 255]`` pixels; and 3 channels (RGB), as the paper.
  Keras casts any input to the model's float32 as it is, so ``uint8`` images are neither
  rescaled nor refused (the torch models refuse integer tensors).
* ``weights`` is ``None`` (fresh initialisation), the path of a canonical safetensors or ``.npz``
  file (``core.params.save_params``), or, as keras.applications, a Keras ``.weights.h5``/``.keras``
  file (``model.save_weights``/``model.save``), read by ``model.load_weights``; no ImageNet
  weights ship and nothing is downloaded.
* The pointwise convs are single ``KPointwise`` layers named after the canonical parameters
  (``block2a_expand``, ``top``), so keras.applications' ``*_expand_conv``/``top_activation``
  names do not exist; ``top`` is the last feature map.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ...core._validate import require_positive_int
from ...core.arch import Architecture, efficientnet, kefficientnet
from ...core.files import readable_file
from ...core.params import check_arch_metadata, read_params_file
from ._runtime import keras
from .models import build_model
from .params import load_params

Constructor = Callable[..., keras.Model]
# Files that keras.Model.load_weights reads (model.save_weights / model.save writes them).
KERAS_WEIGHTS_SUFFIXES = (".weights.h5", ".keras")


WEIGHTS_EXPECTED = "weights=None or the path of a safetensors, .npz, .weights.h5 or .keras file"


def _weights_path(weights: Any) -> str:
    """``weights`` (not None) as the path of an existing regular file, checked before the model
    is built (kEffNet-B7 takes seconds to build, only to fail on a mistyped path); else
    ``TypeError``/``ValueError``/``FileNotFoundError``/``IsADirectoryError`` naming it."""
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"Expected {WEIGHTS_EXPECTED}, received {type(weights).__name__} {weights!r}"
        )
    if isinstance(weights, str) and weights.lower() == "imagenet":
        raise ValueError(
            f"Expected {WEIGHTS_EXPECTED}: gpconv ships no ImageNet weights and downloads "
            f"nothing, received weights={weights!r}"
        )
    return readable_file(weights)


def _finish(
    arch: Architecture, weights: str | os.PathLike | None, include_top: bool, **kwargs: Any
) -> keras.Model:
    if weights is not None:
        weights = _weights_path(weights)
    model = build_model(arch, include_top=include_top, **kwargs)
    if str(weights).endswith(KERAS_WEIGHTS_SUFFIXES):  # keras.applications' way to take a path
        model.load_weights(weights)
    elif weights is not None:
        params, metadata = read_params_file(weights)
        # Without the top, the file's class count does not matter (its classifier is dropped).
        ignore = () if include_top else ("num_classes",)
        check_arch_metadata(arch, metadata, str(weights), ignore)
        if not include_top:  # the classifier's parameters have no layer to go to
            params = {k: v for k, v in params.items() if not k.startswith("predictions/")}
        load_params(model, params)
    return model


def _efficientnet(variant: str) -> Constructor:
    def constructor(
        include_top: bool = True,
        weights: str | None = None,
        input_tensor: Any = None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: Any = None,
        skip_stride_cnt: int = -1,
        impl: str = "auto",
        name: str | None = None,
    ) -> keras.Model:
        require_positive_int("classes", classes)  # core would name it num_classes
        arch = efficientnet(variant, classes, skip_stride_cnt)
        return _finish(
            arch,
            weights,
            include_top,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classifier_activation=classifier_activation,
            impl=impl,
            name=name,
        )

    constructor.__name__ = constructor.__qualname__ = f"EfficientNet{variant.upper()}"
    constructor.__doc__ = (
        f"EfficientNet-{variant.upper()} as keras.applications (no input rescaling); returns\n"
        "logits. "
        "``skip_stride_cnt=n >= 0`` makes the stem stride 1 and the first ``n`` stages stride 1\n"
        "(the paper's 32x32 runs use 3). Images are channels-last ``(N, H, W, 3)``."
    )
    return constructor


def _kefficientnet(variant: str) -> Constructor:
    def constructor(
        include_top: bool = True,
        weights: str | None = None,
        input_tensor: Any = None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: Any = None,
        skip_stride_cnt: int = -1,
        min_channels_per_group: int = 16,
        impl: str = "auto",
        name: str | None = None,
    ) -> keras.Model:
        require_positive_int("classes", classes)  # core would name it num_classes
        arch = kefficientnet(variant, classes, min_channels_per_group, skip_stride_cnt)
        return _finish(
            arch,
            weights,
            include_top,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classifier_activation=classifier_activation,
            impl=impl,
            name=name,
        )

    constructor.__name__ = constructor.__qualname__ = f"KEfficientNet{variant.upper()}"
    constructor.__doc__ = (
        f"kEffNet-{variant.upper()}: EfficientNet-{variant.upper()} with every pointwise conv a\n"
        "KPointwise of at least ``min_channels_per_group`` channels per group (16 or 32 in the\n"
        "paper) and no activation on the top conv; returns logits. ``impl`` picks the grouped\n"
        "product (default ``'auto'``: the fastest that works here)."
    )
    return constructor


EfficientNetB0 = _efficientnet("b0")
EfficientNetB1 = _efficientnet("b1")
EfficientNetB2 = _efficientnet("b2")
EfficientNetB3 = _efficientnet("b3")
EfficientNetB4 = _efficientnet("b4")
EfficientNetB5 = _efficientnet("b5")
EfficientNetB6 = _efficientnet("b6")
EfficientNetB7 = _efficientnet("b7")
KEfficientNetB0 = _kefficientnet("b0")
KEfficientNetB1 = _kefficientnet("b1")
KEfficientNetB2 = _kefficientnet("b2")
KEfficientNetB3 = _kefficientnet("b3")
KEfficientNetB4 = _kefficientnet("b4")
KEfficientNetB5 = _kefficientnet("b5")
KEfficientNetB6 = _kefficientnet("b6")
KEfficientNetB7 = _kefficientnet("b7")
