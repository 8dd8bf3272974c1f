"""``perf.pointwise``: which layers ``gpconv bench --op pointwise`` times, and which row it calls
fastest (found by mutation testing)."""

from __future__ import annotations

from gpconv.perf import pointwise, timing


def test_the_fastest_is_a_grouped_implementation_even_when_the_ungrouped_conv_is_faster(
    monkeypatch,
) -> None:
    """The ungrouped conv (G=1) is EfficientNet's layer, timed for comparison: it computes a
    different function, so it is no implementation to choose. On a small layer it can be the
    quickest (the CPU numbers of DESIGN.md's TF note show grouped convs far slower than dense);
    "fastest" must still mark the quickest *grouped* implementation, which the recommendation
    then names."""
    times = {"slow grouped": 3.0, "quick grouped": 2.0, pointwise.UNGROUPED: 1.0}
    impls = {name: (lambda: None) for name in times}
    monkeypatch.setitem(pointwise.IMPLS_BY_BACKEND, "numpy", lambda case: (impls, "slow grouped"))
    monkeypatch.setattr(
        pointwise,
        "time_round_robin",
        lambda fns, steps, warmup: {k: timing.Timing(times[k], times[k], (times[k],)) for k in fns},
    )
    case = pointwise.Case("block6a_project", 672, 192, 12, 2, 2)
    rows = pointwise.bench_pointwise("numpy", [case], steps=1, warmup=0)
    assert [r["impl"] for r in rows if r["fastest"]] == ["quick grouped"]
    assert [r["impl"] for r in rows if r["default"]] == ["slow grouped"]


def test_cases_are_layers_on_spatial_maps_only() -> None:
    """The squeeze-excite convs run on the pooled 1x1 map (a (batch, C) matrix product, cost
    negligible next to the spatial layers): every case offered, however many are asked for, is
    a grouped layer whose output map is wider than 1x1."""
    cases = pointwise.kefficientnet_cases(32, 3, batch=2, count=100)
    assert cases and all(c.hw > 1 and c.groups > 1 for c in cases), [str(c) for c in cases]


def test_fastest_is_the_row_with_the_lowest_printed_median(monkeypatch) -> None:
    """The table prints each implementation's median (``ms``) and tags one "fastest": the tag
    must go to the lowest median shown (1.0 ms), not to the one whose single best round was
    quickest (0.5 ms) while its median was 2.0 ms."""
    stats = {
        "steady": (1.0, 1.0),
        "erratic": (2.0, 0.5),
        pointwise.UNGROUPED: (5.0, 5.0),
    }
    impls = {name: (lambda: None) for name in stats}
    monkeypatch.setitem(pointwise.IMPLS_BY_BACKEND, "numpy", lambda case: (impls, "steady"))
    monkeypatch.setattr(
        pointwise,
        "time_round_robin",
        lambda fns, steps, warmup: {k: timing.Timing(*stats[k], stats[k]) for k in fns},
    )
    rows = pointwise.bench_pointwise("numpy", [pointwise.Case("l", 32, 64, 2, 4, 2)], 1, 0)
    (fastest,) = [r for r in rows if r["fastest"]]
    assert fastest["impl"] == "steady" and fastest["ms"] == min(r["ms"] for r in rows[:2])


def test_one_case_asked_for_is_one_case() -> None:
    """``count`` is how many layer shapes are timed: 1 gives the single costliest layer, not
    that layer plus the one with the most groups."""
    assert len(pointwise.kefficientnet_cases(32, 3, batch=2, count=1)) == 1
