"""The torch ``Backend`` adapter and the model's constructor options where no other test looks:
repeated gradient calls, ``forward(training=True)``, frozen parameters in ``param_count``, the
adapter's interleave of a bare channel vector, the default seed, ``skip_stride_cnt`` of the
EfficientNet constructors and the per-device memory format of a built model.

Each expectation comes from the ``Backend`` docstrings (backends/base.py), DESIGN.md, or what
PyTorch/Keras do, and the reference numbers from the float64 NumPy reference (core).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from helpers import tiny_architecture  # noqa: E402

from gpconv import backends  # noqa: E402
from gpconv.backends.torch import EfficientNet, efficientnet_b0, kefficientnet_b0  # noqa: E402
from gpconv.core import arch as core_arch  # noqa: E402
from gpconv.core import network  # noqa: E402
from gpconv.core.params import init_params  # noqa: E402
from gpconv.core.pointwise import interleave  # noqa: E402

BACKEND = backends.get("torch")


def _tiny_arch() -> core_arch.Architecture:
    return core_arch.without_dropout(tiny_architecture("kefficientnet", num_classes=3, blocks=2))


def _perturbed(arch: core_arch.Architecture, seed: int) -> dict[str, np.ndarray]:
    """``init_params`` with moving statistics far from the batch's, so that using them instead
    of the batch statistics (or the other way round) changes every output."""
    rng = np.random.default_rng(seed)
    params = init_params(arch, seed=seed, dtype=np.float64)
    for name, value in params.items():
        if name.endswith("/moving_mean"):
            params[name] = rng.normal(size=value.shape)
        elif name.endswith("/moving_variance"):
            params[name] = rng.uniform(2.0, 4.0, size=value.shape)
    return params


def test_loss_and_grads_twice_returns_the_same_gradients_not_their_sum() -> None:
    """``loss_and_grads`` returns the gradients of *this* loss (backends/base.py). PyTorch
    accumulates into ``.grad``, so an adapter that does not clear them before ``backward``
    returns the sum over every call so far: the second call would report twice the gradient."""
    arch = _tiny_arch()
    model = BACKEND.build(arch)
    BACKEND.load_params(model, init_params(arch, seed=0))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    labels = np.array([0, 2])
    first = BACKEND.loss_and_grads(model, x, labels, training=False)
    second = BACKEND.loss_and_grads(model, x, labels, training=False)
    assert first["grads"].keys() == second["grads"].keys()
    for name, g in first["grads"].items():
        np.testing.assert_allclose(second["grads"][name], g, rtol=1e-6, atol=0, err_msg=name)


def test_adapter_forward_in_training_mode_uses_and_updates_batch_statistics() -> None:
    """``Backend.forward(training=True)``: "Training mode uses batch statistics and updates the
    model's moving statistics" (backends/base.py). The float64 reference's training forward
    gives both the logits and the moving statistics after the step."""
    arch = _tiny_arch()
    params = _perturbed(arch, seed=1)
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 3))
    logits_ref, cache = network.forward(arch, params, x, training=True)
    model = BACKEND.build(arch)
    BACKEND.load_params(model, params)
    out = BACKEND.forward(model, x.astype(np.float32), training=True)
    bound = 1e-3 * max(1.0, float(np.abs(logits_ref).max()))
    assert np.abs(out["logits"] - logits_ref).max() <= bound, "training forward: batch statistics"
    exported = BACKEND.export_params(model)
    assert cache["moving_stats"], "the reference reports the updated statistics"
    for name, ref in cache["moving_stats"].items():
        np.testing.assert_allclose(exported[name], ref, rtol=1e-4, atol=1e-5, err_msg=name)


def test_param_count_counts_frozen_parameters_as_non_trainable() -> None:
    """``param_count`` is ``(trainable, non_trainable)`` as the framework counts them: in PyTorch
    a parameter with ``requires_grad=False`` is not trained, and Keras likewise moves a frozen
    layer's weights to ``non_trainable_weights``. Freezing moves a count, it keeps the total."""
    model = BACKEND.build(_tiny_arch())
    trainable, frozen = BACKEND.param_count(model)
    stem = model.stem.conv.weight
    stem.requires_grad_(False)
    assert BACKEND.param_count(model) == (trainable - stem.numel(), frozen + stem.numel())


def test_adapter_interleaves_a_bare_channel_vector_like_core() -> None:
    """``core.interleave`` works on the last axis of any channels-last array, a bare ``(C,)``
    channel vector included; the adapter's interleave must agree with it (and keep the dtype)."""
    for x in (np.arange(12.0), np.arange(12, dtype=np.float32), np.arange(2.0 * 6).reshape(2, 6)):
        got = BACKEND.interleave(x, 3)
        np.testing.assert_array_equal(got, interleave(x, 3))
        assert got.shape == x.shape and got.dtype == x.dtype


