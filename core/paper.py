"""The paper's published parameter counts (Schwarz Schuler et al., 2021), as data, next to the
counts computed from ``core.arch``: the check behind ``gpconv summary --paper``."""

from __future__ import annotations

from dataclasses import dataclass

from .arch import Architecture, efficientnet, kefficientnet


@dataclass(frozen=True)
class PaperRow:
    model: str
    classes: int
    trainable: int
    non_trainable: int | None  # published for 10 classes only

    def architecture(self) -> Architecture:
        if self.model == "EfficientNet-B0":
            return efficientnet("b0", self.classes)
        return kefficientnet("b0", self.classes, int(self.model.split()[1].removesuffix("ch")))


PUBLISHED: tuple[PaperRow, ...] = (
    PaperRow("EfficientNet-B0", 10, 4_020_358, 42_016),
    PaperRow("kEffNet-B0 16ch", 10, 639_702, 45_632),
    PaperRow("kEffNet-B0 32ch", 10, 1_059_202, 45_600),
    PaperRow("EfficientNet-B0", 100, 4_135_648, None),
    PaperRow("kEffNet-B0 16ch", 100, 754_992, None),
    PaperRow("kEffNet-B0 32ch", 100, 1_174_492, None),
)


def paper_rows() -> list[dict]:
    """One dict per published row: the published and the computed counts, and whether they agree."""
    rows = []
    for row in PUBLISHED:
        trainable, non_trainable = row.architecture().param_count()
        match = trainable == row.trainable and row.non_trainable in (None, non_trainable)
        rows.append(
            {
                "model": row.model,
                "classes": row.classes,
                "paper_trainable": row.trainable,
                "computed_trainable": trainable,
                "paper_non_trainable": row.non_trainable,
                "computed_non_trainable": non_trainable,
                "match": match,
            }
        )
    return rows


def paper_table() -> str:
    """The rows of ``paper_rows`` as a Markdown table (embedded in docs/method.md)."""
    lines = [
        "| model | classes | trainable (paper) | trainable (computed) | non-trainable (paper) "
        "| non-trainable (computed) | equal |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in paper_rows():
        paper_nt = f"{r['paper_non_trainable']:,}" if r["paper_non_trainable"] is not None else "—"
        lines.append(
            f"| {r['model']} | {r['classes']} | {r['paper_trainable']:,} "
            f"| {r['computed_trainable']:,} "
            f"| {paper_nt} | {r['computed_non_trainable']:,} | {'yes' if r['match'] else 'NO'} |"
        )
    return "\n".join(lines)
