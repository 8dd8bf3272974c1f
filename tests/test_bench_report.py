"""``perf.report``: the figures each table, line and plot shows (the other tests feed rows whose
numbers coincide, e.g. params ratio == MACs ratio == 1). Expected values are worked out by hand
from the rows given; plots are captured, not written, except where writing is what is tested."""

from __future__ import annotations

import argparse
import json

import pytest

from gpconv.perf import report


def _model_row(**overrides) -> dict:
    """kEffNet-B0 16ch at 32x32, skip 3 (DESIGN.md: 639,702 trainable, 81,153,588 MACs), with
    a forward speed (123.4 img/s) unlike its train speed (32 images / 0.25 s = 128 img/s);
    ``overrides`` replace or add fields."""
    return {
        "backend": "numpy",
        "model": "kefficientnet-b0",
        "arch": "kefficientnet-b0-16ch",
        "params_trainable": 639_702,
        "macs_per_image": 81_153_588,
        "forward_images_per_s": 123.4,
        "train_step_ms": 250.0,
        "train_images_per_s": 128.0,
        **overrides,
    }


def test_model_table_prints_each_figure_in_its_column() -> None:
    """Columns: trainable params, MMACs/img (81,153,588 MACs = 81.2 million), forward img/s,
    train ms, train img/s: each row's own figure under its own heading."""
    table = report.model_table([_model_row()])
    head, _, line, ran_on = table.splitlines()
    assert head.split() == [
        "backend", "model", "trainable", "MMACs/img", "fwd", "img/s", "train", "ms", "train",
        "img/s",
    ]  # fmt: skip
    assert line.split() == [
        "numpy", "kefficientnet-b0-16ch", "639,702", "81.2", "123.4", "250.0", "128.0"
    ]  # fmt: skip
    assert ran_on == "ran on: numpy cpu"


def test_ratio_line_prints_each_ratio_under_its_own_name() -> None:
    """kEffNet-B0 16ch / EfficientNet-B0 at 32x32, skip 3 (DESIGN.md): params 639,702 /
    4,020,358 = 0.159, MACs 81,153,588 / 403,436,272 = 0.201; a kEffNet forward 1.6x as fast
    prints "forward speed x1.60" (kEffNet over EfficientNet, > 1 is faster), not its inverse."""
    ratio = {
        "backend": "torch",
        "kefficientnet": "kefficientnet-b0-16ch",
        "efficientnet": "efficientnet-b0",
        "params_ratio": 639_702 / 4_020_358,
        "macs_ratio": 81_153_588 / 403_436_272,
        "train_step_ratio": 0.8,
        "forward_speed_ratio": 1.6,
    }
    (line,) = report.ratio_lines([ratio])
    assert "params x0.159, MACs x0.201, train-step time x0.80 (faster)" in line, line
    assert line.endswith("forward speed x1.60"), line


def _pointwise(impl: str, case: str, fastest: bool, default: bool, **overrides) -> dict:
    return {"backend": "numpy", "device": "cpu", "case": case, "layer": "l", "impl": impl,
            "ms": 1.0 if fastest else 2.0, "fastest": fastest, "default": default,
            **overrides}  # fmt: skip


def test_pointwise_table_tags_the_fastest_and_the_default_rows_apart() -> None:
    """When the fastest implementation is not the default, each row carries its own tag."""
    rows = [_pointwise("a", "c1", True, False), _pointwise("b", "c1", False, True)]
    lines = [ln.split() for ln in report.pointwise_table(rows).splitlines()[1:]]
    assert lines == [["a", "1.00", "ms", "fastest"], ["b", "2.00", "ms", "default"]]


def test_pointwise_recommendation_counts_the_cases_not_the_winners() -> None:
    """One implementation fastest on both of two cases: "fastest in 2/2 cases" (the denominator
    is the number of cases timed, not the number of distinct winners)."""
    rows = [
        _pointwise("a", case, fastest, default)
        for case in ("c1", "c2")
        for fastest, default in ((True, True),)
    ] + [_pointwise("b", case, False, False) for case in ("c1", "c2")]
    (line,) = report.pointwise_recommendations(rows)
    assert "numpy grouped pointwise: a (fastest in 2/2 cases; the default already)" in line, line


