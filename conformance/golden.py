"""Golden vectors: float64 reference answers frozen in ``conformance/golden/``.

A backend is checked against the live reference *and* these files, so a regression in the
reference itself is caught too. Files are safetensors (no pickle); ``manifest.json`` records each
file's sha256 and the generating version, and every load verifies it.

* ``interleave.safetensors``: inputs and outputs of ``core.interleave``.
* ``kpointwise.safetensors``: every kPointwise case of ``cases.KPOINTWISE_FULL`` in both modes:
  ``x``, ``dy``, params, ``y``, ``dx``, grads, moving stats.
* ``network.safetensors``: kEffNet-B0 16ch at 32×32 (skip 3), batch 2: params and ``x`` (stored
  as float32, which loses nothing: the cases are float32-representable), inference logits,
  training loss/logits/dx and moving stats, and a *sketch* of every parameter gradient,
  ``(<g, d>, ||g||)`` for a seeded direction ``d`` (the full gradients would not fit in 5 MB;
  passing the full-gradient tolerance implies passing the sketch's).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..backends.base import Backend
from ..core.files import header_metadata, read_header
from ..core.pointwise import KPointwiseSpec
from . import cases as C
from .checks import call, call_forward, error_detail
from .results import (
    GRAD_FLOOR,
    GRAD_TOL,
    CheckResult,
    Comparison,
    absent,
    allclose,
    gradient_errors,
    moving_stats_error,
    scaled_max,
    worst,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
MANIFEST = "manifest.json"
NETWORK = C.Network("kefficientnet-b0", 16)
SEED = 0


class GoldenError(ValueError):
    """A golden file is missing, unreadable, or does not match its manifest hash."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _case_id(row: tuple, training: bool) -> str:
    cin, cout, groups, bn, act, bias = row
    return f"kp_{cin}_{cout}_g{groups}_bn{int(bn)}_{act}_bias{int(bias)}_train{int(training)}"


