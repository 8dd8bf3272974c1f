"""Grouped pointwise convolution on a CUDA GPU: the fused CuPy kernels against cuBLAS, and what
kEffNet-B0 costs against EfficientNet-B0 per train step.

Per kEffNet-B0 layer shape (batch ``--batch``, default 256; DESIGN.md §5's 192->192 G=12 and
1152->192 G=64 at 16x16, and the costliest grouped layers of kEffNet-B0 at 32x32 with
skip_stride_cnt=3 from ``perf.pointwise.kefficientnet_cases``), float32, forward + backward
(dx, dW), timed with CUDA events (median after warm-up):

* ``fused il-out`` / ``fused il-in``: ``FusedGroupedPointwise`` writing ``interleave(conv(x))`` /
  computing ``conv(interleave(x))``; ``fused`` the same kernels with identity maps;
* ``core+il-out`` / ``core+il-in``: core ``GroupedPointwise`` on CuPy (cuBLAS batched matmul) plus
  core's separate ``interleave`` pass; ``core`` without it;
* ``dense``: core ``GroupedPointwise`` with ``groups=1`` (one cuBLAS matmul): EfficientNet's cost.

Achieved GB/s counts the minimal traffic, each pass's inputs read once and outputs written once:
forward ``x`` -> ``y``, backward ``dy, x`` -> ``dx, dW``: ``4 * (M*(3*Cin + 2*Cout) + 3*|W|)``
bytes; GFLOP/s counts ``6 * M * Cin/G * Cout`` (three products). Both sit next to the device's
measured peaks (a device-to-device copy and a large float32 cuBLAS matmul). The interleave
overhead is ``(fused il - fused) / fused``, target <= 5 %.

Whole networks (float32, training mode): images/s of core's network ``loss_and_grads`` on CuPy
(with core's and with the fused kPointwise) for kEffNet-B0 16ch and EfficientNet-B0 at 32x32,
skip_stride_cnt=3, batch 32 and 128; and the PyTorch CUDA train step (forward + backward + SGD,
``gpconv.backends.torch`` models) at 32x32 (skip_stride_cnt=3) batch 256 and 224x224 batch 64:
kEffNet-B0 16ch per grouped-pointwise implementation (``pointwise.IMPLS``) and memory format next
to EfficientNet-B0 in both formats, with cuDNN's autotuner off, plus one kEffNet/EfficientNet pair
with ``torch.backends.cudnn.benchmark = True`` (ratios to the best EfficientNet-B0 time). Parts
past ``--budget`` seconds are skipped (the default keeps the run under about 150 s on an H200).
Each part is guarded: a failure is recorded and the rest still runs. Prints a compact table last;
``--json PATH`` writes every figure.

    python benchmarks/bench_cupy_pointwise.py [--batch 256] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import cupy as cp
import numpy as np

from gpconv.backends.cupy.fused import FusedGroupedPointwise, FusedKPointwise
from gpconv.cli.main import int_at_least, nonempty_path
from gpconv.core import network
from gpconv.core.arch import by_name
from gpconv.core.params import init_params
from gpconv.core.pointwise import GroupedPointwise, deinterleave, interleave
from gpconv.perf.pointwise import Case, kefficientnet_cases

OVERHEAD_TARGET = 0.05
# (model, min channels per group); None: an ungrouped model, which has no fused kPointwise to try
NETWORKS = (("kefficientnet-b0", 16), ("efficientnet-b0", None))


def cuda_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median milliseconds of ``fn`` between CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    samples = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(samples)


def free_memory() -> None:
    cp.get_default_memory_pool().free_all_blocks()


# --- peaks ----------------------------------------------------------------------------------------


def copy_gb_s(repeats: int) -> float:
    """Device-to-device copy of 1 GiB: bytes read + written per second."""
    a = cp.ones(1 << 28, cp.float32)
    b = cp.empty_like(a)
    return 2 * a.nbytes / cuda_ms(lambda: cp.copyto(b, a), repeats, 3) / 1e6


def matmul_gflop_s(repeats: int, n: int = 8192) -> float:
    """float32 cuBLAS ``(n, n) @ (n, n)`` (CuPy's default math mode, no TF32)."""
    m1 = cp.random.standard_normal((n, n), dtype=cp.float32)
    m2 = cp.random.standard_normal((n, n), dtype=cp.float32)
    return 2 * n**3 / cuda_ms(lambda: m1 @ m2, max(5, repeats // 2), 2) / 1e6


def peaks(repeats: int) -> dict[str, float]:
    out = {"copy_gb_s": copy_gb_s(repeats), "matmul_f32_gflop_s": matmul_gflop_s(repeats)}
    free_memory()
    return out


# --- one layer shape ----------------------------------------------------------------------------


def layer_cases(batch: int) -> list[Case]:
    fixed = [
        Case("DESIGN.md §5", 192, 192, 12, 16, batch),
        Case("block6b_project", 1152, 192, 64, 16, batch),
    ]
    found = kefficientnet_cases(32, 3, batch, 16, count=4)
    keys = {(c.cin, c.cout, c.groups, c.hw) for c in fixed}
    return fixed + [c for c in found if (c.cin, c.cout, c.groups, c.hw) not in keys]


def variants(case: Case) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]], Any]:
    """``({name: fwd+bwd}, {name: forward only}, max |fused il-out - core+il-out|)``."""
    g = case.groups
    shape = (case.batch, case.hw, case.hw)
    x = cp.random.standard_normal((*shape, case.cin), dtype=cp.float32)
    dy = cp.random.standard_normal((*shape, case.cout), dtype=cp.float32)
    k = cp.random.standard_normal((1, 1, case.cin // g, case.cout), dtype=cp.float32)
    dense = cp.random.standard_normal((1, 1, case.cin, case.cout), dtype=cp.float32)

    def fused(ii: bool, oi: bool) -> tuple[Callable[[], Any], Callable[[], Any]]:
        def fwd() -> Any:
            return FusedGroupedPointwise.forward(x, k, None, g, ii, oi)

        def step() -> None:
            _, cache = fwd()
            FusedGroupedPointwise.backward(cache, dy)

        return step, fwd

    def core(kernel: Any, groups: int, ii: bool, oi: bool) -> tuple[Callable, Callable]:
        def fwd() -> Any:
            y, cache = GroupedPointwise.forward(interleave(x, g) if ii else x, kernel, None, groups)
            return (interleave(y, g) if oi else y), cache

        def step() -> None:
            _, cache = fwd()
            dx, grads = GroupedPointwise.backward(cache, deinterleave(dy, g) if oi else dy)
            if ii:
                deinterleave(dx, g)

        return step, fwd

    pairs = {
        "fused il-out": fused(False, True),
        "fused il-in": fused(True, False),
        "fused": fused(False, False),
        "core+il-out": core(k, g, False, True),
        "core+il-in": core(k, g, True, False),
        "core": core(k, g, False, False),
        "dense": core(dense, 1, False, False),
    }
    diff = float(cp.abs(pairs["fused il-out"][1]()[0] - pairs["core+il-out"][1]()[0]).max())
    return {n: p[0] for n, p in pairs.items()}, {n: p[1] for n, p in pairs.items()}, diff


def bench_layers(cases: list[Case], repeats: int, warmup: int, pk: dict) -> list[dict]:
    rows = []
    for case in cases:
        steps, forwards, diff = variants(case)
        m = case.batch * case.hw * case.hw
        for name, step in steps.items():
            groups = 1 if name == "dense" else case.groups
            weights = case.cin // groups * case.cout
            ms = cuda_ms(step, repeats, warmup)
            fwd_ms = cuda_ms(forwards[name], repeats, warmup)
            nbytes = 4 * (m * (3 * case.cin + 2 * case.cout) + 3 * weights)
            flops = 6 * m * weights
            rows.append(
                {
                    "case": f"{case.cin}->{case.cout} G={case.groups} {case.hw}x{case.hw}",
                    "layer": case.layer,
                    "batch": case.batch,
                    "impl": name,
                    "fwd_ms": fwd_ms,
                    "fwd_bwd_ms": ms,
                    "gb_s": nbytes / ms / 1e6,
                    "gflop_s": flops / ms / 1e6,
                    "pct_copy_peak": 100 * nbytes / ms / 1e6 / pk["copy_gb_s"],
                    "pct_matmul_peak": 100 * flops / ms / 1e6 / pk["matmul_f32_gflop_s"],
                    "max_abs_diff_fused_vs_core_il_out": diff,
                }
            )
        del steps, forwards
        free_memory()
    return rows


def overheads(rows: list[dict]) -> list[dict]:
    """Interleave overhead of the fused kernels per case, forward + backward."""
    out = []
    by_case: dict[str, dict[str, float]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["impl"]] = r["fwd_bwd_ms"]
    for case, t in by_case.items():
        o = {k: (t[f"fused {k}"] - t["fused"]) / t["fused"] for k in ("il-out", "il-in")}
        out.append(
            {
                "case": case,
                "overhead_il_out": o["il-out"],
                "overhead_il_in": o["il-in"],
                "within_target": max(o.values()) <= OVERHEAD_TARGET,
                "fused_il_out_vs_core_il_out": t["fused il-out"] / t["core+il-out"],
                "fused_il_out_vs_dense": t["fused il-out"] / t["dense"],
            }
        )
    return out


# --- whole networks -----------------------------------------------------------------------------


@contextlib.contextmanager
def fused_kpointwise_in_network():
    """core.network with its kPointwise layers on the fused kernels (the rest unchanged)."""
    saved = network.KPointwise
    network.KPointwise = FusedKPointwise
    try:
        yield
    finally:
        network.KPointwise = saved


def bench_cupy_networks(batches: tuple[int, ...], repeats: int, deadline: float) -> list[dict]:
    """Train-step ms of core's network on CuPy per model, batch and kPointwise implementation;
    skips the rest once ``deadline`` (time.monotonic) has passed."""
    rows = []
    for model, m in NETWORKS:
        arch = by_name(model, 10, m or 16, 3)  # efficientnet ignores the 16
        params = init_params(arch, seed=0, dtype=np.float32, xp=cp)
        for batch in batches:
            if time.monotonic() > deadline:
                rows.append({"model": model, "batch": batch, "skipped": "time budget"})
                continue
            x = cp.random.standard_normal((batch, 32, 32, 3), dtype=cp.float32)
            labels = cp.asarray(np.arange(batch) % 10)
            impls = {"core kPointwise": contextlib.nullcontext}
            if m is not None:
                impls["fused kPointwise"] = fused_kpointwise_in_network
            for impl, ctx in impls.items():

                def step(arch=arch, params=params, x=x, labels=labels) -> Any:
                    return network.loss_and_grads(arch, params, x, labels, training=True)

                with ctx():
                    ms = cuda_ms(step, repeats, 2)
                rows.append(
                    {
                        "model": model,
                        "impl": impl,
                        "batch": batch,
                        "ms": ms,
                        "images_per_s": batch / ms * 1e3,
                    }
                )
        free_memory()
    return rows


TORCH_CONFIGS = ((32, 256), (224, 64))  # (image size, batch); skip_stride_cnt 3 at 32x32
TORCH_CUDNN_BENCHMARK_LEFT_S = 20.0  # a cudnn.benchmark job (autotuning) starts only with this left


def torch_jobs(impls: tuple[str, ...], default_impl: str) -> list[dict]:
    """The torch train-step timings in priority order (a time budget cuts the tail): per config,
    EfficientNet-B0 in both memory formats and kEffNet-B0 16ch with the default implementation;
    the 32x32 kEffNet/EfficientNet pair (default settings) with ``cudnn.benchmark`` on; every
    other (implementation, format) of kEffNet per config; the 224x224 ``cudnn.benchmark`` pair."""
    head, rest, tuned = [], [], []
    concrete = [impl for impl in impls if impl != "auto"]
    for size, batch in TORCH_CONFIGS:
        cfg = {"size": size, "batch": batch, "cudnn_benchmark": False}
        eff = {"model": "EfficientNet-B0", "impl": "-"}
        keff = {"model": "kEffNet-B0 16ch", "impl": default_impl}
        # the defaults first (channels_last=None: the model picks the memory format per device)
        head += [dict(cfg, **eff, channels_last=cl) for cl in (None, True, False)]
        head.append(dict(cfg, **keff, channels_last=None))
        rest += [
            dict(cfg, model=keff["model"], impl=impl, channels_last=cl)
            for impl in concrete
            for cl in (True, False)
        ]
        tuned.append(
            [dict(cfg, **m, channels_last=None, cudnn_benchmark=True) for m in (eff, keff)]
        )
    return head + tuned[0] + rest + [job for pair in tuned[1:] for job in pair]


def torch_step_ms(job: dict, repeats: int) -> float:
    """Median ms of one SGD train step (forward, cross-entropy, backward, step) of ``job``'s model
    between CUDA events, after warm-up."""
    import torch
    import torch.nn.functional as F

    from gpconv.backends.torch import efficientnet_b0, kefficientnet_b0

    size, batch = job["size"], job["batch"]
    kw: dict[str, Any] = {"skip_stride_cnt": 3 if size == 32 else -1, "seed": 0}
    kw["channels_last"] = job["channels_last"]
    if job["model"].startswith("kEffNet"):
        model = kefficientnet_b0(10, min_channels_per_group=16, impl=job["impl"], **kw)
    else:
        model = efficientnet_b0(10, **kw)
    model = model.cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3 if job["cudnn_benchmark"] else 2):
        step()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def bench_torch(repeats: int, deadline: float) -> list[dict]:
    """Train-step ms of the torch models on CUDA, float32: kEffNet-B0 16ch per grouped-pointwise
    implementation (``pointwise.IMPLS``) and memory format next to EfficientNet-B0 in both, at
    32x32 (skip_stride_cnt=3) batch 256 and 224x224 batch 64, cuDNN's autotuner off; then one
    kEffNet/EfficientNet pair with ``cudnn.benchmark`` on. ``ratio`` is ms over the best
    EfficientNet-B0 time of the same (size, batch, cudnn_benchmark). Jobs left when
    ``deadline`` (time.monotonic) passes are recorded as skipped; a failing job records its
    error and the rest still run."""
    import torch

    from gpconv.backends.torch.pointwise import DEFAULT_IMPL, IMPLS

    saved = torch.backends.cudnn.benchmark
    rows = []
    try:
        for job in torch_jobs(tuple(IMPLS), DEFAULT_IMPL):
            left = deadline - time.monotonic()
            if left <= 0 or (job["cudnn_benchmark"] and left < TORCH_CUDNN_BENCHMARK_LEFT_S):
                rows.append(dict(job, skipped="time budget"))
                continue
            torch.backends.cudnn.benchmark = job["cudnn_benchmark"]
            try:
                rows.append(dict(job, ms=torch_step_ms(job, repeats)))
            except Exception as err:  # e.g. out of memory for one implementation
                rows.append(dict(job, error=f"{type(err).__name__}: {err}"[:300]))
            torch.cuda.empty_cache()  # the job's model, optimiser and batch are gone by now
    finally:
        torch.backends.cudnn.benchmark = saved
    best: dict[tuple, float] = {}
    for r in rows:
        if "ms" in r and r["model"] == "EfficientNet-B0":
            key = (r["size"], r["batch"], r["cudnn_benchmark"])
            best[key] = min(best.get(key, float("inf")), r["ms"])
    for r in rows:
        r["torch"] = torch.__version__
        key = (r["size"], r["batch"], r["cudnn_benchmark"])
        if "ms" in r and key in best:
            r["ratio_to_best_effnet"] = r["ms"] / best[key]
    return rows


# --- report -------------------------------------------------------------------------------------


def guarded(results: dict, key: str, fn: Callable[[], Any], path: str | None) -> None:
    """``results[key] = fn()``; an exception is recorded in ``results["errors"]`` instead.
    Writes the JSON so far to ``path`` afterwards, so a run killed later keeps this part."""
    t0 = time.monotonic()
    try:
        results[key] = fn()
    except Exception as err:  # one failing part must not lose the others
        results[key] = None
        results["errors"].append(f"{key}: {type(err).__name__}: {err}")
        traceback.print_exc()
    print(f"[{key}: {time.monotonic() - t0:.1f} s]", flush=True)
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)