def test_the_default_seed_follows_torchs_random_state() -> None:
    """``EfficientNet(seed=None)`` draws its seed from torch's RNG (model.py: "so
    ``torch.manual_seed`` makes it reproducible"), as every ``nn.Module``'s default init does:
    the same torch seed gives the same weights, another gives other weights."""
    arch = _tiny_arch()
    torch.manual_seed(0)
    a = EfficientNet(arch).stem.conv.weight.detach().clone()
    torch.manual_seed(0)
    b = EfficientNet(arch).stem.conv.weight.detach().clone()
    torch.manual_seed(1)
    c = EfficientNet(arch).stem.conv.weight.detach().clone()
    assert torch.equal(a, b), "torch.manual_seed must make the default initialisation repeat"
    assert not torch.equal(a, c), "another torch seed must give another initialisation"


def test_constructors_pass_skip_stride_cnt_to_the_architecture() -> None:
    """``efficientnet_b0(skip_stride_cnt=n)`` is ``core.arch.efficientnet("b0", ..., n)`` (DESIGN.md
    §3: the paper's 32x32 runs use n = 3, feature maps 31 -> 16 -> 8), as for kEffNet."""
    for n in (0, 3):
        model = efficientnet_b0(num_classes=10, skip_stride_cnt=n, seed=0)
        assert model.arch == core_arch.efficientnet("b0", 10, skip_stride_cnt=n)
        model = kefficientnet_b0(num_classes=10, skip_stride_cnt=n, seed=0)
        assert model.arch == core_arch.kefficientnet("b0", 10, 16, skip_stride_cnt=n)


def test_a_built_model_picks_its_cuda_memory_format_by_family() -> None:
    """``channels_last=None``: NHWC on CPU for both families; on CUDA NHWC for EfficientNet and
    NCHW for kEffNet (model.py, docs/gpu.md). ``uses_channels_last`` only reads the device type,
    so the model's own choice is checked without a GPU; an explicit setting wins everywhere."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    eff_arch = core_arch.without_dropout(tiny_architecture("efficientnet", blocks=2))
    eff = EfficientNet(eff_arch, seed=0)
    keff = EfficientNet(_tiny_arch(), seed=0)
    assert eff.uses_channels_last(cpu) and keff.uses_channels_last(cpu)
    assert eff.uses_channels_last(cuda) and not keff.uses_channels_last(cuda)
    keff.channels_last = True
    assert keff.uses_channels_last(cuda)
    eff.channels_last = False
    assert not eff.uses_channels_last(cpu)


def test_export_grads_reports_zeros_for_parameters_without_a_gradient() -> None:
    """``export_grads`` (what ``loss_and_grads`` returns as "grads") gives, per its docstring,
    "zeros if unset": a parameter whose ``.grad`` is None (no backward yet, or cleared with
    ``zero_grad(set_to_none=True)``, torch's default) has a zero gradient in canonical layout,
    never its own values."""
    from gpconv.backends.torch.params import export_grads

    model = EfficientNet(_tiny_arch(), seed=0)
    grads = export_grads(model)
    shapes = {k: s for k, (s, trainable) in model.arch.param_shapes().items() if trainable}
    assert grads.keys() == shapes.keys()
    for name, g in grads.items():
        assert g.shape == tuple(shapes[name]), name
        assert not g.any(), f"{name}: a parameter without .grad must export a zero gradient"


def test_loading_values_beyond_float16_into_a_half_model_is_refused_not_made_inf() -> None:
    """A float16 model exchanges float16 arrays, so a value beyond float16's range (max 65504)
    would load as inf; ``load_params`` refuses it, naming the parameter, as it refuses float64
    values beyond float32 for a float32 model, and leaves the model unchanged."""
    model = EfficientNet(_tiny_arch(), seed=0).half()
    before = BACKEND.export_params(model)
    assert {v.dtype for v in before.values()} == {np.dtype(np.float16)}
    params = {k: v.astype(np.float32) for k, v in before.items()}
    params["predictions/bias"][1] = 1e5
    with pytest.raises(ValueError, match=r"would load as inf:\n  predictions/bias: .* float16"):
        BACKEND.load_params(model, params)
    after = BACKEND.export_params(model)
    assert all(np.array_equal(after[k], before[k]) for k in before), "a failed load changed it"


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_params_exchange_through_a_torch_compile_wrapper() -> None:
    """``torch.compile(model)`` returns a wrapper whose state_dict keys are prefixed
    ``_orig_mod.``; exporting from or loading into the wrapper must act on the model itself, as
    ``torch.compile``'s docs say the wrapper shares the module's parameters. Nothing is compiled
    here: the wrapper compiles on its first call."""
    from gpconv.backends.torch import export_params, load_params

    model = EfficientNet(_tiny_arch(), seed=0)
    compiled = torch.compile(model)
    other = init_params(model.arch, seed=7)
    load_params(compiled, other)
    exported = export_params(compiled)
    assert exported.keys() == other.keys()
    for name, value in other.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    stem = model.stem.conv.weight.detach().permute(2, 3, 1, 0).numpy()
    np.testing.assert_array_equal(stem, other["stem_conv/kernel"])
