"""The torch backend with the rest of the torch toolbox: ``torch.func`` transforms, forward-mode
AD, tracing or exporting at one size and running at another, autocast, bfloat16 and meta-device
models, torchvision's constructor options, a replaced head, empty batches and SWA's BN update.

Each test compares against plain autograd, finite differences, the eager model or the float64
reference — never against the path it exercises.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import torch.autograd.forward_ad as fwAD  # noqa: E402
from helpers import tiny_architecture, torch_devices  # noqa: E402
from torch.func import functional_call, grad, jvp, vmap  # noqa: E402

from gpconv.backends.torch import (  # noqa: E402
    DropConnect,
    EfficientNet,
    GroupedPointwise2d,
    Interleave,
    KerasBatchNorm2d,
    KerasConv2d,
    KPointwise,
    build,
    efficientnet_b0,
    export_params,
    kefficientnet_b0,
    load_params,
    update_bn,
)
from gpconv.core import arch as core_arch  # noqa: E402
from gpconv.core import network  # noqa: E402
from gpconv.core.pointwise import KPointwiseSpec  # noqa: E402

ARCH = core_arch.without_dropout(core_arch.kefficientnet("b0", 10, 16, skip_stride_cnt=3))


def _stateless_loss(model: torch.nn.Module):
    buffers = dict(model.named_buffers())
    return lambda params, x: functional_call(model, (params, buffers), (x,)).sum()


@pytest.mark.parametrize("channels_last", [None, False], ids=["default", "nchw"])
def test_torch_func_grad_and_per_sample_grads_match_autograd(channels_last):
    """``torch.func.grad`` and ``vmap(grad)`` used to fail on the custom autograd Functions (no
    ``setup_context``) and on the channels_last conversion (not allowed inside ``vmap``)."""
    model = EfficientNet(ARCH, seed=0, channels_last=channels_last).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = _stateless_loss(model)

    model(x).sum().backward()
    g = grad(loss)(params, x)
    per_sample = vmap(grad(lambda p, xi: loss(p, xi[None])), in_dims=(None, 0))(params, x)
    for name, p in model.named_parameters():
        torch.testing.assert_close(g[name], p.grad, msg=f"torch.func.grad of {name}")
        torch.testing.assert_close(per_sample[name].sum(0), p.grad, msg=f"vmap(grad) of {name}")


def test_per_sample_grads_of_a_training_model_after_replacing_its_batch_norms():
    """torch's recipe for ``vmap`` over a training-mode model, ``replace_all_batch_norm_modules_``
    (batch statistics, no running ones), does nothing to ``KerasBatchNorm2d``: gpconv's does the
    same for them. Each sample is then normalised with its own statistics, as a one-image batch
    is, and the running statistics are gone, so nothing is updated."""
    from gpconv.backends.torch import replace_all_batch_norm_modules_

    arch = tiny_architecture("kefficientnet", 10, skip_stride_cnt=1, blocks=3)
    model = EfficientNet(core_arch.without_dropout(arch), seed=0).double().train()
    torch.func.replace_all_batch_norm_modules_(model)
    assert all(m.running_mean is not None for m in model.modules() if hasattr(m, "running_mean"))
    assert replace_all_batch_norm_modules_(model) is model
    assert not any(b is not None for _, b in model.named_buffers())
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = _stateless_loss(model)
    per_sample = vmap(grad(lambda p, xi: loss(p, xi[None])), in_dims=(None, 0))(params, x)
    for i in range(len(x)):
        one = grad(loss)(params, x[i : i + 1])
        for name in params:
            torch.testing.assert_close(per_sample[name][i], one[name], msg=f"sample {i} {name}")
    model.eval()  # batch statistics in every mode, as nn.BatchNorm2d(track_running_stats=False)
    torch.testing.assert_close(model(x[:2]), model.train()(x[:2]))
    with pytest.raises(ValueError, match="without \\(replace_all_batch_norm_modules_"):
        update_bn([x], model)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_forward_mode_ad_matches_finite_differences():
    model = EfficientNet(ARCH, seed=0).double().train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=gen)
    v = torch.randn(x.shape, dtype=torch.float64, generator=gen)

    def f(x):  # a fresh copy per call: training mode updates the moving statistics
        return copy.deepcopy(model)(x)

    _, tangent = jvp(f, (x,), (v,))
    eps = 1e-6
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, rtol=1e-5, atol=1e-7)
    with fwAD.dual_level():
        dual = copy.deepcopy(model)(fwAD.make_dual(x, v))
        torch.testing.assert_close(fwAD.unpack_dual(dual).tangent, tangent)


@pytest.mark.parametrize(("traced", "run"), [(33, 32), (32, 33)])
def test_a_trace_follows_the_input_size_through_the_keras_padding(traced, run):
    """Stride-2 'correct' padding is symmetric for odd sizes and not for even ones; a trace taken
    at an odd size used to keep the symmetric branch and be wrong at even sizes."""
    model = efficientnet_b0(num_classes=10, seed=0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about Python-side shape checks
        traced_model = torch.jit.trace(model, torch.randn(1, 3, traced, traced))
    x = torch.randn(2, 3, run, run)
    with torch.no_grad():
        torch.testing.assert_close(traced_model(x), model(x))


@pytest.mark.parametrize(
    "impl, batch, dynamic_batch",
    [
        ("auto", 2, True),
        ("matmul", 1, False),
        pytest.param("matmul", 2, True, marks=pytest.mark.slow),
        pytest.param("einsum", 2, False, marks=pytest.mark.slow),
    ],
)
def test_torch_export_with_dynamic_image_size_follows_the_keras_padding(impl, batch, dynamic_batch):
    """``torch.export`` with dynamic H/W used to fail: choosing the conv's own (symmetric)
    padding for odd sizes branched on the size's parity, which export must not pin. The batched
    matmul (CUDA's default) and einsum convs merged H and W into one axis, which torch.export
    cannot trace for a dynamic size ("Constraints violated"); they now export as the grouped
    conv. Five blocks of B0 have each of its layer kinds (grouped 1x1 with and without interleave
    and second conv, the padded stride-1 stem, 3x3 and 5x5 depthwise convs of stride 1 and 2,
    SE, residuals) and export in a fraction of B0's time."""
    arch = tiny_architecture("kefficientnet", num_classes=10, skip_stride_cnt=1, blocks=5)
    model = build(arch, seed=0, impl=impl).eval()
    side = torch.export.Dim("side", min=16, max=256)
    dims = {0: torch.export.Dim("batch", max=64)} if dynamic_batch else {}
    exported = torch.export.export(
        model, (torch.randn(batch, 3, 33, 33),), dynamic_shapes={"x": dims | {2: side, 3: side}}
    ).module()
    runs = [(1, 32), (3, 33), (2, 48)] if dynamic_batch else [(batch, 32), (batch, 47)]
    for n, size in runs:
        x = torch.randn(n, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x))