def table(results: dict) -> str:
    out = []
    dev, pk = results["device"], results.get("peaks") or {}
    out.append(f"device: {dev}")
    if pk:
        out.append(
            f"peaks: copy {pk['copy_gb_s']:.0f} GB/s, float32 matmul "
            f"{pk['matmul_f32_gflop_s'] / 1e3:.1f} TFLOP/s"
        )
    if results.get("layers"):
        out.append(
            f"\n{'case (fwd+bwd, float32)':<26} {'impl':<12} {'fwd ms':>8} {'f+b ms':>8} "
            f"{'GB/s':>7} {'%copy':>6} {'GFLOP/s':>8} {'%mm':>5}"
        )
        for r in results["layers"]:
            out.append(
                f"{r['case']:<26} {r['impl']:<12} {r['fwd_ms']:>8.3f} {r['fwd_bwd_ms']:>8.3f} "
                f"{r['gb_s']:>7.0f} {r['pct_copy_peak']:>6.1f} {r['gflop_s']:>8.0f} "
                f"{r['pct_matmul_peak']:>5.1f}"
            )
    if results.get("overhead"):
        out.append(
            f"\n{'interleave overhead':<26} {'il-out':>8} {'il-in':>8} {'<=5%':>5} "
            f"{'/core+il':>9} {'/dense':>7}"
        )
        for r in results["overhead"]:
            out.append(
                f"{r['case']:<26} {100 * r['overhead_il_out']:>7.1f}% "
                f"{100 * r['overhead_il_in']:>7.1f}% {'yes' if r['within_target'] else 'NO':>5} "
                f"{r['fused_il_out_vs_core_il_out']:>9.2f} {r['fused_il_out_vs_dense']:>7.2f}"
            )
    if results.get("networks_cupy"):
        out.append(f"\n{'core network on CuPy, train':<36} {'batch':>5} {'ms':>8} {'img/s':>8}")
        for r in results["networks_cupy"]:
            if "skipped" in r:
                out.append(f"{r['model']:<36} {r['batch']:>5} skipped ({r['skipped']})")
                continue
            label = f"{r['model']} ({r['impl']})"
            out.append(f"{label:<36} {r['batch']:>5} {r['ms']:>8.1f} {r['images_per_s']:>8.0f}")
    if results.get("torch"):
        out.append(
            f"\n{'torch CUDA train step (float32)':<32} {'impl':<14} {'format':<6} {'cudnn.bm':<8} "
            f"{'ms':>8} {'/best Eff':>9}"
        )
        for r in results["torch"]:
            label = f"{r['size']}x{r['size']} b{r['batch']} {r['model']}"
            fmt = {None: "auto", True: "NHWC", False: "NCHW"}[r["channels_last"]]
            head = (
                f"{label:<32} {r['impl']:<14} {fmt:<6} {'on' if r['cudnn_benchmark'] else 'off':<8}"
            )
            if "ms" not in r:
                out.append(f"{head} {r.get('skipped') or r.get('error')}")
                continue
            ratio = r.get("ratio_to_best_effnet")
            out.append(f"{head} {r['ms']:>8.1f} {'' if ratio is None else f'{ratio:.3f}':>9}")
    for e in results["errors"]:
        out.append(f"ERROR {e}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch",
        type=int_at_least("--batch", 1),
        default=256,
        help="batch of the layer benchmarks",
    )
    parser.add_argument(
        "--repeats", type=int_at_least("--repeats", 1), default=20, help="timed calls per figure"
    )
    parser.add_argument("--warmup", type=int_at_least("--warmup", 0), default=5)
    parser.add_argument(
        "--budget",
        type=float,
        default=130.0,
        help="seconds after which later parts (whole networks, torch jobs) are skipped",
    )
    parser.add_argument("--skip-networks", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument(
        "--json", type=nonempty_path, metavar="PATH", help="write every figure as JSON"
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    results: dict[str, Any] = {
        "device": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "cupy": cp.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "python": platform.python_version(),
        "batch": args.batch,
        "repeats": args.repeats,
        "errors": [],
    }
    guarded(results, "peaks", lambda: peaks(args.repeats), args.json)
    pk = results["peaks"] or {"copy_gb_s": float("nan"), "matmul_f32_gflop_s": float("nan")}
    guarded(
        results,
        "layers",
        lambda: bench_layers(layer_cases(args.batch), args.repeats, args.warmup, pk),
        args.json,
    )
    if results["layers"]:
        results["overhead"] = overheads(results["layers"])
    if not args.skip_networks:
        deadline = t0 + 0.6 * args.budget
        guarded(
            results,
            "networks_cupy",
            lambda: bench_cupy_networks((32, 128), 5, deadline),
            args.json,
        )
    free_memory()
    if not args.skip_torch:
        deadline = t0 + args.budget
        guarded(results, "torch", lambda: bench_torch(5, deadline), args.json)
    results["seconds"] = time.monotonic() - t0
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0 if not results["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