def _direction(shape: tuple[int, ...], name: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(shape)


def gradient_sketch(grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{name: [<g, d_name>, ||g||, ||d_name||]}`` for a direction seeded by the name."""
    out = {}
    for name, g in grads.items():
        d = _direction(np.shape(g), name)
        g64 = np.asarray(g, np.float64)
        out[name] = np.array(
            [float(np.sum(g64 * d)), float(np.linalg.norm(g64)), float(np.linalg.norm(d))]
        )
    return out


def generate(directory: Path = GOLDEN_DIR) -> dict[str, Any]:
    """Write every golden file and the manifest; returns the manifest."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, np.ndarray]] = {
        "interleave.safetensors": {},
        "kpointwise.safetensors": {},
    }
    meta: dict[str, dict[str, str]] = {"interleave.safetensors": {}, "kpointwise.safetensors": {}}
    rng = np.random.default_rng(SEED)
    for c, g in C.INTERLEAVE_CASES:
        x = C.f32(rng.standard_normal((2, 3, 3, c)))
        from ..core.pointwise import interleave

        files["interleave.safetensors"][f"C{c}_G{g}/x"] = x
        files["interleave.safetensors"][f"C{c}_G{g}/y"] = interleave(x, g)
    kp = files["kpointwise.safetensors"]
    for row in C.KPOINTWISE_FULL:
        for training in (False, True):
            case = C.kpointwise_case(row, training, SEED)
            cid = _case_id(row, training)
            meta["kpointwise.safetensors"][cid] = json.dumps(
                {"row": list(row), "training": training}
            )
            kp.update(
                {
                    f"{cid}/x": case["x"],
                    f"{cid}/dy": case["dy"],
                    f"{cid}/y": case["y"],
                    f"{cid}/dx": case["dx"],
                }
            )
            kp.update({f"{cid}/params/{k}": v for k, v in case["params"].items()})
            kp.update({f"{cid}/grads/{k}": v for k, v in case["grads"].items()})
            kp.update({f"{cid}/moving_stats/{k}": v for k, v in case["moving_stats"].items()})
    infer = C.network_case(NETWORK, False, SEED)
    train = C.network_case(NETWORK, True, SEED)
    net = {
        "x": infer["x"].astype(np.float32),
        "labels": np.asarray(infer["labels"], np.int64),
        "inference/logits": infer["logits"],
        "training/logits": train["logits"],
        "training/loss": np.array([train["loss"]]),
        "training/dx": train["dx"],
    }
    net.update({f"params/{k}": v.astype(np.float32) for k, v in infer["params"].items()})
    net.update({f"training/moving_stats/{k}": v for k, v in train["moving_stats"].items()})
    # Training starts from moving statistics away from the batch's (cases.moved_away).
    net.update(
        {f"training/moving_stats_before/{k}": train["params"][k] for k in train["moving_stats"]}
    )
    net.update({f"training/grad_sketch/{k}": v for k, v in gradient_sketch(train["grads"]).items()})
    files["network.safetensors"] = net
    meta["network.safetensors"] = {"model": NETWORK.model, "min_channels_per_group": str(NETWORK.m)}
    manifest: dict[str, Any] = {
        "generator": f"gpconv {__version__}",
        "seed": SEED,
        "date": datetime.date.today().isoformat(),
        "files": {},
    }
    for name, tensors in files.items():
        path = directory / name
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta[name]
        )
        manifest["files"][name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load(name: str, directory: Path = GOLDEN_DIR) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Verified tensors and metadata of one golden file (``GoldenError`` on any mismatch), all
    from the bytes whose hash was checked: read once, so a file replaced after the check (a
    ``generate`` running meanwhile) cannot be what is loaded."""
    from safetensors.numpy import load as load_bytes

    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise GoldenError(
            f"golden manifest missing: {manifest_path} "
            "(run `python -m gpconv.conformance generate`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, or bytes that are no UTF-8
        raise GoldenError(f"golden manifest {manifest_path} is no JSON: {err}") from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    entry = files.get(name) if isinstance(files, dict) else None
    path = directory / name
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise GoldenError(f"{name} is not listed with its sha256 in {manifest_path}")
    if not path.is_file():
        raise GoldenError(f"golden file missing: {path}")
    blob = path.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != entry["sha256"]:
        raise GoldenError(
            f"golden file {path} was modified: sha256 {actual} != manifest {entry['sha256']}"
        )
    metadata = header_metadata(str(path), read_header(str(path), io.BytesIO(blob)))
    return load_bytes(blob), metadata


def _sub(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _tolerances(backend: Backend) -> tuple[float, float, float]:
    """(rtol, atol, grad tol): float64 backends must reproduce the files almost bit for bit."""
    if np.dtype(getattr(backend, "dtype", np.float32)) == np.float64:
        return 1e-9, 1e-12, 1e-9
    return 1e-4, 1e-5, GRAD_TOL


def check_golden(backend: Backend, directory: Path = GOLDEN_DIR) -> list[CheckResult]:
    """The backend against every golden file; a bad file is an ``error`` row naming it."""
    rows: list[CheckResult] = []
    for name, fn in (
        ("interleave.safetensors", _golden_interleave),
        ("kpointwise.safetensors", _golden_kpointwise),
        ("network.safetensors", _golden_network),
    ):
        try:
            tensors, metadata = load(name, directory)
            rows += fn(backend, tensors, metadata)
        except GoldenError as err:
            rows.append(
                CheckResult(
                    backend.name,
                    "golden",
                    name,
                    str(directory),
                    float("inf"),
                    0.0,
                    "error",
                    str(err),
                )
            )
        except Exception as err:  # a crashing backend is a failed row, not an aborted report
            rows.append(
                CheckResult(
                    backend.name,
                    "golden",
                    name,
                    "",
                    float("inf"),
                    0.0,
                    "error",
                    error_detail(err),
                )
            )
    return rows


def _row(backend: Backend, layer: str, config: str, cmp: Comparison) -> CheckResult:
    return CheckResult(
        backend.name,
        "golden",
        layer,
        config,
        cmp.error,
        cmp.tolerance,
        "pass" if cmp.ok else "fail",
        cmp.note,
    )


def _golden_interleave(backend: Backend, t: dict, _: dict) -> list[CheckResult]:
    errors = {}
    for key in sorted(k[:-2] for k in t if k.endswith("/x")):
        groups = int(key.split("_G")[1])
        errors[key] = allclose(
            call(backend, "interleave", t[f"{key}/x"], groups), t[f"{key}/y"], 0.0, 0.0
        )
    name, cmp = worst(errors)
    return [_row(backend, "interleave", f"interleave.safetensors worst={name}", cmp)]


def _golden_kpointwise(backend: Backend, t: dict, metadata: dict) -> list[CheckResult]:
    # Every case of KPOINTWISE_FULL in both modes, no more, no fewer: a regenerated file that
    # lost cases would otherwise pass on what is left.
    expected = {_case_id(row, training) for row in C.KPOINTWISE_FULL for training in (False, True)}
    if set(metadata) != expected:
        missing, extra = sorted(expected - set(metadata)), sorted(set(metadata) - expected)
        raise GoldenError(
            f"kpointwise.safetensors: expected the {len(expected)} cases of "
            f"cases.KPOINTWISE_FULL in both modes, missing {missing}, unexpected {extra}"
        )
    rtol, atol, gtol = _tolerances(backend)
    errors: dict[str, Comparison] = {}
    for cid, info in sorted(metadata.items()):
        spec_row, training = json.loads(info)["row"], json.loads(info)["training"]
        cin, cout, groups, bn, act, bias = spec_row
        spec = KPointwiseSpec(cin, cout, groups, bn=bn, activation=act, bias=bias)
        got = call(
            backend,
            "kpointwise",
            spec,
            _sub(t, f"{cid}/params/"),
            t[f"{cid}/x"],
            t[f"{cid}/dy"],
            training=training,
        )
        errors[f"{cid} y"] = allclose(got["y"], t[f"{cid}/y"], rtol, atol)
        errors[f"{cid} dx"] = allclose(got["dx"], t[f"{cid}/dx"], rtol, atol)
        graded = gradient_errors(got["grads"], _sub(t, f"{cid}/grads/"), gtol)
        errors.update({f"{cid} {k}": v for k, v in graded.items()})
        for k, v in _sub(t, f"{cid}/moving_stats/").items():
            stats = got["moving_stats"]
            errors[f"{cid} {k}"] = (
                allclose(stats[k], v, rtol, atol) if k in stats else absent(k, stats)
            )
    name, cmp = worst(errors)
    return [
        _row(
            backend,
            "kpointwise",
            f"kpointwise.safetensors: {len(metadata)} cases, worst={name}",
            cmp,
        )
    ]


def _golden_network(backend: Backend, t: dict, metadata: dict) -> list[CheckResult]:
    from ..core.arch import by_name, without_dropout

    rtol, atol, gtol = _tolerances(backend)
    model, m = (
        metadata.get("model", NETWORK.model),
        int(metadata.get("min_channels_per_group", NETWORK.m)),
    )
    net = replace(NETWORK, model=model, m=m)
    arch = by_name(model, C.CLASSES, m, net.skip)
    params = {k: v.astype(np.float64) for k, v in _sub(t, "params/").items()}
    x = t["x"].astype(np.float64)
    label = f"network.safetensors ({C.network_label(net)})"
    native = call(backend, "build", arch)
    call(backend, "load_params", native, params)
    logit_tol = 1e-9 if gtol < 1e-6 else 1e-3
    rows = [
        _row(
            backend,
            "logits (inference)",
            label,
            scaled_max(
                call_forward(backend, arch, native, x)["logits"], t["inference/logits"], logit_tol
            ),
        )
    ]
    before = {k: v.astype(np.float64) for k, v in _sub(t, "training/moving_stats_before/").items()}
    native = call(backend, "build", without_dropout(arch))
    call(backend, "load_params", native, {**params, **before})
    got = call(backend, "loss_and_grads", native, x, t["labels"], training=True)
    rows.append(
        _row(
            backend,
            "logits (training)",
            label,
            scaled_max(got["logits"], t["training/logits"], logit_tol),
        )
    )
    rows.append(
        _row(backend, "loss", label, allclose(got["loss"], t["training/loss"][0], rtol * 10, atol))
    )
    rows.append(_row(backend, "dx", label, scaled_max(got["dx"], t["training/dx"], logit_tol)))
    sketch = gradient_sketch(got["grads"])
    errors = {}
    refs = _sub(t, "training/grad_sketch/")
    # The same floor as results.gradient_errors: exact zeros are judged on the network's scale.
    floor = GRAD_FLOOR * max(float(r[1]) for r in refs.values())
    for k, ref in refs.items():
        proj, norm, dnorm = ref
        mine = sketch.get(k, np.array([np.nan, np.nan, np.nan]))
        scale = max(norm, floor)
        err = max(abs(mine[0] - proj) / (scale * dnorm), abs(mine[1] - norm) / scale)
        errors[k] = Comparison(float(err) if np.isfinite(err) else float("inf"), gtol)
    name, cmp = worst(errors)
    rows.append(_row(backend, f"gradients ({name})", label, cmp))
    exported = call(backend, "export_params", native)
    stats = {
        # Files from before moving_stats_before existed started training at `params`.
        k: moving_stats_error(exported[k], v, before.get(k, params[k]), rtol, atol)
        if k in exported
        else absent(k, exported)
        for k, v in _sub(t, "training/moving_stats/").items()
    }
    name, cmp = worst(stats)
    rows.append(_row(backend, f"moving stats ({name})", label, cmp))
    return rows


def main_generate(directory: str | os.PathLike | None = None) -> None:
    manifest = generate(Path(directory) if directory else GOLDEN_DIR)
    total = sum(f["bytes"] for f in manifest["files"].values())
    for name, f in manifest["files"].items():
        print(f"{name:28s} {f['bytes']:>10,} bytes  sha256 {f['sha256'][:16]}…")
    print(f"total {total:,} bytes")