@pytest.mark.parametrize("impl", ["matmul", "auto"])
def test_kpointwise_compiles_with_aot_autograd(impl):
    """torch.compile's fake tensors take ``torch.channel_shuffle`` of a channels_last tensor as
    contiguous, while the CPU kernel keeps channels_last: the matmul conv after the interleave
    was traced for NCHW, and its reshape, recorded as a view, failed at run time ("view size is
    not compatible with input tensor's size and stride") under ``backend="aot_eager"``, which
    runs the traced aten ops (so did a whole kEffNet with impl="matmul"). impl="einsum" still
    fails there in backward: fake batch norm keeps einsum's strides, torch's kernel does not."""
    spec = KPointwiseSpec(32, 16, 2, bn=True, activation="swish", bias=False)
    eager = KPointwise(spec, impl).train()
    layer = copy.deepcopy(eager)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(2, 16, 5, 7, generator=gen)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.backward(dy)
    y_eager = eager(x)
    y_eager.backward(dy)
    torch.testing.assert_close(y, y_eager, msg=f"compiled output [impl={impl}]")
    for (name, p), q in zip(layer.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=f"compiled grad of {name} [impl={impl}]")
    for (name, b), c in zip(layer.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(b, c, msg=f"compiled {name} after a step [impl={impl}]")


def test_wide_depthwise_conv_under_cpu_autocast_has_a_gradient():
    """The 5×5 depthwise slab gradient used to fail under autocast on float32 inputs."""
    conv = KerasConv2d(24, 24, 5, 1, "same", groups=24)
    x = torch.randn(2, 24, 9, 11, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().sum().backward()
    ref = torch.nn.functional.conv2d(
        x.detach().bfloat16(), conv.weight.detach().bfloat16(), None, 1, 2, 1, 24
    )
    torch.testing.assert_close(y, ref)
    assert x.grad.shape == x.shape and conv.weight.grad.shape == conv.weight.shape


def test_bfloat16_models_exchange_float32_params():
    model = kefficientnet_b0(num_classes=10, seed=0)
    params = export_params(model)
    low = copy.deepcopy(model).to(torch.bfloat16)
    exported = export_params(low)
    assert {v.dtype for v in exported.values()} == {np.dtype(np.float32)}
    for name, value in exported.items():  # bfloat16 keeps 8 bits of mantissa
        np.testing.assert_allclose(value, params[name], rtol=2**-8, atol=0, err_msg=name)
    load_params(low, params)
    np.testing.assert_array_equal(
        export_params(low)["stem_conv/kernel"], exported["stem_conv/kernel"]
    )


def test_loading_float64_values_beyond_float32_is_refused_not_made_inf():
    model = kefficientnet_b0(num_classes=10, seed=0)
    before = export_params(model)
    params = {k: v.astype(np.float64) for k, v in before.items()}
    params["predictions/bias"][3] = 1e300
    with pytest.raises(
        ValueError, match=r"would load as inf:\n  predictions/bias: .* overflows float32"
    ):
        load_params(model, params)
    after = export_params(model)
    assert all(np.array_equal(after[k], before[k]) for k in before), "a failed load changed it"


def test_a_model_given_a_numpy_array_says_to_convert_it():
    """It raised AttributeError: 'numpy.ndarray' object has no attribute 'dim'."""
    model = kefficientnet_b0(num_classes=10, skip_stride_cnt=3, seed=0)
    with pytest.raises(TypeError, match="x to be a torch.Tensor .*received ndarray"):
        model(np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize("impl", ["conv", "matmul", "einsum"])
def test_grouped_pointwise_refuses_another_channel_count_in_every_impl(impl):
    """matmul/einsum failed inside a reshape (or, with a compatible count, ran as another G)."""
    layer = GroupedPointwise2d(8, 8, groups=2, impl=impl)
    for x in (torch.ones(1, 6, 2, 2), torch.ones(8, 2, 2), torch.ones(1, 16, 2, 2)):
        with pytest.raises(ValueError, match=r"Expected x of shape \(N, 8, H, W\)"):
            layer(x)


@pytest.mark.parametrize("groups", [2.0, True, 0])
def test_grouped_pointwise_groups_must_be_a_positive_int(groups):
    with pytest.raises((TypeError, ValueError), match="groups"):
        GroupedPointwise2d(8, 8, groups=groups)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: GroupedPointwise2d(8, 6, groups=4), ValueError, "groups=4 to divide cout=6"),
        (lambda: GroupedPointwise2d(6, 8, groups=4), ValueError, "groups=4 to divide cin=6"),
        (lambda: KPointwise((32, 16, 2)), TypeError, "spec to be a .*KPointwiseSpec.*tuple"),
        (lambda: KerasBatchNorm2d(4, momentum=1.5), ValueError, "0 <= momentum <= 1.*=1.5"),
        (lambda: KerasBatchNorm2d(4, momentum=-0.1), ValueError, "0 <= momentum <= 1.*=-0.1"),
        (lambda: KerasBatchNorm2d(4, eps=-1e-3), ValueError, "eps >= 0 .*received eps=-0.001"),
        (lambda: KerasBatchNorm2d(0), ValueError, "num_features >= 1, received num_features=0"),
        (lambda: KerasBatchNorm2d(4.0), TypeError, "num_features to be an int, received float"),
    ],
)
def test_bad_layer_arguments_are_named(make, error, message):
    """These gave torch's messages without the numbers (the divisibility), an AttributeError
    (a tuple spec), or were accepted: momentum 1.5 makes every moving statistic grow
    geometrically, and KerasBatchNorm2d(0) built a layer no input fits."""
    with pytest.raises(error, match=message):
        make()


