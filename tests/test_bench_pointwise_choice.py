"""``perf.pointwise``: which layers ``gpconv bench --op pointwise`` times, what each row carries,
and which row it calls fastest. Nothing is timed: implementations and timer are stand-ins."""

from __future__ import annotations

from inspect import getclosurevars

import numpy as np
import pytest

from gpconv.core.arch import by_name
from gpconv.perf import pointwise, timing

CASE = pointwise.Case("block6a_project", 672, 192, 12, 2, 4)


def _fake_timer(stats: dict[str, tuple[float, float]]):
    """``time_round_robin``'s stand-in: implementation ``k`` has median ``stats[k][0]`` and best
    round ``stats[k][1]`` seconds."""
    return lambda fns, steps, warmup: {k: timing.Timing(*stats[k], stats[k]) for k in fns}


def _fake_numpy(monkeypatch, stats: dict[str, tuple[float, float]], default: str) -> None:
    """numpy's implementations replaced by no-ops named as ``stats``, timed by ``_fake_timer``."""
    impls = {name: (lambda: None) for name in stats}
    monkeypatch.setitem(pointwise.IMPLS_BY_BACKEND, "numpy", lambda case: (impls, default))
    monkeypatch.setattr(pointwise, "time_round_robin", _fake_timer(stats))


def test_the_fastest_is_a_grouped_implementation_even_when_the_ungrouped_conv_is_faster(
    monkeypatch,
) -> None:
    """The ungrouped conv (G=1) is EfficientNet's layer, timed for comparison: it computes a
    different function, so it is no implementation to choose. On a small layer it can be the
    quickest (the CPU numbers of DESIGN.md's TF note show grouped convs far slower than dense);
    "fastest" must still mark the quickest *grouped* implementation, which the recommendation
    then names."""
    times = {
        "slow grouped": (3.0, 3.0),
        "quick grouped": (2.0, 2.0),
        pointwise.UNGROUPED: (1.0, 1.0),
    }
    _fake_numpy(monkeypatch, times, "slow grouped")
    rows = pointwise.bench_pointwise("numpy", [CASE], steps=1, warmup=0)
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
    _fake_numpy(monkeypatch, stats, "steady")
    rows = pointwise.bench_pointwise("numpy", [pointwise.Case("l", 32, 64, 2, 4, 2)], 1, 0)
    (fastest,) = [r for r in rows if r["fastest"]]
    assert fastest["impl"] == "steady" and fastest["ms"] == min(r["ms"] for r in rows[:2])


def test_one_case_asked_for_is_one_case() -> None:
    """``count`` is how many layer shapes are timed: 1 gives the single costliest layer, not
    that layer plus the one with the most groups."""
    assert len(pointwise.kefficientnet_cases(32, 3, batch=2, count=1)) == 1


def test_a_case_reads_input_to_output_channels() -> None:
    """``(batch, hw, hw, cin) -> (batch, hw, hw, cout)``: 672 channels in, 192 out, 12 groups,
    on a 2x2 map, batch 4."""
    assert str(CASE) == "672->192 G=12 2x2 (batch 4, block6a_project)"


def test_rows_carry_the_case_shape_field_by_field(monkeypatch) -> None:
    """Each row names its case in full (``str(case)``, what the table groups by) and repeats its
    shape: cin 672, cout 192, groups 12, hw 2, batch 4, layer block6a_project; ``ms`` is the
    median in milliseconds; the numpy implementations run on the CPU."""
    _fake_numpy(monkeypatch, {"one": (1e-3, 1e-3), pointwise.UNGROUPED: (2e-3, 2e-3)}, "one")
    rows = pointwise.bench_pointwise("numpy", [CASE], steps=1, warmup=0)
    assert len(rows) == 2
    for row in rows:
        assert row["case"] == "672->192 G=12 2x2 (batch 4, block6a_project)"
        assert (row["layer"], row["cin"], row["cout"], row["groups"], row["hw"], row["batch"]) == (
            "block6a_project", 672, 192, 12, 2, 4,
        )  # fmt: skip
        assert row["backend"] == "numpy" and row["device"] == "cpu"
    assert [r["ms"] for r in rows] == pytest.approx([1.0, 2.0])


def test_torch_rows_are_timed_and_labelled_on_the_device_asked_for(monkeypatch) -> None:
    """``bench_pointwise("torch", ..., device="cpu")`` builds torch's implementations on that
    device and labels the rows with it (not the default device, CUDA when present)."""
    built, labelled = [], []

    def impls(case, device=None):
        built.append(device)
        return {"conv [nchw]": lambda: None, pointwise.UNGROUPED: lambda: None}, "conv [nchw]"

    def label(backend, device=None):
        labelled.append((backend, device))
        return f"label of {device}"

    monkeypatch.setattr(pointwise, "torch_impls", impls)
    monkeypatch.setitem(pointwise.IMPLS_BY_BACKEND, "torch", impls)
    monkeypatch.setattr(pointwise, "device_label", label)
    stats = {"conv [nchw]": (1.0, 1.0), pointwise.UNGROUPED: (1.0, 1.0)}
    monkeypatch.setattr(pointwise, "time_round_robin", _fake_timer(stats))
    rows = pointwise.bench_pointwise("torch", [CASE], steps=1, warmup=0, device="cpu")
    assert built == ["cpu"] and labelled == [("torch", "cpu")]
    assert {r["device"] for r in rows} == {"label of cpu"}


def test_numpy_runs_on_the_cpu() -> None:
    assert pointwise.device_label("numpy") == "cpu"


