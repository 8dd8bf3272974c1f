"""Every op EfficientNet and kEffNet need, each a ``forward(...) -> (y, cache)`` and
``backward(cache, dy) -> (dx, grads)`` pair written side by side. Channels-last ``(N, H, W, C)``."""

from .activations import Sigmoid, Swish, get_activation
from .conv import Conv2D, DepthwiseConv2D, output_size, pad_amounts
from .dense import Dense
from .elementwise import Add, ChannelScale, Dropout
from .loss import SoftmaxCrossEntropy
from .normalization import BatchNorm
from .pooling import GlobalAveragePool

__all__ = [
    "Add",
    "BatchNorm",
    "ChannelScale",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "GlobalAveragePool",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Swish",
    "get_activation",
    "output_size",
    "pad_amounts",
]