def test_keras_batchnorm_momentum_bounds_keep_or_replace_the_statistics():
    """Momentum 1 freezes the moving statistics and 0 replaces them by the batch's (biased
    variance, Keras's rule), so both ends of the accepted range stay valid."""
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    frozen, replaced = KerasBatchNorm2d(3, momentum=1).train(), KerasBatchNorm2d(3, momentum=0)
    frozen(x), replaced.train()(x)
    assert torch.equal(frozen.running_mean, torch.zeros(3))
    assert torch.equal(frozen.running_var, torch.ones(3))
    torch.testing.assert_close(replaced.running_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(replaced.running_var, x.var(dim=(0, 2, 3), correction=0))


def test_models_build_on_the_meta_device():
    with torch.device("meta"):
        for seed in (None, 0):
            model = efficientnet_b0(num_classes=10, seed=seed)
            assert model.stem.conv.weight.is_meta


def test_torchvision_constructor_options():
    model = efficientnet_b0(num_classes=10, dropout=0.5, stochastic_depth_prob=0.1, seed=0)
    assert model.head.dropout.p == 0.5 == model.arch.head.dropout
    n = len(model.arch.blocks)
    rates = [b.drop.rate for b in model.blocks.values() if b.drop is not None]
    expected = [0.1 * i / n for i, b in enumerate(model.arch.blocks) if b.residual]
    np.testing.assert_allclose(rates, expected)
    default = core_arch.efficientnet("b0", 10)
    assert efficientnet_b0(num_classes=10, seed=0).arch == default
    # torchvision's keyword-only pair; without weights the download bar has nothing to show.
    assert efficientnet_b0(num_classes=10, weights=None, progress=False, seed=0).arch == default
    with pytest.raises(TypeError, match="progress to be True or False, received str 'no'"):
        efficientnet_b0(progress="no")
    with pytest.raises(ValueError, match="weights=None.*received weights='IMAGENET1K_V1'"):
        efficientnet_b0(weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="0 <= dropout < 1, received dropout=1.5"):
        efficientnet_b0(dropout=1.5)
    with pytest.raises(TypeError, match="stochastic_depth_prob to be a real number"):
        kefficientnet_b0(stochastic_depth_prob="high")


def test_drop_connect_checks_its_rate_and_draws_bfloat16_masks_at_that_rate():
    with pytest.raises(ValueError, match="0 <= rate < 1, received rate=1.0"):
        DropConnect(1.0)
    with pytest.raises(TypeError, match="rate to be a real number"):
        DropConnect("a")
    torch.manual_seed(0)
    drop = DropConnect(0.0125).train()
    default = torch.get_default_dtype()
    for dtype in (torch.float32, torch.bfloat16):  # also with bfloat16 as the default dtype
        torch.set_default_dtype(dtype)
        try:
            y = drop(torch.ones(400_000, 1, 1, 1, dtype=torch.bfloat16))
        finally:
            torch.set_default_dtype(default)
        dropped = (y == 0).double().mean().item()
        # 4 standard deviations of a binomial proportion; bfloat16 uniforms used to give 0.0143.
        assert abs(dropped - 0.0125) < 4 * (0.0125 * 0.9875 / 400_000) ** 0.5, (dtype, dropped)


def test_a_replaced_head_is_refused_before_anything_is_copied():
    model = efficientnet_b0(num_classes=10, seed=0)
    other = export_params(efficientnet_b0(num_classes=10, seed=1))
    model.head.predictions = torch.nn.Linear(1280, 5)
    stem = model.stem.conv.weight.detach().clone()
    with pytest.raises(ValueError, match=r"head.predictions.weight .*\(5, 1280\).*\(10, 1280\)"):
        load_params(model, other)
    assert torch.equal(model.stem.conv.weight, stem)
    with pytest.raises(ValueError, match="no longer matches model.arch"):
        export_params(model)


def test_a_head_replaced_by_an_mlp_trains_and_still_checks_the_input_dtype():
    """Swapping the classifier for an ``nn.Sequential`` (no ``.weight``) used to fail every
    forward with AttributeError: the input dtype check read ``head.predictions.weight``."""
    model = kefficientnet_b0(num_classes=10, skip_stride_cnt=3, seed=0).eval()
    torch.manual_seed(0)
    model.head.predictions = torch.nn.Sequential(
        torch.nn.Linear(1280, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_intermediates(x)["top"].mean(dim=(2, 3))  # global average pool
        torch.testing.assert_close(model(x), model.head.predictions(features))
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 4])).backward()
    assert model.head.predictions[0].weight.grad is not None
    with pytest.raises(TypeError, match=r"Expected x.dtype=torch.float32 .*received x.dtype="):
        model(x.double())


