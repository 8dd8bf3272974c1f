"""TensorFlow and Keras 3, imported in one place with a clear error when they cannot serve.

Every module of this package except ``adapter`` and ``__init__`` imports ``tf`` and ``keras``
from here, so the backend registry can import the adapter on a machine without TensorFlow.
"""

from __future__ import annotations

try:
    import keras
    import tensorflow as tf
except ImportError as err:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "gpconv.backends.tensorflow needs TensorFlow and Keras 3: pip install 'gpconv[tensorflow]'"
    ) from err

if keras.backend.backend() != "tensorflow":
    # The layers call TensorFlow ops directly (the fast grouped product is a TF kernel choice).
    raise ImportError(
        "gpconv.backends.tensorflow needs Keras's TensorFlow backend; set KERAS_BACKEND=tensorflow "
        f"before importing keras, received keras.backend.backend()={keras.backend.backend()!r}"
    )

SERIALIZATION_PACKAGE = "gpconv"

__all__ = ["SERIALIZATION_PACKAGE", "keras", "tf"]
