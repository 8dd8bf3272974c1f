"""The backend interface (``backends.base``) and the reference backend behind it
(``backends.numpy_reference``): when a backend counts as installed and what it says when not,
what images and labels become at the interface, and the reference's load, export, modes and
float64 arithmetic, which every conformance check leans on."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

from gpconv.backends import get
from gpconv.backends.base import Backend, images_in, labels_in
from gpconv.core import arch as core_arch
from gpconv.core.pointwise import KPointwiseSpec

ARCH = core_arch.by_name("kefficientnet-b0", num_classes=3, skip_stride_cnt=3)
REFERENCE = get("numpy")


def test_a_required_module_without_a_spec_counts_as_missing(monkeypatch) -> None:
    """A module left in sys.modules with ``__spec__ = None`` (some test doubles, reloads) makes
    find_spec raise ValueError: the backend is unavailable, said as such, not a crash."""
    module = types.ModuleType("gpconv_specless_module")
    module.__spec__ = None
    monkeypatch.setitem(sys.modules, "gpconv_specless_module", module)

    class Specless(Backend):
        name, requires, extra = "specless", ("gpconv_specless_module",), "specless"

    assert not Specless().is_available()
    with pytest.raises(ImportError, match=r"cannot import gpconv_specless_module\): pip install"):
        Specless().build(None)


def test_a_backend_without_an_extra_says_which_modules_to_install() -> None:
    """Without a pip extra the advice names the modules the backend requires."""

    class NoExtra(Backend):
        name, requires = "noextra", ("no_such_module_for_gpconv", "numpy")

    with pytest.raises(
        ImportError,
        match=r"^backend 'noextra' is not installed \(cannot import no_such_module_for_gpconv\): "
        r"install no_such_module_for_gpconv, numpy$",
    ):
        NoExtra().build(None)


@pytest.mark.parametrize(
    "shape",
    [(8, 8, 3), (1, 3, 8, 8), (1, 8, 8, 4), (1, 1, 8, 8, 3)],
    ids=["no-batch", "channels-first", "4-channels", "rank-5"],
)
def test_images_of_the_wrong_rank_or_channels_are_refused_at_the_interface(shape) -> None:
    """Every backend's entry (images_in) refuses non-(N, H, W, 3) images by name, before the
    model sees them: the reference used to raise from deep inside its stem conv."""
    model = REFERENCE.build(ARCH)
    x = np.zeros(shape)
    message = (
        r"Expected images of shape \(N, H, W, 3\) \(channels-last\), "
        rf"received x.shape={re.escape(str(shape))}"
    )
    with pytest.raises(ValueError, match=message):
        images_in(x, 3)
    with pytest.raises(ValueError, match=message):
        REFERENCE.forward(model, x)
    with pytest.raises(ValueError, match=message):
        REFERENCE.loss_and_grads(model, x, np.zeros(shape[0], np.int64))


def test_images_cross_the_interface_as_the_dtype_asked_for() -> None:
    """images_in converts to its ``dtype`` (float32 for the framework models, float64 for the
    reference), contiguous: the reference computes in float64 whatever float images it gets."""
    x32 = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3)
    out = images_in(x32[:, :, ::2], 3, np.float64)
    assert out.dtype == np.float64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x32[:, :, ::2])
    assert images_in(x32.astype(np.float64), 3).dtype == np.float32
    logits = REFERENCE.forward(REFERENCE.build(ARCH), np.zeros((1, 8, 8, 3), np.float32))["logits"]
    assert logits.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int16])
def test_labels_cross_the_interface_as_int64(dtype) -> None:
    """Labels of any integer dtype come out int64 (torch's cross-entropy takes int64 only)."""
    labels = labels_in(np.array([2, 0, 1], dtype), 3, 3)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [2, 0, 1])


def test_a_backend_is_available_only_with_every_module_it_requires() -> None:
    class Half(Backend):
        name, requires, extra = "half", ("numpy", "no_such_module_for_gpconv"), "half"

    assert not Half().is_available()
    with pytest.raises(ImportError, match=r"cannot import no_such_module_for_gpconv\)"):
        Half().build(None)


def test_a_nameless_backend_is_named_by_its_class_when_not_installed() -> None:
    class Nameless(Backend):
        requires, extra = ("no_such_module_for_gpconv",), "nameless"

    with pytest.raises(ImportError, match=r"^backend 'Nameless' is not installed"):
        Nameless().forward(None, None)


def test_the_reference_backend_validates_what_it_loads() -> None:
    """NumpyBackend.load_params refuses, in one error, what load_params would refuse from a file:
    a missing name and a negative moving variance; the model keeps its parameters."""
    model = REFERENCE.build(ARCH)
    before = REFERENCE.export_params(model)
    params = dict(before)
    del params["predictions/bias"]
    params["stem_bn/moving_variance"] = -np.ones_like(params["stem_bn/moving_variance"])
    with pytest.raises(ValueError, match=r"\(2 problems\)") as info:
        REFERENCE.load_params(model, params)
    assert "missing predictions/bias" in str(info.value)
    assert "stem_bn/moving_variance: expected variances >= 0" in str(info.value)
    assert model.params.keys() == before.keys()
    np.testing.assert_array_equal(model.params["stem_bn/moving_variance"], 1.0)