def test_bad_parameter_containers_and_tensors():
    model = efficientnet_b0(num_classes=10, seed=0)
    params = export_params(model)
    with pytest.raises(TypeError, match="params to be a mapping .*received list"):
        load_params(model, [1, 2])
    with pytest.raises(TypeError, match="'stem_conv/kernel' to be an array, received list"):
        load_params(model, {**params, "stem_conv/kernel": [[1.0, 2.0], [3.0]]})
    # Tensors that require grad, as model.state_dict(keep_vars=True) gives, load like arrays.
    tensors = {k: torch.tensor(v + 1, requires_grad=True) for k, v in params.items()}
    load_params(model, tensors)
    np.testing.assert_array_equal(
        export_params(model)["stem_bn/gamma"], params["stem_bn/gamma"] + 1
    )
    with pytest.raises(TypeError, match="Architecture .*received str 'kefficientnet-b0'"):
        build("kefficientnet-b0")
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\), received x.shape=\(4,\)"):
        Interleave(2)(torch.arange(4.0))


def test_an_empty_training_batch_keeps_the_moving_statistics():
    """``nn.BatchNorm2d`` returns an empty batch unchanged; ours used to turn every moving
    statistic into NaN, after which the model gave NaN in eval."""
    bn = KerasBatchNorm2d(4).train()
    y = bn(torch.randn(0, 4, 3, 3, requires_grad=True))
    assert y.shape == (0, 4, 3, 3)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(
        bn.running_var, torch.ones(4)
    )

    model = EfficientNet(ARCH, seed=0).train()
    before = export_params(model)
    assert model(torch.randn(0, 3, 32, 32)).shape == (0, 10)
    for name, value in export_params(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    # The reference agrees: no data, no update.
    _, cache = network.forward(ARCH, before, np.zeros((0, 32, 32, 3), np.float32), training=True)
    assert cache["moving_stats"], "training mode reports moving statistics"
    for name, value in cache["moving_stats"].items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"reference {name}")


