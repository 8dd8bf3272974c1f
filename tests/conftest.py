"""Shared pytest set-up: hypothesis profiles, the GPU marker and shared fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _has_cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device with CuPy (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


_malloc_calls: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _record_malloc_changes():
    """``gpconv train``/``bench`` change the malloc of the process that runs them; here that would
    be pytest's, for every later test. Record the calls instead (tests/test_allocator.py checks
    the real setting in a subprocess). Session scope: module-scoped runs are patched too."""
    from gpconv.perf import allocator

    def record() -> str:
        _malloc_calls.append("keep_freed_memory")
        return "glibc malloc, freed memory kept (recorded by tests/conftest.py)"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(allocator, "keep_freed_memory", record)
        yield


@pytest.fixture
def malloc_calls() -> list[str]:
    """The ``keep_freed_memory`` calls made during this test."""
    _malloc_calls.clear()
    return _malloc_calls


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the tests of a module that uses this fixture
    (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on a CPU shared with other
    jobs, OpenMP barriers waiting for a descheduled thread make multi-threaded torch 10x slower
    (results do not depend on it), and the channel-shuffle gather runs with one torch thread
    only (``eager.gather_wins``), so every test meets it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of this process alone (rank 0 of 1; skipped without torch), yielded
    as ``torch.distributed`` and destroyed afterwards."""
    pytest.importorskip("torch")
    import torch.distributed as td

    td.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield td
    finally:
        if td.is_initialized():
            td.destroy_process_group()