def test_the_reference_backend_loads_float32_parameters_as_float64() -> None:
    """The reference computes in float64 whatever it is given: a float32 file's parameters are
    converted on load, not run in float32."""
    model = REFERENCE.build(ARCH)
    params32 = {k: v.astype(np.float32) for k, v in REFERENCE.export_params(model).items()}
    REFERENCE.load_params(model, params32)
    assert {v.dtype for v in model.params.values()} == {np.dtype(np.float64)}
    np.testing.assert_array_equal(model.params["stem_conv/kernel"], params32["stem_conv/kernel"])


def test_the_reference_export_is_a_copy() -> None:
    """Writing into an exported array leaves the model as it was (Backend.export_params)."""
    model = REFERENCE.build(ARCH)
    exported = REFERENCE.export_params(model)
    exported["stem_conv/kernel"][...] = 7.0
    assert not np.any(model.params["stem_conv/kernel"] == 7.0)


def test_the_reference_updates_its_moving_statistics_in_training_only() -> None:
    """forward(training=True) and loss_and_grads(training=True) move every BN moving_mean;
    forward(training=False) changes no parameter."""
    a, b = REFERENCE.build(ARCH), REFERENCE.build(ARCH)
    before = REFERENCE.export_params(a)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3))
    REFERENCE.forward(a, x, training=False)
    for k, v in before.items():
        np.testing.assert_array_equal(a.params[k], v, err_msg=k)
    REFERENCE.forward(a, x, training=True)
    REFERENCE.loss_and_grads(b, x, np.array([0, 2]), training=True)
    means = [k for k in before if k.endswith("/moving_mean")]
    assert len(means) > 10
    for model in (a, b):
        unchanged = [k for k in means if np.array_equal(model.params[k], before[k])]
        assert unchanged == [], f"moving means a training step left as they were: {unchanged}"


def test_the_reference_loss_in_inference_mode_uses_the_moving_statistics() -> None:
    """loss_and_grads(training=False) gives forward(training=False)'s logits and changes no
    parameter (no batch statistics, no dropout)."""
    model = REFERENCE.build(ARCH)
    before = REFERENCE.export_params(model)
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3))
    logits = REFERENCE.forward(model, x, training=False)["logits"]
    out = REFERENCE.loss_and_grads(model, x, np.array([1, 0]), training=False)
    np.testing.assert_array_equal(out["logits"], logits)
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)


@pytest.mark.parametrize("training", [False, True])
def test_the_reference_kpointwise_computes_in_float64_whatever_the_params_dtype(training) -> None:
    """float32 parameters give the results of the same values in float64, bit for bit, with
    float64 outputs, gradients and moving statistics (the reference anchors the checks)."""
    spec = KPointwiseSpec(8, 16, 4, bn=True, activation="swish", bias=True)
    rng = np.random.default_rng(0)
    p32 = {
        k: np.abs(rng.standard_normal(s)).astype(np.float32)
        for k, (s, _) in spec.param_shapes().items()
    }
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    x, dy = rng.standard_normal((2, 3, 3, 8)), rng.standard_normal((2, 3, 3, 16))
    got = REFERENCE.kpointwise(spec, p32, x, dy, training=training)
    want = REFERENCE.kpointwise(spec, p64, x, dy, training=training)
    for key in ("y", "dx"):
        assert got[key].dtype == np.float64
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for group in ("grads", "moving_stats"):
        assert got[group].keys() == want[group].keys()
        for k in want[group]:
            assert got[group][k].dtype == np.float64, f"{group}[{k}]"
            np.testing.assert_array_equal(got[group][k], want[group][k], err_msg=f"{group}[{k}]")


def test_the_reference_param_count_names_a_stray_parameter() -> None:
    model = REFERENCE.build(ARCH)
    model.params["stray/kernel"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"Expected parameters of .*, found 'stray/kernel'"):
        REFERENCE.param_count(model)


def test_the_reference_kpointwise_checks_and_widens_x_and_dy() -> None:
    """x and dy cross the interface as float64 (N, H, W, cin/cout): float32 ones give the float64
    result of their values; integer x and a dy of the wrong channels are refused by name."""
    spec = KPointwiseSpec(4, 8, 2, bn=False)
    rng = np.random.default_rng(2)
    params = {k: rng.standard_normal(s) for k, (s, _) in spec.param_shapes().items()}
    x32 = rng.standard_normal((1, 2, 2, 4)).astype(np.float32)
    dy = rng.standard_normal((1, 2, 2, 8))
    got = REFERENCE.kpointwise(spec, params, x32, dy)
    want = REFERENCE.kpointwise(spec, params, x32.astype(np.float64), dy)
    assert got["y"].dtype == np.float64
    np.testing.assert_array_equal(got["y"], want["y"])
    with pytest.raises(TypeError, match=r"Expected floating images, received x.dtype=int64"):
        REFERENCE.kpointwise(spec, params, np.ones((1, 2, 2, 4), np.int64), dy)
    dy32 = dy.astype(np.float32)
    got = REFERENCE.kpointwise(spec, params, x32, dy32)
    want = REFERENCE.kpointwise(spec, params, x32.astype(np.float64), dy32.astype(np.float64))
    assert got["dx"].dtype == np.float64
    np.testing.assert_array_equal(got["dx"], want["dx"])
    with pytest.raises(
        ValueError, match=r"Expected dy of shape \(N, H, W, 8\).*dy.shape=\(1, 2, 2, 4\)"
    ):
        REFERENCE.kpointwise(spec, params, x32, dy[..., :4])