def test_torchs_sync_batchnorm_conversion_leaves_keras_batch_norms_and_gpconvs_converts_them():
    """README: ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts only torch's ``_BatchNorm``
    subclasses, so it returns the model with every ``KerasBatchNorm2d`` still per-process;
    ``torch_syncbn.convert_sync_batchnorm`` turns each into a ``SyncKerasBatchNorm2d``."""
    from gpconv.train.frameworks.torch_syncbn import SyncKerasBatchNorm2d, convert_sync_batchnorm

    model = kefficientnet_b0(num_classes=10, skip_stride_cnt=3, seed=0)
    keras_bns = [m for m in model.modules() if isinstance(m, KerasBatchNorm2d)]
    assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is model
    assert [m for m in model.modules() if isinstance(m, KerasBatchNorm2d)] == keras_bns
    assert not any(isinstance(m, torch.nn.SyncBatchNorm | SyncKerasBatchNorm2d) for m in keras_bns)
    assert convert_sync_batchnorm(model) == len(keras_bns) == 65
    assert all(type(m) is SyncKerasBatchNorm2d for m in keras_bns)


@pytest.mark.parametrize("device", torch_devices())
def test_update_bn_sets_running_statistics_to_the_average_of_each_batchs(device):
    """SWA's BN update. ``torch.optim.swa_utils.update_bn`` looks for ``nn.BatchNorm`` modules
    and leaves ``KerasBatchNorm2d`` as it was; gpconv's ``update_bn`` must leave every running
    mean and variance at the average over the batches of that BN's batch statistics, which the
    float64 reference gives for each batch alone (``core.network.forward`` in training mode
    moves them by 0.01 of the way). Five blocks of B0 have a batch norm in each place B0 has
    one (stem, expand, depthwise, grouped 1x1 with a second conv, project, top), and the
    reference runs them in a fraction of B0's time."""
    arch = core_arch.without_dropout(
        tiny_architecture("kefficientnet", num_classes=10, skip_stride_cnt=1, blocks=5)
    )
    model = EfficientNet(arch, seed=0).double().eval()
    params = export_params(model)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=gen) for _ in range(3)]
    loader = [batches[0], (batches[1], torch.tensor([0, 1, 2])), [batches[2]]]

    model.to(device)
    torch.optim.swa_utils.update_bn(loader, model, device)
    assert all(np.array_equal(export_params(model)[k], v) for k, v in params.items())

    update_bn(loader, model, device)  # CPU batches, moved to the model's device as torch's
    assert not model.training, "update_bn must restore the model's mode"
    momenta = {m.momentum for m in model.modules() if isinstance(m, KerasBatchNorm2d)}
    assert momenta == {0.99}, f"momenta not restored: {momenta}"
    got = export_params(model)
    per_batch = []
    for x in batches:
        nhwc = x.permute(0, 2, 3, 1).numpy()
        _, cache = network.forward(arch, params, nhwc, training=True)
        per_batch.append(
            {k: (v - 0.99 * params[k]) / 0.01 for k, v in cache["moving_stats"].items()}
        )
    assert per_batch[0].keys() == {k for k in params if "moving" in k}
    for k in per_batch[0]:
        expected = np.mean([stats[k] for stats in per_batch], axis=0)
        np.testing.assert_allclose(got[k], expected, rtol=1e-8, atol=1e-10, err_msg=k)


