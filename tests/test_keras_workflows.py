"""Keras 3 deployment workflows with the TensorFlow backend's models, each compared with the eager
model: ``model.export`` (SavedModel for serving) reloaded with ``tf.saved_model.load`` and
``keras.layers.TFSMLayer``, and TFLite conversion run in the interpreter.

(Training, ``.keras`` saving, config round trips and XLA are in ``test_tensorflow_backend.py``.)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from helpers import calibrated_params, random_network_params, tiny_architecture  # noqa: E402

from gpconv.backends.tensorflow import (  # noqa: E402
    CorrectPadding2D,
    build_model,
    load_params,
)

# TF 2.21 warns that tf.lite.Interpreter moves to the ai_edge_litert package.
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


def images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 images ``(n, height, width, 3)``."""
    rng = np.random.default_rng([seed, height, width])
    return rng.standard_normal((n, height, width, 3)).astype(np.float32)


def run_tflite(content: bytes, x: np.ndarray) -> np.ndarray:
    """The first output of the TFLite model ``content`` on ``x``, its input resized to
    ``x.shape`` (a model converted with unknown sizes takes any)."""
    interpreter = tf.lite.Interpreter(model_content=content)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_padding_chosen_at_run_time_converts_to_tflite():
    """With an unknown image size ``correct_pad`` picks its amounts from the size's parity at
    run time; the padded tensor used to lose its channel count in the graph, and TFLite refused
    the next conv ("'tf.Conv2D' op is neither a custom op nor a flex op"), so no model built with
    ``input_shape=(None, None, 3)`` converted."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="valid")
    model = keras.Model(inputs, conv(CorrectPadding2D(3, 2)(inputs)))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    for height, width in ((8, 9), (9, 8)):  # every parity on each axis
        x = images(2, height, width)
        np.testing.assert_allclose(
            run_tflite(content, x), model(x), rtol=1e-5, atol=1e-6, err_msg=f"{height}x{width}"
        )


@pytest.mark.slow
def test_exported_kefficientnet_serves_any_size_as_the_eager_model(tmp_path):
    """``model.export`` -> ``tf.saved_model.load`` / ``TFSMLayer`` / TFLite, at an even and an odd
    size, against the eager model (parameters with non-trivial BN statistics). Five blocks of
    kEffNet-B0 have each of its layer kinds (run-time correct_pad before the stride-1 stem and
    the 3x3 and 5x5 stride-2 depthwise convs, grouped 1x1 with interleave and second conv, SE,
    residuals) and export and convert in a fraction of B0's time."""
    arch = tiny_architecture("kefficientnet", num_classes=10, skip_stride_cnt=1, blocks=5)
    model = build_model(arch, input_shape=(None, None, 3))
    params = random_network_params(arch, seed=1)
    load_params(model, calibrated_params(arch, params, images(8, 32, 32, seed=5)))
    model.export(tmp_path / "served", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    layer = keras.layers.TFSMLayer(tmp_path / "served", call_endpoint="serve")
    content = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "served")).convert()
    for size in (32, 33):
        x = images(2, size, size)
        eager = model(x, training=False).numpy()
        assert np.abs(eager).max() > 0.1  # logits of a working scale, not ~0
        for how, out in (
            ("tf.saved_model.load", served.serve(x)),
            ("TFSMLayer", layer(x)),
            ("TFLite", run_tflite(content, x)),
        ):
            np.testing.assert_allclose(out, eager, rtol=1e-4, atol=1e-4, err_msg=f"{how} {size}")
