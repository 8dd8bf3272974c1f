"""The depthwise-conv weight gradient in column slabs: the plan both CPU backends follow.

oneDNN, which runs convolutions for PyTorch and TensorFlow on x86 CPUs, has a fast depthwise
weight-gradient kernel only for filters at most ``FAST_WIDTH`` columns wide. A 5×5 filter takes a
generic path 5–10× slower than its own forward pass (measured, batch 32, 1 thread: 672 channels
16×16, 55 ms against 6 ms; a 5×3 filter on the same data: 10 ms). In EfficientNet and kEffNet those
5×5 weight gradients are the largest single cost of a CPU train step.

The weight gradient of a ``kh × kw`` depthwise filter, stride 1, on the zero-padded input ``xp``
``(N, Hp, Wp, C)`` with output gradient ``dy`` ``(N, Ho, Wo, C)``::

    dW[i, j, c] = sum_{n, h, w} xp[n, h + i, w + j, c] * dy[n, h, w, c]

splits along ``j``: the columns ``j0 <= j < j1`` of ``dW`` are the weight gradient of a
``kh × (j1 - j0)`` filter on the columns ``j0 .. j0 + Wo - 1 + (j1 - j0) - 1`` of ``xp``. So
``dW`` is the concatenation, along the filter's width, of narrow weight gradients that take the
fast path. Same arithmetic, same result up to float rounding order.

Only stride 1 is split: with stride 2 the generic path is already close (measured 21 ms vs
16 ms for 672 channels, and slower for 240 channels at 32×32 in PyTorch).
"""

from __future__ import annotations

FAST_WIDTH = 3


def column_slabs(kernel_width: int, max_width: int = FAST_WIDTH) -> list[tuple[int, int]]:
    """``[(j0, j1), ...]`` tiling ``range(kernel_width)`` in slabs of at most ``max_width``.

    >>> column_slabs(5), column_slabs(3), column_slabs(7)
    ([(0, 3), (3, 5)], [(0, 3)], [(0, 3), (3, 6), (6, 7)])
    """
    if kernel_width < 1 or max_width < 1:
        raise ValueError(
            f"Expected kernel_width >= 1 and max_width >= 1, received "
            f"kernel_width={kernel_width}, max_width={max_width}"
        )
    return [(j, min(j + max_width, kernel_width)) for j in range(0, kernel_width, max_width)]


def uses_slabs(kernel_width: int, stride: int) -> bool:
    """Whether the backends compute this depthwise conv's weight gradient in slabs."""
    return stride == 1 and kernel_width > FAST_WIDTH


def slab_input_columns(j0: int, j1: int, out_width: int) -> tuple[int, int]:
    """The half-open column range of the padded input that filter columns ``[j0, j1)`` see
    when producing ``out_width`` output columns at stride 1."""
    return j0, j0 + out_width - 1 + (j1 - j0)
