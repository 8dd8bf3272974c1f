"""gpconv.core: the spec. Array-API code (NumPy, CuPy, array-api-strict); no framework imports.

NumPy draws random initial values and dropout masks, which are then moved to the inputs' library."""

from .ops import (
    Add,
    BatchNorm,
    ChannelScale,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    GlobalAveragePool,
    Sigmoid,
    SoftmaxCrossEntropy,
    Swish,
)
from .pointwise import (
    GroupedPointwise,
    Interleave,
    KPointwise,
    KPointwiseSpec,
    deinterleave,
    group_count,
    interleave,
)

__all__ = [
    "Add",
    "BatchNorm",
    "ChannelScale",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "GlobalAveragePool",
    "GroupedPointwise",
    "Interleave",
    "KPointwise",
    "KPointwiseSpec",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Swish",
    "deinterleave",
    "group_count",
    "interleave",
]
