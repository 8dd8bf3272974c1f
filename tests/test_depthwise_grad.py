"""The column-slab plan for depthwise weight gradients (backends/depthwise_grad.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpconv.backends.depthwise_grad import column_slabs, slab_input_columns, uses_slabs
from gpconv.core.ops import DepthwiseConv2D


@given(kernel_width=st.integers(1, 12), max_width=st.integers(1, 5))
def test_column_slabs_tile_the_kernel_width(kernel_width, max_width):
    slabs = column_slabs(kernel_width, max_width)
    assert slabs[0][0] == 0 and slabs[-1][1] == kernel_width
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:])), slabs
    assert all(1 <= j1 - j0 <= max_width for j0, j1 in slabs), slabs


def test_only_wide_stride_one_filters_are_split():
    assert uses_slabs(5, 1) and uses_slabs(7, 1)
    assert not uses_slabs(3, 1) and not uses_slabs(5, 2)


@pytest.mark.parametrize("bad", [(0, 3), (5, 0)])
def test_column_slabs_rejects_empty_widths(bad):
    with pytest.raises(ValueError, match="kernel_width"):
        column_slabs(*bad)


@given(k=st.sampled_from([3, 5, 7]), size=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_slab_weight_gradients_concatenate_to_the_full_one(k, size, seed):
    """The identity the backends rely on, against core's float64 depthwise conv: the gradient
    of filter columns [j0, j1) is the weight gradient of a "valid" k x (j1 - j0) filter on the
    padded input's columns ``slab_input_columns(j0, j1, Wo)`` (computed here by its definition,
    ``sum_{n,h,w} cols[n, h+i, w+j, c] * dy[n, h, w, c]``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, size, size + 1, 3))
    kernel = rng.standard_normal((k, k, 3, 1))
    y, cache = DepthwiseConv2D.forward(x, kernel, 1, "same")
    dy = rng.standard_normal(y.shape)
    full = DepthwiseConv2D.backward(cache, dy)[1]["kernel"]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = y.shape[1:3]
    parts = []
    for j0, j1 in column_slabs(k):
        lo, hi = slab_input_columns(j0, j1, wo)
        cols = xp[:, :, lo:hi]  # what a (k, j1 - j0) filter sees, as a "valid" conv
        assert cols.shape[2] == wo + (j1 - j0) - 1
        parts.append(
            np.stack(
                [
                    np.stack(
                        [np.einsum("nhwc,nhwc->c", cols[:, i : i + ho, j : j + wo], dy)
                         for j in range(j1 - j0)]
                    )
                    for i in range(k)
                ]
            )[..., None]
        )  # fmt: skip
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-12, atol=1e-12)