def test_pointwise_recommendation_is_no_default_already_when_the_default_lost_most() -> None:
    """The default "a" wins 1 of 3 cases, "b" 2: "b" is recommended, and the verdict must not
    claim "the default already" just because the default won somewhere."""
    rows = []
    for case, winner in (("c1", "a"), ("c2", "b"), ("c3", "b")):
        rows += [
            _pointwise("a", case, winner == "a", True),
            _pointwise("b", case, winner == "b", False),
        ]
    (line,) = report.pointwise_recommendations(rows)
    assert "numpy grouped pointwise: b (fastest in 2/3 cases;" in line, line
    assert "the default already" not in line and "the reference keeps a" in line, line


def test_site_table_totals_count_each_site_as_often_as_the_network_has_it() -> None:
    """Header ``(N, H, W, C)  G  x  base  ours``: the site with 4 groups met 3 times per pass
    prints 4 under "G" and 3 under "x", then its times to three decimals. Per train step: a site
    run 3 times at 1.0 ms plus one run once at 2.0 ms is 5.0 ms for "base"; 3 x 0.5 + 2.0 =
    3.5 ms for "ours"; the last line is ours / base = 3.5 / 5.0."""
    rows = [
        {"shape": (2, 8, 8, 16), "groups": 4, "count": 3, "base_ms": 1.0, "ours_ms": 0.5},
        {"shape": (2, 4, 4, 32), "groups": 8, "count": 1, "base_ms": 2.0, "ours_ms": 2.0},
    ]
    lines = report.site_table(rows, ["base", "ours"], "(N, H, W, C)").splitlines()
    assert lines[0].split() == ["(N,", "H,", "W,", "C)", "G", "x", "base", "ours"]
    assert lines[2].split() == ["(2,", "8,", "8,", "16)", "4", "3", "1.000", "ms", "0.500", "ms"]
    assert lines[-2].split() == ["per", "train", "step", "5.0", "ms", "3.5", "ms"], lines[-2]
    assert lines[-1] == "ours / base: 0.700"


@pytest.mark.parametrize("ms, shown", [(999.7, "1,000"), (100.0, "100"), (123.4, "123")])
def test_step_ms_whole_milliseconds_from_100_up(ms: float, shown: str) -> None:
    """From 100 ms up a step is printed in whole milliseconds with a thousands separator: just
    under 1000 ms rounds to "1,000", not to three significant figures' "1e+03"."""
    assert report.step_ms(ms) == shown


def test_benchmark_scripts_json_records_the_clock(tmp_path) -> None:
    """``--clock cpu`` figures are process CPU time, not elapsed time: a results file must say
    which it holds, and how many rounds the medians are of."""
    path = tmp_path / "rows.json"
    args = argparse.Namespace(repeats=3, clock="cpu")
    report.write_rows(str(path), [{"x": 1}], args, threads=1)
    meta = json.loads(path.read_text())["meta"]
    assert (meta["clock"], meta["repeats"], meta["threads"]) == ("cpu", 3, 1)


@pytest.mark.parametrize(
    "time_ratio, shown",
    [
        (0.994, "x0.99 (faster"),
        (0.996, "x1.00 (level"),
        (1.0, "x1.00 (level"),
        (1.004, "x1.00 (level"),
        (1.006, "x1.01 (slower"),
    ],
)
def test_ratio_line_verdict_agrees_with_the_ratio_it_prints(time_ratio: float, shown: str) -> None:
    """The verdict reads the two-decimal ratio beside it: "x1.00 (faster" for 0.996 or
    "x1.00 (slower" for 1.0 would contradict the figure on the same line."""
    ratio = {
        "backend": "torch",
        "kefficientnet": "kefficientnet-b0-16ch",
        "efficientnet": "efficientnet-b0",
        "params_ratio": 0.159,
        "macs_ratio": 0.201,
        "train_step_ratio": time_ratio,
        "forward_speed_ratio": 1.0,
    }
    (line,) = report.ratio_lines([ratio])
    assert f"train-step time {shown})" in line, line