def _running_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers() if k.endswith(("_mean", "_var"))}


@pytest.mark.parametrize("fault", ["bad batch", "empty loader", "interrupted"])
def test_update_bn_leaves_the_model_as_it_was_when_it_fails(fault):
    """A failure part-way through ``update_bn`` (a batch the model refuses, a loader that yields
    nothing, Ctrl-C) must not leave the running statistics reset to 0/1 or averaged over the
    batches seen so far: that would silently lose the trained model's statistics. The running
    statistics, each BN's momentum and every module's train/eval mode are as before the call.
    The model mixes modes (eval, but one BN left training) so that restoring only the top-level
    mode would show."""
    arch = tiny_architecture("kefficientnet", num_classes=3, blocks=2, top_filters=16)
    model = EfficientNet(arch, seed=0).eval()
    # Running statistics other than the 0/1 that update_bn resets them to first.
    for i, m in enumerate(m for m in model.modules() if isinstance(m, KerasBatchNorm2d)):
        m.running_mean.fill_(0.5 + i)
        m.running_var.fill_(2.0 + i)
    model.stem.bn.train()
    modes = {name: m.training for name, m in model.named_modules()}
    before = _running_stats(model)
    good = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def loader():
        if fault == "empty loader":
            return
        yield good
        if fault == "interrupted":
            raise KeyboardInterrupt
        yield good[:, :2]  # two channels: the model refuses it

    expected = {
        "bad batch": pytest.raises(ValueError, match=r"x.shape\[1\] == 3"),
        "empty loader": pytest.raises(ValueError, match="loader.*no batch"),
        "interrupted": pytest.raises(KeyboardInterrupt),
    }[fault]
    with expected:
        update_bn(loader(), model)
    after = _running_stats(model)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed by a failed update_bn ({fault})"
    assert {m.momentum for m in model.modules() if isinstance(m, KerasBatchNorm2d)} == {0.99}
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_update_bn_keeps_each_modules_mode():
    """``update_bn`` runs the model in training mode, then puts every module back in its own mode:
    a batch norm kept in eval mode inside a training model (frozen for fine-tuning) must not come
    back in training mode, where the next step would move its statistics."""
    arch = tiny_architecture("kefficientnet", num_classes=3, blocks=2, top_filters=16)
    model = EfficientNet(arch, seed=0).train()
    model.stem.bn.eval()
    update_bn([torch.randn(2, 3, 16, 16)], model)
    assert model.training and not model.stem.bn.training