@pytest.fixture
def torch_on_meta(monkeypatch: pytest.MonkeyPatch):
    """torch_impls on a non-CPU device without a GPU: the "meta" device (shapes, no data), and
    every GroupedPointwise2d built recorded as (groups, impl)."""
    torch = pytest.importorskip("torch")
    from gpconv.backends.torch import pointwise as torch_pointwise
    from gpconv.train.frameworks import torch_fw

    built = []

    class Recorded(torch_pointwise.GroupedPointwise2d):
        def __init__(self, cin, cout, groups, *args, **kwargs):
            built.append((groups, kwargs.get("impl")))
            super().__init__(cin, cout, groups, *args, **kwargs)

    monkeypatch.setattr(torch_pointwise, "GroupedPointwise2d", Recorded)
    monkeypatch.setattr(torch_fw, "default_device", lambda dist, device=None: torch.device("meta"))
    return built


def test_torch_off_the_cpu_marks_the_kefficientnet_default_and_times_a_real_ungrouped_conv(
    torch_on_meta,
) -> None:
    """Off the CPU, kEffNet's torch model runs its grouped 1x1 as a batched matmul on NCHW
    tensors (``auto_impl``, ``default_channels_last(grouped=True)``; docs/gpu.md): that row is the
    one marked default. The UNGROUPED row is EfficientNet's layer: groups=1, while every other
    implementation (both formats each) has the case's 12 groups."""
    from gpconv.backends.torch.pointwise import IMPLS

    impls, default = pointwise.torch_impls(CASE)
    assert default == "matmul [nchw]" and default in impls
    concrete = [i for i in IMPLS if i != "auto"]
    assert sorted(g for g, _ in torch_on_meta) == [1] + [12] * (2 * len(concrete))
    assert torch_on_meta[-1] == (1, "matmul")  # UNGROUPED, built last, with the default impl


@pytest.mark.slow  # imports TensorFlow (seconds)
def test_tensorflow_marks_the_implementation_auto_resolves_to(monkeypatch) -> None:
    """The default row is what ``impl="auto"`` runs on this machine (``resolve_impl``), whatever
    that is: here made "einsum", which no constant in the bench could guess."""
    pytest.importorskip("tensorflow")
    from gpconv.backends.tensorflow import grouped

    monkeypatch.setattr(grouped, "resolve_impl", lambda impl: "einsum" if impl == "auto" else impl)
    impls, default = pointwise.tensorflow_impls(pointwise.Case("l", 32, 64, 2, 4, 2))
    assert default == "einsum" and set(grouped.IMPLEMENTATIONS) | {pointwise.UNGROUPED} == set(
        impls
    )


def test_numpy_dense_block_diagonal_is_the_same_product_as_the_grouped_layer() -> None:
    """The numpy "dense block-diagonal" candidate must time the same function as the grouped
    one: x @ dense equals the grouped product computed directly (input channel block g times
    kernel block g gives output block g, Keras' layout); its weight-gradient mask keeps exactly
    the G blocks of ci x co entries; the ungrouped conv has a full cin x cout kernel."""
    case = pointwise.Case("l", 8, 12, 2, 2, 3)  # G=2: ci=4, co=6
    impls, default = pointwise.numpy_impls(case)
    assert default == "batched-matmul (core)"
    grouped = getclosurevars(impls["batched-matmul (core)"]).nonlocals
    block = getclosurevars(impls["dense block-diagonal"]).nonlocals
    x, kernel = grouped["x"], grouped["kernel"]
    xm = x.reshape(-1, 8).astype(np.float64)
    direct = np.einsum("ngi,igo->ngo", xm.reshape(-1, 2, 4), kernel[0, 0].reshape(4, 2, 6))
    np.testing.assert_allclose(xm @ block["dense"], direct.reshape(-1, 12), rtol=1e-6, atol=1e-6)
    assert block["mask"].sum() == 2 * 4 * 6
    full = getclosurevars(impls[pointwise.UNGROUPED]).nonlocals["full"]
    assert full.shape == (1, 1, 8, 12)


def test_enough_cases_asked_for_give_every_distinct_grouped_shape() -> None:
    """Asked for more cases than kEffNet-B0 has grouped spatial shapes, every distinct
    (cin, cout, groups, hw) appears once: shapes that differ only in map size are different
    cases (read here from core.arch directly)."""
    arch = by_name("kefficientnet-b0", 10, 16, 3)
    specs = arch.pointwise()
    expected = {
        (specs[r.name].cin, specs[r.name].cout, r.groups, r.output_shape[0])
        for r in arch.layers(32)
        if r.name in specs and r.groups > 1 and r.output_shape[0] > 1
    }
    cases = pointwise.kefficientnet_cases(32, 3, batch=2, count=len(expected) + 5)
    assert sorted((c.cin, c.cout, c.groups, c.hw) for c in cases) == sorted(expected)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"count": 0}, ValueError, r"Expected count >= 1, received count=0"),
        ({"count": -2}, ValueError, r"Expected count >= 1, received count=-2"),
        ({"count": 2.0}, TypeError, r"count to be an int, received float 2.0"),
        ({"batch": 0}, ValueError, r"Expected batch >= 1, received batch=0"),
    ],
)
def test_bad_case_counts_and_batches_are_refused_naming_the_argument(kwargs, exc, message) -> None:
    """Needs fix-2. ``count=0`` (or -2) silently gave one case and ``batch=0`` cases of empty
    batches (nothing timed, a figure reported); both now raise naming the argument."""
    with pytest.raises(exc, match=message):
        pointwise.kefficientnet_cases(32, 3, **kwargs)
