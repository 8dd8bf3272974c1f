"""Keras contracts of the TensorFlow backend's layers that the model-sized tests do not reach:
constructor arguments the models never set, serialisation of non-default configs, the names
saved files refer to, and the fine-tuning helper on a bare layer.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from gpconv.backends.tensorflow import (  # noqa: E402
    CorrectPadding2D,
    EfficientNetB0,
    FusedBatchNormalization,
    GroupedPointwise,
    InterleaveChannels,
    KEfficientNetB0,
    KPointwise,
    SlabGradDepthwiseConv2D,
    batch_norm_layers,
    build_model,
    export_params,
    load_params,
)
from gpconv.core.arch import kefficientnet  # noqa: E402


@pytest.mark.parametrize("groups", [1, 4])
def test_kpointwise_bias_initializer_reaches_every_conv_bias(groups: int) -> None:
    """``KPointwise(use_bias=True, bias_initializer=...)`` initialises the bias of each of its
    convolutions with that initializer, as ``keras.layers.Conv2D(bias_initializer=...)`` does;
    an argument accepted and then ignored would silently change the model's start."""
    layer = KPointwise(16, groups=groups, use_bias=True, bias_initializer="ones")
    layer.build((None, 3, 3, 32))  # 32 -> 16: a second conv whenever groups > 1
    biases = {k: v for k, v in layer.canonical_variables().items() if k.endswith("/bias")}
    assert list(biases) == (["conv/bias"] if groups == 1 else ["conv/bias", "conv2/bias"])
    for name, var in biases.items():
        np.testing.assert_array_equal(var.numpy(), np.ones(16, np.float32), err_msg=name)


@pytest.mark.parametrize("strides", [1, 3])
def test_correct_padding_config_keeps_a_non_default_stride(strides: int) -> None:
    """Keras's serialisation contract: ``from_config(get_config())`` rebuilds the same layer,
    arguments with non-default values included (the existing round trip uses the default 2)."""
    layer = CorrectPadding2D(3, strides, name="p")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.strides == strides
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GroupedPointwise(24, 4, impl="matmul", name="g"),
        lambda: KPointwise(40, groups=5, impl="einsum", name="k"),
    ],
    ids=["GroupedPointwise", "KPointwise"],
)
def test_config_round_trip_keeps_a_non_default_impl(make) -> None:
    """``from_config(get_config())`` rebuilds the same layer, ``impl`` included: README and
    grouped.py tell users to pick ``impl="matmul"`` under ``jit_compile`` on CPU, and a saved
    or cloned model that fell back to ``"auto"`` would silently take the slow XLA route again.
    (The existing round trip compares the two configs, which agree when both lose the key.)"""
    layer = make()
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.impl == layer.impl != "auto"
    assert clone.get_config()["impl"] == layer.impl


@pytest.mark.parametrize(
    "cls",
    [
        CorrectPadding2D,
        FusedBatchNormalization,
        GroupedPointwise,
        InterleaveChannels,
        KPointwise,
        SlabGradDepthwiseConv2D,
    ],
)
def test_layers_are_registered_under_the_gpconv_package(cls: type) -> None:
    """A ``.keras`` file records each custom layer by its registered name, ``package>Class``;
    ``load_model`` finds the class by that name. Files saved by any release name the package
    ``gpconv``, so renaming it would make every saved model unloadable, though a save and a load
    in the same process (what the round-trip tests do) would still agree."""
    name = f"gpconv>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


def test_batch_norm_layers_of_a_batch_norm_is_that_layer() -> None:
    """``batch_norm_layers`` returns every BatchNormalization in what it is given, which may be
    any Keras layer (its docstring and type check say so): for a batch norm, itself; for a
    KPointwise, its two."""
    bn = FusedBatchNormalization()
    assert batch_norm_layers(bn) == [bn]
    kp = KPointwise(16, groups=4)
    kp.build((None, 2, 2, 32))
    assert batch_norm_layers(kp) == [kp.bn, kp.bn2]


def test_parameter_exchange_refuses_a_layer_whose_weights_it_cannot_name() -> None:
    """``export_params`` promises *every* parameter of the model and ``load_params`` assigns
    all or nothing. A layer with weights outside the canonical naming (here a LayerNormalization)
    must therefore stop the exchange with a TypeError naming it, not be skipped: skipping would
    export an incomplete set and "load" a model whose LayerNormalization stays at its init."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="ln")(inputs))
    with pytest.raises(TypeError, match="'ln'"):
        export_params(model)
    with pytest.raises(TypeError, match="'ln'"):
        load_params(model, {})


def test_parameter_exchange_with_an_unbuilt_model_says_it_is_not_built() -> None:
    """A Sequential model given no input shape has no variables yet: exchanging parameters with
    it must fail with a ValueError saying so (what to do: build it), not an AttributeError from
    deep inside a layer that has not made its sub-layers."""
    model = keras.Sequential([KPointwise(8, groups=2)])
    assert not model.built
    with pytest.raises(ValueError, match="is not built"):
        export_params(model)
    with pytest.raises(ValueError, match="is not built"):
        load_params(model, {})


@pytest.mark.parametrize("shape", [(32, 32, True), (True, 32, 3), (np.True_, 32, 3)])
def test_a_bool_in_input_shape_is_a_type_error(shape: tuple) -> None:
    """Sizes are ints or None. ``True`` is an ``int`` to Python but not a size anyone means, so
    it is refused as the wrong type (TypeError), as a float or a string is, rather than read as
    1 and reported as a too-small or wrong channel count."""
    with pytest.raises(TypeError, match="ints or None"):
        build_model(kefficientnet("b0", 10, 16, skip_stride_cnt=3), input_shape=shape)


@pytest.mark.parametrize("family", ["kefficientnet", "efficientnet"])
def test_pointwise_convs_start_from_the_designed_initializers(family: str) -> None:
    """DESIGN.md §1 (training parity with the paper): every kPointwise conv of kEffNet starts
    glorot-uniform (the paper's code); EfficientNet's 1×1 convs start as keras.applications'
    VarianceScaling(2.0, fan_out). Checked on the expand, SE and project convs of one block
    and on the top conv, both convolutions of each kPointwise where it has two."""
    make = KEfficientNetB0 if family == "kefficientnet" else EfficientNetB0
    model = make(classes=10, input_shape=(32, 32, 3), skip_stride_cnt=3)
    names = ["block2a_expand", "block2a_se_reduce", "block2a_project", "top"]
    convs = [
        conv
        for name in names
        for conv in (model.get_layer(name).conv, model.get_layer(name).conv2)
        if conv is not None
    ]
    assert len(convs) > len(names) or family == "efficientnet"
    for conv in convs:
        init = conv.kernel_initializer
        if family == "kefficientnet":
            assert isinstance(init, keras.initializers.GlorotUniform), conv.path
        else:
            assert type(init) is keras.initializers.VarianceScaling, conv.path
            assert (init.scale, init.mode) == (2.0, "fan_out"), conv.path
