"""``gpconv train/bench --backend cupy``: the reference network on a CUDA device.

Without a device only the error path runs; the rest is ``gpu``-marked (see conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_architecture

from gpconv import backends
from gpconv.cli.main import main
from gpconv.core.arch import by_name, without_dropout
from gpconv.train.distributed import Dist
from gpconv.train.frameworks import OptimConfig, create

CUPY_TINY = [
    "train", "--backend", "cupy", "--model", "kefficientnet-b0", "--image-size", "8",
    "--skip-stride", "0", "--limit", "32", "--batch-size", "16", "--epochs", "2", "--quiet",
]  # fmt: skip


@pytest.mark.skipif(backends.get("cupy").is_available(), reason="checks the no-device path")
def test_cupy_without_a_device_is_a_clear_usage_error(tmp_path, capsys):
    assert main([*CUPY_TINY, "--out", str(tmp_path / "run")]) == 2
    assert "cupy" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_cupy_train_steps_equal_the_float64_reference():
    """Three SGD steps on the GPU (float32) and in NumPy (float64) from the same weights: losses
    and updated parameters agree to float32 accuracy. (32x32 images: at 8x8 with batch 4 the
    last BN layers see 4 values each and float32 vs float64 runs part after one step; measured
    here on the CPU, float32 NumPy vs float64 agree to 2e-6 relative at 32x32.)"""
    arch = without_dropout(by_name("kefficientnet-b0", 10, 16, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    runs = {}
    for name in ("numpy", "cupy"):
        fw = create(name, arch, OptimConfig("sgd", 1e-3), seed=0, dist=Dist())
        losses = [fw.train_step(x, y)[0] for _ in range(3)]
        runs[name] = (losses, fw.export_params(), fw.optimizer_state()[0])
    (ref_losses, ref_params, ref_slots), (losses, params, slots) = runs["numpy"], runs["cupy"]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert sorted(params) == sorted(ref_params) and sorted(slots) == sorted(ref_slots)
    for k, v in params.items():
        assert isinstance(v, np.ndarray), f"export_params must hand back host arrays ({k})"
        scale = max(1.0, float(np.abs(ref_params[k]).max()))
        np.testing.assert_allclose(v, ref_params[k], rtol=1e-3, atol=1e-4 * scale, err_msg=k)


@pytest.mark.gpu
def test_cupy_trains_and_benches_from_the_cli(tmp_path, capsys):
    import cupy

    assert main([*CUPY_TINY, "--out", str(tmp_path / "run")]) == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2, rows  # header + one row per epoch
    assert (tmp_path / "run" / "params.safetensors").exists()
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["device"] == f"cuda:0 {name}"
    out = tmp_path / "bench.json"
    args = ["bench", "--backend", "cupy", "--op", "pointwise", "--steps", "2", "--json", str(out)]
    assert main(args) == 0
    assert "fused + interleave" in out.read_text()
    assert {r["device"] for r in json.loads(out.read_text())["pointwise"]} == {f"cuda:0 {name}"}


@pytest.mark.skipif(backends.get("cupy").is_available(), reason="checks the no-device path")
def test_creating_the_cupy_framework_without_a_device_names_what_it_needs():
    """The library path (``frameworks.create``, not the CLI, which checks earlier): a
    ValueError with the install hint, not a ModuleNotFoundError or CUDA error from the first
    array it would copy to the device."""
    with pytest.raises(ValueError, match="The cupy backend needs CuPy and a CUDA device"):
        create("cupy", tiny_architecture(), OptimConfig())
