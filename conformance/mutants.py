"""Deliberately broken backends: each re-creates one porting trap so the tests can prove that
``gpconv check`` catches it and names the right layer. They are the reference with one piece
patched, e.g. ``gpconv check --backend gpconv.conformance.mutants:BN_EPS_1E5``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from ..backends.numpy_reference import NumpyBackend, ReferenceModel
from ..core import network, pointwise
from ..core.arch import COEFFICIENTS, Architecture, without_dropout
from ..core.ops import activations, conv, elementwise, normalization, pooling

Patch = tuple[Any, str, Any]  # (object, attribute, replacement)


class MutantBackend(NumpyBackend):
    """The reference with ``patches`` applied around every computation, and optionally a changed
    architecture or arithmetic dtype."""

    def __init__(
        self,
        name: str,
        patches: Callable[[], list[Patch]] = list,
        arch_edit: Callable[[Architecture], Architecture] | None = None,
        dtype: Any = np.float64,
    ):
        self.name = name
        self._patches = patches
        self._arch_edit = arch_edit
        self.dtype = dtype

    @contextlib.contextmanager
    def _broken(self) -> Iterator[None]:
        saved = []
        try:
            for obj, attr, value in self._patches():
                saved.append((obj, attr, getattr(obj, attr)))
                setattr(obj, attr, value)
            yield
        finally:
            for obj, attr, value in reversed(saved):
                setattr(obj, attr, value)

    def build(self, arch: Architecture) -> ReferenceModel:
        return super().build(self._arch_edit(arch) if self._arch_edit else arch)

    def forward(self, *a: Any, **k: Any) -> Any:
        with self._broken():
            return super().forward(*a, **k)

    def loss_and_grads(self, *a: Any, **k: Any) -> Any:
        with self._broken():
            return super().loss_and_grads(*a, **k)

    def kpointwise(self, *a: Any, **k: Any) -> Any:
        with self._broken():
            return super().kpointwise(*a, **k)

    def interleave(self, *a: Any, **k: Any) -> Any:
        with self._broken():
            return pointwise.interleave(np.asarray(a[0]), *a[1:], **k)


class AliasedExportBackend(NumpyBackend):
    """Loads parameters into the model's existing arrays, as frameworks do, and exports those
    arrays themselves: the ``tensor.numpy()`` trap, where an export changes as the model trains."""

    name = "mutant-aliased-export"

    def load_params(self, model: ReferenceModel, params: Any) -> None:
        if not model.params:
            return super().load_params(model, params)
        for k, v in params.items():
            np.copyto(model.params[k], v)

    def export_params(self, model: ReferenceModel) -> dict[str, np.ndarray]:
        return dict(model.params)


class TrainedInPlaceBackend(NumpyBackend):
    """Rebinds its arrays on load (so a load leaves an export alone), but a training step updates
    the moving statistics in place, as BN layers do, and exports view those arrays."""

    name = "mutant-trained-in-place"

    def load_params(self, model: ReferenceModel, params: Any) -> None:
        super().load_params(model, {k: np.array(v) for k, v in params.items()})  # owns its memory

    def loss_and_grads(self, model: ReferenceModel, x: Any, labels: Any, training: bool = True):
        before = dict(model.params)
        out = super().loss_and_grads(model, x, labels, training)  # rebinds the moving stats
        for k, array in before.items():
            if model.params[k] is not array:  # write them into the old arrays instead
                np.copyto(array, model.params[k])
                model.params[k] = array
        return out

    def export_params(self, model: ReferenceModel) -> dict[str, np.ndarray]:
        return dict(model.params)


class InferenceUpdatesStatsBackend(NumpyBackend):
    """Updates the BN moving statistics in an inference forward too, as a batch norm whose update
    ignores the training flag does: evaluating a model changes it."""

    name = "mutant-inference-updates-stats"

    def forward(self, model: ReferenceModel, x: Any, training: bool = False) -> Any:
        out = super().forward(model, x, training)
        if not training:
            x = np.asarray(x, self.dtype)
            _, cache = network.forward(without_dropout(model.arch), model.params, x, training=True)
            model.params.update(cache["moving_stats"])
        return out


class AlwaysTrainingBackend(NumpyBackend):
    """``loss_and_grads`` in training mode whatever ``training`` says (a hard-coded
    ``model.train()``): fine-tuning with frozen batch norms would train them."""

    name = "mutant-always-training"

    def loss_and_grads(self, model: ReferenceModel, x: Any, labels: Any, training: bool = True):
        return super().loss_and_grads(model, x, labels, training=True)


class TracedBatchLossBackend(NumpyBackend):
    """Divides the summed loss by the batch size its step was first traced with (2, the
    checks' batch) instead of the batch's own: loss and gradients ``N / 2`` times too large for
    any other batch."""

    name = "mutant-traced-batch-loss"

    def loss_and_grads(self, model: ReferenceModel, x: Any, labels: Any, training: bool = True):
        out = super().loss_and_grads(model, x, labels, training)
        scale = np.shape(x)[0] / 2
        grads = {k: v * scale for k, v in out["grads"].items()}
        return {**out, "loss": out["loss"] * scale, "dx": out["dx"] * scale, "grads": grads}


class ChannelsFirstTopBackend(NumpyBackend):
    """Returns the top conv's intermediate channels-first, as an adapter of an NCHW framework
    that permutes the blocks' outputs back but forgets the top's: the logits are right."""

    name = "mutant-channels-first-top"

    def forward(self, model: ReferenceModel, x: Any, training: bool = False) -> Any:
        out = super().forward(model, x, training)
        return {**out, "top": np.moveaxis(out["top"], -1, 1)}


def _swish_beta() -> list[Patch]:
    # Swish as x * sigmoid(1.5 x) (a port with a beta, as Ramachandran et al.'s swish_beta, where
    # Keras has beta 1), with its own consistent backward; the sigmoid ops stay right.
    beta = 1.5

    def forward(x):
        s = activations.Sigmoid.forward(beta * x)[0]
        return x * s, {"x": x, "s": s}

    def backward(cache, dy):
        x, s = cache["x"], cache["s"]
        return dy * s * (1.0 + beta * x * (1.0 - s)), {}

    return [
        (activations.Swish, "forward", staticmethod(forward)),
        (activations.Swish, "backward", staticmethod(backward)),
    ]


def _transposed_interleave() -> list[Patch]:
    return [(pointwise, "interleave", pointwise.deinterleave)]


def _bn_eps_1e5() -> list[Patch]:
    original = normalization.BatchNorm.forward

    def forward(x, gamma, beta, mean, var, training=False, eps=1e-3):
        return original(x, gamma, beta, mean, var, training=training, eps=1e-5)

    return [(normalization.BatchNorm, "forward", staticmethod(forward))]


def _unbiased_running_variance() -> list[Patch]:
    original = normalization.BatchNorm.updated_moving_stats

    def updated(moving_mean, moving_variance, cache, momentum=normalization.MOMENTUM):
        m = cache["xhat"].size // cache["xhat"].shape[-1]
        unbiased = dict(cache, batch_variance=cache["batch_variance"] * m / (m - 1))
        return original(moving_mean, moving_variance, unbiased, momentum)

    return [(normalization.BatchNorm, "updated_moving_stats", staticmethod(updated))]


def _pytorch_momentum() -> list[Patch]:
    original = normalization.BatchNorm.updated_moving_stats

    def updated(moving_mean, moving_variance, cache, momentum=normalization.MOMENTUM):
        # PyTorch's momentum=0.1 weights the *new* batch statistic: Keras momentum 0.9.
        return original(moving_mean, moving_variance, cache, 0.9)

    return [(normalization.BatchNorm, "updated_moving_stats", staticmethod(updated))]


def _symmetric_padding() -> list[Patch]:
    original = conv.pad_amounts

    def pad_amounts(size, kernel, stride, padding):
        if padding == "correct":  # PyTorch-style padding=k//2 instead of TF's correct_pad
            return (kernel // 2, kernel // 2)
        return original(size, kernel, stride, padding)

    return [(conv, "pad_amounts", pad_amounts)]


def _symmetric_depthwise_3x3() -> list[Patch]:
    # PyTorch's padding=1 in the stride-2 3x3 depthwise convs only; the stem (a Conv2D) and the
    # 5x5 depthwise convs keep TF's correct_pad. On an odd size the two agree: (1, 1).
    pad_amounts = conv.pad_amounts
    depthwise = conv.DepthwiseConv2D.forward

    def padded(size, kernel, stride, padding):
        if padding == "symmetric":
            return (kernel // 2, kernel // 2)
        return pad_amounts(size, kernel, stride, padding)

    def forward(x, kernel, stride=1, padding="same"):
        if padding == "correct" and stride == 2 and kernel.shape[0] == 3:
            padding = "symmetric"
        return depthwise(x, kernel, stride, padding)

    return [(conv, "pad_amounts", padded), (conv.DepthwiseConv2D, "forward", staticmethod(forward))]


def _depthwise_bn_batch_statistics() -> list[Patch]:
    # The depthwise conv's BN normalises with the batch's statistics in inference too (as a BN
    # called with training=True, or without running statistics, does), and updates nothing;
    # the stem's BN and those inside kPointwise stay right.
    bn_swish = network._bn_swish

    def batch_statistics(params, prefix, y, training, stats):
        if training or prefix == "stem_bn":
            return bn_swish(params, prefix, y, training, stats)
        return bn_swish(params, prefix, y, True, {})  # the update goes nowhere

    return [(network, "_bn_swish", batch_statistics)]


def _drop_connect_in_inference() -> list[Patch]:
    # Drop-connect whatever the mode: a port that applies it without looking at ``training``.
    block_forward = network._block_forward

    def forward(b, params, x, training, stats, masks, rng):
        y, cache = block_forward(b, params, x, training, stats, masks, rng)
        if training or not (b.residual and b.drop_rate > 0):
            return y, cache
        keep = network._dropout_mask(np, y, (y.shape[0], 1, 1, 1), b.drop_rate, "", None, rng)
        return x + (y - x) * keep / (1.0 - b.drop_rate), cache

    return [(network, "_block_forward", forward)]


def _squeeze_by_max() -> list[Patch]:
    # Squeeze-excite's squeeze as a global max pool instead of the average; the head's pooling
    # (keepdims=False) stays an average.
    average = pooling.GlobalAveragePool

    class MaxSqueeze(average):
        @staticmethod
        def forward(x, keepdims=False):
            if not keepdims:
                return average.forward(x, keepdims)
            y = np.max(x, axis=(1, 2), keepdims=True)
            return y, {"at_max": x == y, "y_shape": tuple(y.shape)}

        @staticmethod
        def backward(cache, dy):
            if "at_max" not in cache:
                return average.backward(cache, dy)
            at_max = cache["at_max"]
            return at_max * dy / np.sum(at_max, axis=(1, 2), keepdims=True), {}

    return [(network, "GlobalAveragePool", MaxSqueeze)]


def _top_bn_eps_1e5() -> list[Patch]:
    # PyTorch's default BN epsilon (1e-5) in the top conv's BN only, as in a port that builds
    # the head from its own layers; the BN backward reads the forward's cache.
    layer_forward = network._pointwise

    def forward(params, name, spec, x, training, stats):
        if name != "top":
            return layer_forward(params, name, spec, x, training, stats)
        with MutantBackend("", _bn_eps_1e5)._broken():
            return layer_forward(params, name, spec, x, training, stats)

    return [(network, "_pointwise", forward)]


def _depthwise_bn_eps_1e5() -> list[Patch]:
    # PyTorch's default BN epsilon (1e-5) in the depthwise convs' BNs only, as in a port that
    # takes kPointwise (and its BNs) from the library but builds the block's BN itself; the
    # stem's BN and those inside kPointwise stay right.
    bn_swish = network._bn_swish

    def forward(params, prefix, y, training, stats):
        if prefix == "stem_bn":
            return bn_swish(params, prefix, y, training, stats)
        with MutantBackend("", _bn_eps_1e5)._broken():
            return bn_swish(params, prefix, y, training, stats)

    return [(network, "_bn_swish", forward)]


def _kpointwise_bn_eps_1e5() -> list[Patch]:
    # PyTorch's default BN epsilon (1e-5) in every BN inside kPointwise (the top's too), as in a
    # port whose kPointwise layer builds its BNs from torch.nn.BatchNorm2d; the stem's and the
    # depthwise convs' BNs stay right.
    layer_forward = network._pointwise

    def forward(params, name, spec, x, training, stats):
        with MutantBackend("", _bn_eps_1e5)._broken():
            return layer_forward(params, name, spec, x, training, stats)

    return [(network, "_pointwise", forward)]


def _softmax_output(in_training: bool = True, log: bool = False) -> list[Patch]:
    # The model ends in a softmax (Keras applications' classifier_activation="softmax"), or a
    # log-softmax (a PyTorch model trained with NLLLoss), in both modes or in inference only
    # (``if not self.training``); the loss then takes those values for logits. Its backward
    # goes through the softmax, as autograd's would.
    head_forward, head_backward = network._head_forward, network._head_backward

    def forward(h, params, x, training, stats, masks, rng):
        y, c = head_forward(h, params, x, training, stats, masks, rng)
        if training and not in_training:
            return y, c
        shifted = y - np.max(y, axis=1, keepdims=True)
        log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
        c["softmax"] = p = np.exp(log_p)
        return (log_p if log else p), c

    def backward(c, dy, grads):
        if "softmax" in c:
            p = c["softmax"]
            if log:  # d log_softmax: dy - p * sum(dy)
                dy = dy - p * np.sum(dy, axis=1, keepdims=True)
            else:  # d softmax: p * (dy - sum(p * dy))
                dy = p * (dy - np.sum(p * dy, axis=1, keepdims=True))
        return head_backward(c, dy, grads)

    return [(network, "_head_forward", forward), (network, "_head_backward", backward)]


def _residual_on_interleaved() -> list[Patch]:
    original = pointwise.KPointwise.forward

    def forward(spec, params, x, training=False):
        out, cache = original(spec, params, x, training)
        if spec.has_second_conv and spec.interleaves:
            y1 = out - _second_branch(spec, params, x, training)
            out = out - y1 + pointwise.interleave(y1, spec.groups)
        return out, cache

    return [(pointwise.KPointwise, "forward", staticmethod(forward))]


def _second_branch(spec, params, x, training):
    """``y2`` of a kPointwise: recomputed so the mutant can swap which tensor the residual adds."""
    y1, _ = pointwise._conv_bn_act(spec, params, x, "conv", "bn", training)
    y2, _ = pointwise._conv_bn_act(
        spec, params, pointwise.interleave(y1, spec.groups), "conv2", "bn2", training
    )
    return y2


def _drop_connect_per_batch() -> list[Patch]:
    # One keep-or-drop draw for the whole batch, as a port that builds the mask from the batch
    # tensor's rank rather than its batch size would do.
    drawn = network._dropout_mask

    def per_batch(xp, like, shape, rate, site, masks, rng):
        if not site.endswith("_drop"):
            return drawn(xp, like, shape, rate, site, masks, rng)
        one = drawn(xp, like, (1,) * len(shape), rate, site, None, rng)
        return xp.broadcast_to(one, shape)

    return [(network, "_dropout_mask", per_batch)]


def _drop_connect_unscaled() -> list[Patch]:
    # The mask applied, the kept samples not scaled by 1 / (1 - rate).
    def forward(x, mask, rate):
        y, cache = dropout(x, mask, rate)
        return (y if mask is None or rate == 0.0 else x * mask), cache

    dropout = elementwise.Dropout.forward
    return [(elementwise.Dropout, "forward", staticmethod(forward))]


def _drop_connect_per_element() -> list[Patch]:
    # Dropout (one draw per value) on the residual branch instead of stochastic depth.
    drawn = network._dropout_mask

    def per_element(xp, like, shape, rate, site, masks, rng):
        if site.endswith("_drop"):
            shape = tuple(like.shape)
        return drawn(xp, like, shape, rate, site, masks, rng)

    return [(network, "_dropout_mask", per_element)]


def _drop_connect_keep_probability() -> list[Patch]:
    # TF1's ``dropout(x, keep_prob)`` fed the drop rate: keeps a share ``rate``, scales by 1/rate.
    drawn = network._dropout_mask

    def keep_rate(xp, like, shape, rate, site, masks, rng):
        return drawn(xp, like, shape, 1.0 - rate, site, masks, rng)

    def forward(x, mask, rate):
        y, cache = dropout(x, mask, rate)
        return (y if mask is None or rate == 0.0 else x * mask / rate), cache

    dropout = elementwise.Dropout.forward
    return [
        (network, "_dropout_mask", keep_rate),
        (elementwise.Dropout, "forward", staticmethod(forward)),
    ]


def _drop_connect_in_every_block() -> list[Patch]:
    # Drop-connect outside the residual guard (Keras's ``if id_skip and strides == 1 and
    # filters_in == filters_out``): a block without the identity drops its whole output.
    block_forward = network._block_forward

    def forward(b, params, x, training, stats, masks, rng):
        y, cache = block_forward(b, params, x, training, stats, masks, rng)
        if training and not b.residual and b.drop_rate > 0:
            keep = network._dropout_mask(np, y, (y.shape[0], 1, 1, 1), b.drop_rate, "", None, rng)
            y = y * keep / (1.0 - b.drop_rate)
        return y, cache

    return [(network, "_block_forward", forward)]


def _last_block_rate_off_by_one(arch: Architecture) -> Architecture:
    # The schedule right but for the last residual block, which drops at (b + 1) / n.
    last = max(i for i, b in enumerate(arch.blocks) if b.residual)
    rate = arch.blocks[last].drop_rate * (last + 1) / last
    return replace(
        arch,
        blocks=tuple(
            replace(b, drop_rate=rate) if i == last else b for i, b in enumerate(arch.blocks)
        ),
    )


def _head_dropout_per_sample() -> list[Patch]:
    # One draw per sample for the head's dropout (``noise_shape=(None, 1)``), as drop-connect.
    drawn = network._dropout_mask

    def per_sample(xp, like, shape, rate, site, masks, rng):
        if site != "top_dropout":
            return drawn(xp, like, shape, rate, site, masks, rng)
        return xp.broadcast_to(drawn(xp, like, (shape[0], 1), rate, site, None, rng), shape)

    return [(network, "_dropout_mask", per_sample)]


def _head_dropout_unscaled() -> list[Patch]:
    # The head's mask applied, the kept features not scaled by 1 / (1 - rate).
    def forward(x, mask, rate):
        y, cache = dropout(x, mask, rate)
        return (x * mask if x.ndim == 2 and mask is not None and rate else y), cache

    dropout = elementwise.Dropout.forward
    return [(elementwise.Dropout, "forward", staticmethod(forward))]


def _head_dropout_of_b7(arch: Architecture) -> Architecture:
    # The head's dropout at B7's rate (0.5) whatever the variant, where it has one.
    rate = COEFFICIENTS["b7"][3] if arch.head.dropout else 0.0
    return replace(arch, head=replace(arch.head, dropout=rate))


def _top_with_swish(arch: Architecture) -> Architecture:
    # kEffNet built with EfficientNet's swish on the top conv.
    return replace(arch, head=replace(arch.head, top=replace(arch.head.top, activation="swish")))


INTERLEAVE_TRANSPOSED = MutantBackend("mutant-interleave-transposed", _transposed_interleave)
BN_EPS_1E5 = MutantBackend("mutant-bn-eps-1e-5", _bn_eps_1e5)
UNBIASED_RUNNING_VARIANCE = MutantBackend("mutant-unbiased-running-var", _unbiased_running_variance)
PYTORCH_MOMENTUM = MutantBackend("mutant-pytorch-momentum", _pytorch_momentum)
SYMMETRIC_PADDING = MutantBackend("mutant-symmetric-padding", _symmetric_padding)
SYMMETRIC_DEPTHWISE_3X3 = MutantBackend("mutant-symmetric-depthwise-3x3", _symmetric_depthwise_3x3)
DEPTHWISE_BN_BATCH_STATISTICS = MutantBackend(
    "mutant-depthwise-bn-batch-statistics", _depthwise_bn_batch_statistics
)
DROP_CONNECT_IN_INFERENCE = MutantBackend(
    "mutant-drop-connect-in-inference", _drop_connect_in_inference
)
SQUEEZE_BY_MAX = MutantBackend("mutant-squeeze-by-max", _squeeze_by_max)
TOP_BN_EPS_1E5 = MutantBackend("mutant-top-bn-eps-1e-5", _top_bn_eps_1e5)
DEPTHWISE_BN_EPS_1E5 = MutantBackend("mutant-depthwise-bn-eps-1e-5", _depthwise_bn_eps_1e5)
KPOINTWISE_BN_EPS_1E5 = MutantBackend("mutant-kpointwise-bn-eps-1e-5", _kpointwise_bn_eps_1e5)
# An MBConv module built with the framework's BN throughout (kPointwise's too), the stem apart.
BLOCK_BN_EPS_1E5 = MutantBackend(
    "mutant-block-bn-eps-1e-5", lambda: _depthwise_bn_eps_1e5() + _kpointwise_bn_eps_1e5()
)
SOFTMAX_IN_INFERENCE = MutantBackend(
    "mutant-softmax-in-inference", partial(_softmax_output, in_training=False)
)
SOFTMAX_OUTPUT = MutantBackend("mutant-softmax-output", _softmax_output)
LOG_SOFTMAX_OUTPUT = MutantBackend("mutant-log-softmax-output", partial(_softmax_output, log=True))
RESIDUAL_ON_INTERLEAVED = MutantBackend("mutant-residual-on-interleaved", _residual_on_interleaved)
TOP_ACTIVATION = MutantBackend("mutant-top-activation", arch_edit=_top_with_swish)
SWISH_BETA = MutantBackend("mutant-swish-beta", _swish_beta)
DROP_CONNECT_PER_BATCH = MutantBackend("mutant-drop-connect-per-batch", _drop_connect_per_batch)
DROP_CONNECT_UNSCALED = MutantBackend("mutant-drop-connect-unscaled", _drop_connect_unscaled)
DROP_CONNECT_PER_ELEMENT = MutantBackend(
    "mutant-drop-connect-per-element", _drop_connect_per_element
)
DROP_CONNECT_KEEP_PROBABILITY = MutantBackend(
    "mutant-drop-connect-keep-probability", _drop_connect_keep_probability
)
DROP_CONNECT_IN_EVERY_BLOCK = MutantBackend(
    "mutant-drop-connect-in-every-block", _drop_connect_in_every_block
)
DROP_CONNECT_LAST_RATE = MutantBackend(
    "mutant-drop-connect-last-rate", arch_edit=_last_block_rate_off_by_one
)
HEAD_DROPOUT_PER_SAMPLE = MutantBackend("mutant-head-dropout-per-sample", _head_dropout_per_sample)
HEAD_DROPOUT_UNSCALED = MutantBackend("mutant-head-dropout-unscaled", _head_dropout_unscaled)
HEAD_DROPOUT_B7_RATE = MutantBackend("mutant-head-dropout-b7-rate", arch_edit=_head_dropout_of_b7)
FLOAT16 = MutantBackend("mutant-float16", dtype=np.float16)
ALIASED_EXPORT = AliasedExportBackend()
TRAINED_IN_PLACE = TrainedInPlaceBackend()
INFERENCE_UPDATES_STATS = InferenceUpdatesStatsBackend()
ALWAYS_TRAINING = AlwaysTrainingBackend()
CHANNELS_FIRST_TOP = ChannelsFirstTopBackend()
TRACED_BATCH_LOSS = TracedBatchLossBackend()

# Every mutant above, e.g. for `gpconv check --backend gpconv.conformance.mutants:<NAME>`.
ALL = (
    INTERLEAVE_TRANSPOSED,
    BN_EPS_1E5,
    UNBIASED_RUNNING_VARIANCE,
    PYTORCH_MOMENTUM,
    SYMMETRIC_PADDING,
    SYMMETRIC_DEPTHWISE_3X3,
    DEPTHWISE_BN_BATCH_STATISTICS,
    DROP_CONNECT_IN_INFERENCE,
    RESIDUAL_ON_INTERLEAVED,
    SQUEEZE_BY_MAX,
    TOP_BN_EPS_1E5,
    DEPTHWISE_BN_EPS_1E5,
    KPOINTWISE_BN_EPS_1E5,
    BLOCK_BN_EPS_1E5,
    SOFTMAX_IN_INFERENCE,
    SOFTMAX_OUTPUT,
    LOG_SOFTMAX_OUTPUT,
    TOP_ACTIVATION,
    SWISH_BETA,
    DROP_CONNECT_PER_BATCH,
    DROP_CONNECT_UNSCALED,
    DROP_CONNECT_PER_ELEMENT,
    DROP_CONNECT_KEEP_PROBABILITY,
    DROP_CONNECT_IN_EVERY_BLOCK,
    DROP_CONNECT_LAST_RATE,
    HEAD_DROPOUT_PER_SAMPLE,
    HEAD_DROPOUT_UNSCALED,
    HEAD_DROPOUT_B7_RATE,
    FLOAT16,
    ALIASED_EXPORT,
    TRAINED_IN_PLACE,
    INFERENCE_UPDATES_STATS,
    ALWAYS_TRAINING,
    CHANNELS_FIRST_TOP,
    TRACED_BATCH_LOSS,
)
