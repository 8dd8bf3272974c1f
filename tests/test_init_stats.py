"""Initial weights of every implementation follow DESIGN.md §1's Keras initialisers, and every
parameter exchange refuses arrays of the right size in the wrong layout.

Initialisers: the core (``core.params.init_params``) is the spec, the torch models load it, and
the Keras models draw their own with Keras initialisers (``backends/tensorflow/models.py``). One
checker, written from the Keras definitions rather than from the core code, applies to the
``{canonical name: array}`` of each:

* BN gamma and moving variance 1, beta, moving mean and biases 0;
* stem, depthwise and every EfficientNet pointwise kernel: ``VarianceScaling(2.0, "fan_out",
  "truncated_normal")``: ``|w| <= 2 sigma / 0.8796...``, std ``sigma = sqrt(2 / fan_out)``
  and the kurtosis of a normal truncated at 2 sigma (2.37; a uniform's is 1.8);
* every kPointwise kernel of kEffNet (``<layer>/conv/kernel``, ``conv2/kernel``, grouped or not):
  glorot uniform, ``|w| <= sqrt(6 / (fan_in + fan_out))``, std ``limit / sqrt(3)``;
* the dense kernel: ``VarianceScaling(1/3, "fan_out", "uniform")``: ``|w| <= sqrt(1 / fan_out)``.

Fans are Keras's: receptive field times channels, so a grouped kernel ``(1, 1, Cin/G, Cout)``
has ``fan_in = Cin/G`` and ``fan_out = Cout``, a depthwise ``(k, k, C, 1)`` ``fan_out = k*k``.
A scale, mode or distribution mistake moves the bound, the std or the kurtosis of some kernel.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import tiny_architecture  # noqa: E402

from gpconv.core.arch import Architecture, efficientnet, kefficientnet  # noqa: E402
from gpconv.core.params import init_params, validate_params  # noqa: E402

# A standard normal truncated to [-2, 2] (Keras's truncated_normal): its std and kurtosis.
_Z, _PHI2 = math.erf(2 / math.sqrt(2)), math.exp(-2) / math.sqrt(2 * math.pi)
TRUNCATED_STD = math.sqrt(1 - 4 * _PHI2 / _Z)  # 0.87962566...
TRUNCATED_KURTOSIS = (3 - 28 * _PHI2 / _Z) / TRUNCATED_STD**4  # 2.366
UNIFORM_KURTOSIS = 1.8
ARCHS = {
    "efficientnet-b0": lambda: efficientnet("b0", 10, skip_stride_cnt=3),
    "kefficientnet-b0-16ch": lambda: kefficientnet("b0", 10, 16, skip_stride_cnt=3),
}


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``keras.initializers``' fans: kernels ``(kh, kw, cin, cout)`` count the receptive field."""
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def expected_rule(
    family: str, name: str, shape: tuple[int, ...]
) -> tuple[str, float, float, float]:
    """``(rule, bound, std, kurtosis)`` of kernel ``name``: no entry beyond ``bound``, and the
    std and kurtosis of its distribution (the kurtosis tells a uniform from a truncated normal
    of nearly the same std, e.g. glorot-uniform for the stem: 4% off in std)."""
    fan_in, fan_out = keras_fans(shape)
    if name == "predictions/kernel":
        limit = math.sqrt(3.0 * (1.0 / 3.0) / fan_out)
        return "dense uniform", limit, limit / math.sqrt(3.0), UNIFORM_KURTOSIS
    layer = name.rsplit("/", 1)[0]
    if family == "kefficientnet" and layer.rsplit("/", 1)[-1] in ("conv", "conv2"):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return "glorot uniform", limit, limit / math.sqrt(3.0), UNIFORM_KURTOSIS
    sigma = math.sqrt(2.0 / fan_out)
    return "variance scaling 2 fan_out", 2.0 * sigma / TRUNCATED_STD, sigma, TRUNCATED_KURTOSIS


def kurtosis(v: np.ndarray) -> float:
    d = v - v.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def check_initial_params(arch: Architecture, params: dict, source: str) -> None:
    """Assert that ``params`` (canonical names and layouts) hold freshly initialised values."""
    assert list(params) == list(arch.param_shapes()), f"{source}: not the names of {arch.name}"
    pooled: dict[tuple[str, str, float], list[np.ndarray]] = defaultdict(list)
    for name, value in params.items():
        v = np.asarray(value, dtype=np.float64)
        where = f"{source} {arch.name} {name} {v.shape}"
        param = name.rsplit("/", 1)[1]
        if param in ("gamma", "moving_variance"):
            assert np.all(v == 1), f"{where}: should be ones, received {np.unique(v)[:4]}"
            continue
        if param in ("beta", "moving_mean", "bias"):
            assert np.all(v == 0), f"{where}: should be zeros, received {np.unique(v)[:4]}"
            continue
        assert param == "kernel", f"{where}: unknown parameter"
        rule, bound, std, kurt = expected_rule(arch.family, name, v.shape)
        biggest = float(np.abs(v).max())
        assert biggest <= bound * (1 + 1e-6), (
            f"{where}: max|w| {biggest:.5g} > {bound:.5g}, the bound of {rule}"
        )
        # The sample std's relative standard error is at most ~1/sqrt(2n) for these
        # distributions; 5 of them, never tighter than 5%.
        tol = max(0.05, 5.0 / math.sqrt(2.0 * v.size))
        assert abs(float(v.std()) / std - 1.0) <= tol, (
            f"{where}: std {v.std():.5g}, but {rule} gives {std:.5g} (+-{tol:.0%})"
        )
        mean_tol = 5.0 * std / math.sqrt(v.size)
        assert abs(float(v.mean())) <= mean_tol, f"{where}: mean {v.mean():.3g}, should be ~0"
        # The sample kurtosis has a standard error of ~2/sqrt(n) here (simulated for both
        # distributions); 5 of them tell 1.8 from 2.37 from n ~ 400 on.
        if v.size >= 400:
            k_tol = 10.0 / math.sqrt(v.size)
            assert abs(kurtosis(v) - kurt) <= k_tol, (
                f"{where}: kurtosis {kurtosis(v):.3f}, but {rule} gives {kurt:.3f} (+-{k_tol:.3f})"
            )
        kind = "dwconv" if name.endswith("_dwconv/kernel") else name.split("_", 1)[0]
        pooled[(rule, kind, kurt)].append(v.ravel() / std)
    # Pooled per rule and kind of layer (stem, depthwise, blocks' pointwise, top, dense): one
    # std over many small kernels, where a per-kernel check has to be loose.
    for (rule, kind, kurt), parts in pooled.items():
        z = np.concatenate(parts)
        tol = 5.0 / math.sqrt(2.0 * z.size) + 0.01
        assert abs(float(z.std()) - 1.0) <= tol, (
            f"{source} {arch.name} {kind} kernels ({rule}): pooled std {z.std():.4f} of the "
            f"expected, should be 1 +- {tol:.3f}"
        )
        k_tol = 10.0 / math.sqrt(z.size) + 0.02
        assert abs(kurtosis(z) - kurt) <= k_tol, (
            f"{source} {arch.name} {kind} kernels ({rule}): pooled kurtosis {kurtosis(z):.3f}, "
            f"should be {kurt:.3f} +- {k_tol:.3f}"
        )


