"""Hypothesis strategies for layer and network configurations, shared by every backend's tests.

``kpointwise_refs()`` draws a kPointwise configuration (channels, minimum channels per group,
BN/activation/bias, mode, input shape, seed) and returns the reference case built by
``cases.reference_kpointwise``; feed it to ``checks.compare_kpointwise(backend, ref)``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ..core.pointwise import KPointwiseSpec
from .cases import reference_kpointwise

ACTIVATIONS = (None, "swish", "sigmoid")


@st.composite
def kpointwise_specs(draw: Any, max_channels: int = 48) -> KPointwiseSpec:
    """A spec whose groups come from ``group_count`` with a drawn minimum channels per group; the
    channel counts are drawn from multiples so that grouped cases (G > 1) are common."""
    unit = draw(st.sampled_from((1, 2, 3, 4, 8)))
    cin = unit * draw(st.integers(1, max(1, max_channels // unit)))
    cout = unit * draw(st.integers(1, max(1, max_channels // unit)))
    m = draw(st.integers(1, max(1, cin)))
    return KPointwiseSpec.from_min_channels(
        cin,
        cout,
        m,
        bn=draw(st.booleans()),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        bias=draw(st.booleans()),
    )


# Values per channel that a training-mode case has at least. Batch norm over n values projects
# the input gradient onto the (n - 2)-dimensional space orthogonal to the ones and to the
# normalised input: with 2 values it is 0 up to epsilon terms (|dx|/|dy| < 1e-2 in a third of
# the cases, down to 2e-5), and a correct float32 backend fails the relative dx check on the
# rounding of terms that cancel; with 3 it is small in 1% of cases; with 4, |dx|/|dy| >= 0.07
# in 200 drawn cases.
MIN_TRAINING_VALUES = 4


@st.composite
def kpointwise_refs(draw: Any, max_channels: int = 48) -> dict[str, Any]:
    """A reference kPointwise case: spec, inputs, params, ``dy`` and the float64 answers."""
    spec = draw(kpointwise_specs(max_channels))
    training = draw(st.booleans())
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if training and shape[0] * shape[1] * shape[2] < MIN_TRAINING_VALUES:
        shape = (MIN_TRAINING_VALUES, shape[1], shape[2])
    return reference_kpointwise(spec, training, seed=draw(st.integers(0, 2**31 - 1)), shape=shape)
