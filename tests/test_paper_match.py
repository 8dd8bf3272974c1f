"""``core.paper``: when ``gpconv summary --paper`` calls a row equal (found by mutation testing:
the published rows all match, so a check that ignored a column went unnoticed)."""

from __future__ import annotations

import pytest

from gpconv.core import paper
from gpconv.core.paper import PaperRow


@pytest.mark.parametrize(
    "row, match",
    [
        (PaperRow("EfficientNet-B0", 10, 4_020_358, 42_016), True),  # DESIGN.md's row
        (PaperRow("EfficientNet-B0", 10, 4_020_358, 42_017), False),  # non-trainable off by 1
        (PaperRow("EfficientNet-B0", 10, 4_020_359, 42_016), False),  # trainable off by 1
        (PaperRow("EfficientNet-B0", 100, 4_135_648, None), True),  # not published: not compared
    ],
    ids=["equal", "non-trainable-differs", "trainable-differs", "non-trainable-unpublished"],
)
def test_a_row_matches_only_when_every_published_count_does(monkeypatch, row, match) -> None:
    """Both counts the paper publishes (trainable, and non-trainable for 10 classes) must equal
    the computed ones for "yes" (and exit 0): a published non-trainable count that differs is a
    mismatch like a trainable one; where the paper gives none there is nothing to compare."""
    monkeypatch.setattr(paper, "PUBLISHED", (row,))
    (result,) = paper.paper_rows()
    assert result["match"] is match
    assert ("| yes |" in paper.paper_table()) is match


def test_the_table_shows_the_computed_count_next_to_a_differing_published_one(monkeypatch) -> None:
    """A mismatching row must show both numbers, or "NO" could not be checked by eye: with a
    published 4,000,000 against EfficientNet-B0's 4,020,358 trainable parameters at 10 classes
    (DESIGN.md), the row reads 4,000,000 | 4,020,358."""
    monkeypatch.setattr(paper, "PUBLISHED", (PaperRow("EfficientNet-B0", 10, 4_000_000, 42_016),))
    row = paper.paper_table().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["EfficientNet-B0", "10", "4,000,000", "4,020,358", "42,016", "42,016", "NO"]
