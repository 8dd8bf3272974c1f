"""``Architecture.summary``: a per-layer table like Keras ``model.summary()``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .arch import Architecture


def format_summary(arch: Architecture, input_size: int) -> str:
    """Rows of (layer, op, output shape, groups, params, MACs), then totals."""
    rows = arch.layers(input_size)
    header = ("Layer", "Op", "Output shape", "Groups", "Params", "MACs")
    body = [
        (r.name, r.op, str(r.output_shape), str(r.groups), f"{r.params:,}", f"{r.macs:,}")
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    align = ["<", "<", "<", ">", ">", ">"]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    rule = "-" * len(line(header))
    trainable, non_trainable = arch.param_count()
    total_macs = sum(r.macs for r in rows)
    return "\n".join(
        [
            f"{arch.name} ({arch.num_classes} classes, input {input_size}x{input_size}x3, "
            f"skip_stride_cnt={arch.skip_stride_cnt})",
            rule,
            line(header),
            rule,
            *map(line, body),
            rule,
            f"Total params: {trainable + non_trainable:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {non_trainable:,}",
            f"MACs (conv + dense): {total_macs:,}",
        ]
    )
