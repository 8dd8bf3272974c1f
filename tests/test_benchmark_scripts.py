"""The CPU scripts under benchmarks/ still run against the current API.

They are not imported by anything else, so an API change can break one unnoticed until someone
needs its figures (the CuPy script once timed no network until a GPU run noticed). Each runs
here at its smallest setting, in a subprocess as a user runs it, and must exit 0 and write JSON.
The timings themselves are not checked: they belong in benchmark runs, not tests. The two
whole-network train-step scripts (about a minute each at their smallest) are left to `gpconv
bench`'s tests, which cover the same timing code."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpconv.perf.machine import cpu_count

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

SCRIPTS = [
    ("bench_numpy_pointwise.py", ["--repeats", "1", "--threads", "1"], None),
    ("bench_numpy_network.py", ["--repeats", "1", "--batch", "2", "--threads", "1"], None),
    ("bench_torch_pointwise.py", ["--repeats", "1", "--threads", "1"], "torch"),
    ("bench_torch_shuffle.py", ["--repeats", "1", "--threads", "1"], "torch"),
    ("bench_tf_shuffle.py", ["--repeats", "1", "--threads", "1"], "tensorflow"),
    (
        "bench_tf_pointwise.py",
        ["--batch", "2", "--size", "8", "--reps", "1", "--keras-reps", "0"],
        "tensorflow",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "framework"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_benchmark_script_runs_and_writes_json(script, args, framework, tmp_path):
    if framework is not None:
        pytest.importorskip(framework)
    out = tmp_path / "figures.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{script} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    figures = json.loads(out.read_text())
    assert figures, f"{script} wrote empty JSON"


BAD_OPTIONS = {  # id: (option, value, message after "argument OPTION: ")
    "threads-more-than-cpus": (
        "--threads",
        str(cpu_count() + 1),
        f"Expected --threads <= {cpu_count()} (the CPUs this process may use)",
    ),
    "threads--1": ("--threads", "-1", "Expected --threads >= 0 (0: the default), received -1"),
    "threads-x": ("--threads", "x", "Expected --threads an integer, received 'x'"),
    "repeats-0": ("--repeats", "0", "Expected --repeats >= 1, received 0"),
    "repeats-2.5": ("--repeats", "2.5", "Expected --repeats an integer, received '2.5'"),
}


@pytest.mark.parametrize("script", ["bench_numpy_pointwise.py", "bench_numpy_network.py"])
@pytest.mark.parametrize("bad", list(BAD_OPTIONS))
def test_bad_threads_or_repeats_are_usage_errors(script, bad):
    """``--threads`` took any integer: ``bench_torch_pointwise.py --threads 64`` on 2 CPUs ran
    23.6 s instead of 11.8 s. It is now checked as `gpconv train/bench --threads` is (exit 2
    before anything is timed). ``--repeats 0`` ran the warm-up, then failed naming perf.timing's
    ``steps``. The two numpy scripts stand for the others (their imports are cheap): one takes
    ``add_benchmark_options``, one ``add_threads_option`` directly."""
    option, value, expected = BAD_OPTIONS[bad]
    args = {"--threads": "0", "--repeats": "1", option: value}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *(a for kv in args.items() for a in kv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"argument {option}: {expected}" in result.stderr


def test_every_benchmark_script_takes_the_checked_threads_option():
    """No script under benchmarks/ defines ``--threads`` itself: each takes the checked one
    (``gpconv.cli.main.add_threads_option``, also through ``add_benchmark_options``)."""
    scripts = sorted(BENCHMARKS.rglob("*.py"))
    assert any("add_threads_option(" in p.read_text(encoding="utf-8") for p in scripts)
    own = [p.name for p in scripts if '"--threads"' in p.read_text(encoding="utf-8")]
    assert own == []


def test_every_benchmark_count_option_is_checked():
    """``--repeats``, ``--batch``, ``--steps`` and ``--warmup`` of every script under benchmarks/
    parse through ``gpconv.cli.main.int_at_least`` (a usage error naming the option), never a
    bare ``type=int`` that lets 0 or a negative count through to the measurement."""
    counts = re.compile(r'"--(repeats|batch|steps|warmup)",\s*type=int\b')
    bare = [p.name for p in sorted(BENCHMARKS.rglob("*.py")) if counts.search(p.read_text("utf-8"))]
    assert bare == []


PATH_OPTIONS = {"--json", "--plot", "--out", "-o"}


def test_every_benchmark_path_option_refuses_an_empty_path():
    """``--json ""`` (an unset variable in ``--json "$OUT"``) was taken as the option left out
    by the scripts that did not use ``gpconv.cli.main.nonempty_path`` (bench_cupy_pointwise,
    bench_tf_pointwise, bytes_torch_train, gpu/bench_torch_cuda_compile): they ran and wrote
    nothing. Read from the source, so the GPU scripts are covered on a CPU-only machine."""
    options = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            ):
                continue
            flags = {a.value for a in node.args if isinstance(a, ast.Constant)}
            if flags & PATH_OPTIONS:
                kind = next((k.value for k in node.keywords if k.arg == "type"), None)
                options.append((path.name, sorted(flags), getattr(kind, "id", None)))
    # The others take --json from add_benchmark_options, which uses nonempty_path.
    fixed = {"bench_cupy_pointwise.py", "bench_tf_pointwise.py", "bytes_torch_train.py"}
    assert fixed | {"bench_torch_cuda_compile.py"} <= {o[0] for o in options}, options
    untyped = [o for o in options if o[2] != "nonempty_path"]
    assert untyped == [], f"path options without type=nonempty_path: {untyped}"