# --- the initialisers of core, torch and Keras --------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHS))
def test_core_init_params_follow_keras_initialisers(name):
    """The spec itself: ``init_params`` draws each kernel from its Keras rule."""
    arch = ARCHS[name]()
    check_initial_params(arch, init_params(arch, seed=0), "core.init_params")


@pytest.mark.parametrize("name", list(ARCHS))
def test_torch_models_start_from_keras_initialisers(name):
    """A fresh torch model holds the Keras-initialised weights (not torch's own defaults)."""
    pytest.importorskip("torch")
    from gpconv.backends.torch import EfficientNet, export_params

    arch = ARCHS[name]()
    check_initial_params(arch, export_params(EfficientNet(arch, seed=1)), "torch")


@pytest.mark.parametrize(
    "name, constructor",
    [("efficientnet-b0", "EfficientNetB0"), ("kefficientnet-b0-16ch", "KEfficientNetB0")],
)
def test_keras_models_draw_keras_initialisers(name, constructor):
    """The Keras models initialise with Keras initialisers of their own (models.py): each
    layer's must be the rule DESIGN.md gives it (truncated normal for stem, depthwise and
    EfficientNet pointwise, glorot uniform for kPointwise, uniform for the dense)."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from gpconv.backends import tensorflow as gtf

    keras.utils.set_random_seed(2)
    model = getattr(gtf, constructor)(classes=10, input_shape=(32, 32, 3), skip_stride_cnt=3)
    check_initial_params(ARCHS[name](), gtf.export_params(model), "keras")


# --- parameter exchange refuses permuted layouts ------------------------------------------------

SMALL = tiny_architecture()  # predictions/kernel (48, 3); block2a_expand/conv/kernel (1, 1, 4, 96)


def permuted_cases() -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """``{case: (name, permute)}``: arrays of the right size in another layout."""
    torch_layout = (3, 2, 0, 1)  # Keras (1, 1, Cin/G, Cout) given as torch's (Cout, Cin/G, 1, 1)
    return {
        "dense-transposed": ("predictions/kernel", lambda a: a.T),
        "pointwise-in-torch-layout": (
            "block2a_expand/conv/kernel",
            lambda a: a.transpose(torch_layout),
        ),
    }


def bad_params(case: str) -> tuple[dict, str]:
    """Fresh parameters with one entry permuted, and the message fragment expected for it."""
    name, permute = permuted_cases()[case]
    params = init_params(SMALL, seed=7)
    good = params[name].shape
    params[name] = np.ascontiguousarray(permute(params[name]))
    assert params[name].size == math.prod(good) and params[name].shape != good
    return params, f"{name}: expected shape {good}, received shape {params[name].shape}"


@pytest.mark.parametrize("case", list(permuted_cases()))
def test_validate_params_refuses_permuted_arrays(case):
    """Same size is not same shape: a transposed dense or a torch-layout kernel would load as
    silently scrambled weights if only sizes were compared."""
    params, fragment = bad_params(case)
    with pytest.raises(ValueError) as err:
        validate_params(SMALL, params)
    assert fragment in str(err.value), str(err.value)


def _torch_exchange(arch):
    pytest.importorskip("torch")
    from gpconv.backends.torch import EfficientNet, export_params, load_params

    return EfficientNet(arch, seed=0), export_params, load_params


def _keras_exchange(arch):
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from gpconv.backends.tensorflow import build_model, export_params, load_params

    return build_model(arch, input_shape=(8, 8, 3)), export_params, load_params


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize("case", list(permuted_cases()))
def test_load_params_refuses_permuted_arrays_and_changes_nothing(backend, case):
    """torch's layout conversion transposes every kernel, and the Keras exchange assigns variable
    by variable: an array already in torch layout (or a transposed dense) must be refused up
    front, by name, before any tensor or variable is overwritten."""
    make = {"torch": _torch_exchange, "keras": _keras_exchange}[backend]
    model, export_params, load_params = make(SMALL)
    before = export_params(model)
    params, fragment = bad_params(case)
    with pytest.raises(ValueError) as err:
        load_params(model, params)
    assert fragment in str(err.value), str(err.value)
    after = export_params(model)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert not changed, f"a refused load changed {changed[:5]}"