def test_model_table_names_each_backends_own_device() -> None:
    """A GPU run's table says the GPU, not "cpu", for the backend that ran there."""
    rows = [
        _model_row(backend="torch", device="cuda:0 NVIDIA H200"),
        _model_row(backend="tensorflow", device="cpu"),
    ]
    last = report.model_table(rows).splitlines()[-1]
    assert last == "ran on: torch cuda:0 NVIDIA H200, tensorflow cpu", last


def test_recommendation_states_the_margin_to_two_decimals() -> None:
    """A winner 1.2345x as fast as the runner-up reads "1.23x faster than tensorflow"."""
    best = {
        "kefficientnet-b0": {
            "backend": "torch",
            "compiled": False,
            "device": "cpu",
            "train_step_ms": 12.3,
            "runner_up": "tensorflow",
            "speedup_over_runner_up": 1.2345,
        }
    }
    (line,) = report.recommendation_lines(best, {"cpus": 2, "cpu": "x"})
    assert line.endswith(": 12.3 ms/step, 1.23x faster than tensorflow"), line


def test_pointwise_table_heads_each_backend_with_its_device() -> None:
    row = _pointwise("matmul [nchw]", "c", True, True, backend="torch", device="cuda:0 NVIDIA H200")
    head = report.pointwise_table([row]).splitlines()[0]
    assert head == "torch on cuda:0 NVIDIA H200: c, forward + backward", head


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the plot functions would write (not written; closed after the test)."""
    plt = pytest.importorskip("matplotlib.pyplot")
    figs: list = []
    monkeypatch.setattr(report, "_save", lambda plt, fig, path: figs.append(fig))
    yield figs
    for fig in figs:
        plt.close(fig)


def test_model_plot_shows_train_steps_of_every_setup_and_forward_speeds_of_eager_ones(
    saved,
) -> None:
    """Forward passes are timed eagerly only: the forward panel has one bar group per eager
    setup (torch), the train-step panel one per setup (torch, torch --compile)."""
    rows = [
        _model_row(backend="torch", model=m, arch=m, compiled=c, train_step_ms=20.0 if c else 40.0)
        for c in (False, True)
        for m in ("efficientnet-b0", "kefficientnet-b0")
    ]
    report.plot_models("unused.png", rows, "title")
    (fig,) = saved
    train, forward = fig.axes[:2]
    assert [t.get_text() for t in train.get_xticklabels()] == ["torch", "torch --compile"]
    assert [t.get_text() for t in forward.get_xticklabels()] == ["torch"]
    assert sorted(p.get_height() for p in train.patches) == [20.0, 20.0, 40.0, 40.0]


def test_pointwise_plot_is_on_a_log_scale(saved) -> None:
    """Implementations differ by 20x and more (DESIGN.md §5: 242 ms vs 11 ms): the panel's
    y-axis is logarithmic, as its label says."""
    rows = [_pointwise("a", "c", True, True, ms=11.0), _pointwise("b", "c", False, False, ms=242.0)]
    report.plot_pointwise("unused.png", rows, "title")
    (fig,) = saved
    assert fig.axes[0].get_yscale() == "log" and "(log)" in fig.axes[0].get_ylabel()


def test_a_written_plot_leaves_no_figure_open(tmp_path) -> None:
    """``_save`` frees the figure: a bench run writing plots must not accumulate open figures
    (matplotlib warns past 20 and keeps their memory)."""
    plt = pytest.importorskip("matplotlib.pyplot")
    before = set(plt.get_fignums())
    report.plot_pointwise(str(tmp_path / "pw.png"), [_pointwise("a", "c", True, True)], "title")
    assert (tmp_path / "pw.png").read_bytes()[:4] == b"\x89PNG"
    assert set(plt.get_fignums()) == before
