"""``gpconv.perf.timing``, under every benchmark: round-robin calls, the median and the best of
each function's rounds, units, defaults, the two clocks and BLAS thread limits. Nothing is timed
for real beyond a 50 ms sleep: the round-robin tests inject a fake clock."""

from __future__ import annotations

import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpconv.perf import timing


def _ticking(durations: list[float]):
    """A fake clock under which the n-th timed call lasts ``durations[n]`` seconds."""
    ticks = iter([t for d in durations for t in (0.0, d)])
    return lambda: next(ticks)


def test_as_dict_reports_every_figure_in_milliseconds() -> None:
    """A Timing holds seconds; its JSON form holds milliseconds, each figure its own: median
    0.5 s -> 500 ms, best 0.25 s -> 250 ms, samples 0.25/0.5/2 s -> 250/500/2000 ms."""
    d = timing.Timing(0.5, 0.25, (0.25, 0.5, 2.0)).as_dict()
    assert d == {"median_ms": 500.0, "best_ms": 250.0, "samples_ms": [250.0, 500.0, 2000.0]}


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=9))
def test_median_is_the_middle_round_or_the_mean_of_the_middle_two(ms: list[int]) -> None:
    """The median of any number of rounds: the middle one for an odd count, for an even count the
    mean of the two middle ones (rounds of 1, 2, 3 and 4 s give 2.5 s), not the lower or the upper
    one; ``best`` is the smallest round and ``samples`` keeps the call order."""
    s = sorted(ms)
    n = len(s)
    expected = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    (t,) = timing.time_round_robin(
        {"f": lambda: None}, steps=n, warmup=0, clock=_ticking([float(m) for m in ms])
    ).values()
    assert t.median == pytest.approx(expected) and t.best == min(ms)
    assert t.samples == tuple(float(m) for m in ms)


def test_defaults_are_one_warmup_call_and_five_timed_rounds() -> None:
    """The signature's defaults (``steps=5, warmup=1``): six calls, five of them timed."""
    calls = []
    ticks = iter(range(100))
    (t,) = timing.time_round_robin(
        {"f": lambda: calls.append(1)}, clock=lambda: float(next(ticks))
    ).values()
    assert len(calls) == 6 and len(t.samples) == 5


def test_the_clocks_are_elapsed_time_and_this_process_cpu_time() -> None:
    """During a 50 ms sleep the wall clock advances by at least ~50 ms, while the CPU clock (this
    process's CPU time, blind to waiting) advances by far less."""
    wall, cpu = timing.CLOCKS["wall"], timing.CLOCKS["cpu"]
    w0, c0 = wall(), cpu()
    time.sleep(0.05)
    dw, dc = wall() - w0, cpu() - c0
    assert dw >= 0.045, dw
    assert dc < 0.03, dc


def test_round_robin_interleaves_and_times_each_call_with_the_clock():
    calls, now = [], [0.0]
    cost = {"a": 1.0, "b": 10.0}

    def work(name: str):
        def call() -> None:
            calls.append(name)
            now[0] += cost[name] + len(calls) / 100  # each call a little slower: drift

        return call

    t = timing.time_round_robin(
        {"a": work("a"), "b": work("b")}, steps=3, warmup=1, clock=lambda: now[0]
    )
    # warm-up of each, then one call of each per round: a slow minute hits both alike
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert t["a"].samples == pytest.approx((1.03, 1.05, 1.07))
    assert t["b"].samples == pytest.approx((10.04, 10.06, 10.08))
    assert t["a"].median == pytest.approx(1.05) and t["b"].best == pytest.approx(10.04)
    with pytest.raises(ValueError, match="at least one function"):
        timing.time_round_robin({})
    with pytest.raises(ValueError, match="steps >= 1"):
        timing.time_round_robin({"a": work("a")}, steps=0)
    # range() would say "'float' object cannot be interpreted as an integer", naming nothing
    with pytest.raises(TypeError, match="steps to be an int, received float 2.5"):
        timing.time_round_robin({"a": work("a")}, steps=2.5)
    with pytest.raises(ValueError, match="warmup >= 0, received warmup=-1"):
        timing.time_round_robin({"a": work("a")}, warmup=-1)  # range(-1) warmed up nothing


def test_round_robin_reports_the_median_and_the_best_of_unordered_skewed_samples():
    """Evenly rising samples cannot tell a median from a mean, or the best from the first."""
    ticks = iter([0, 5, 5, 6, 6, 7, 7, 17, 17, 19])  # calls of 5, 1, 1, 10 and 2 s
    (t,) = timing.time_round_robin(
        {"f": lambda: None}, steps=5, warmup=0, clock=lambda: next(ticks)
    ).values()
    assert (t.median, t.best, t.samples) == (2, 1, (5, 1, 1, 10, 2))


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record the calls to threadpoolctl's limit instead of changing this process's BLAS."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen: list = []
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda n: seen.append(n))
    return seen


def test_zero_blas_threads_keeps_the_default_and_touches_nothing(limits) -> None:
    assert timing.limit_blas_threads(0) == "BLAS default threads"
    assert limits == []


@pytest.mark.parametrize("threads", [1, 2])
def test_blas_threads_are_limited_to_the_number_asked_for(limits, threads: int) -> None:
    """``--threads N`` limits BLAS to N threads (N=2 too, not always 1), and says so."""
    assert timing.limit_blas_threads(threads) == f"{threads} BLAS thread(s)"
    assert limits == [threads]


@pytest.mark.parametrize(
    "threads, exc, message",
    [
        (-1, ValueError, "Expected threads >= 0, received threads=-1"),
        (2.5, TypeError, "threads to be an int, received float 2.5"),
    ],
)
def test_bad_blas_thread_counts_are_refused_naming_the_argument(
    limits, threads, exc, message
) -> None:
    """Needs fix-1. ``limit_blas_threads(-1)`` reported "-1 BLAS thread(s)" while threadpoolctl
    silently left the default in place (a wrong line in every results file); a float reached
    threadpoolctl's "limits must either be an int..." naming no argument of ours."""
    with pytest.raises(exc, match=message):
        timing.limit_blas_threads(threads)
    assert limits == []


def test_without_threadpoolctl_the_report_says_the_threads_were_not_limited(monkeypatch) -> None:
    """threadpoolctl is optional: without it nothing is limited, and the description (printed
    and written to JSON) must say so rather than claim "2 BLAS thread(s)"."""
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    assert timing.limit_blas_threads(2) == "BLAS default threads (threadpoolctl not installed)"
