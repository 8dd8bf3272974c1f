"""Each mutant backend (conformance/mutants.py) re-creates its own porting trap, not merely some
wrong answer: the conformance tests assert that a mutant is caught, so a mutant computing something
else (caught for another reason) would let a check that misses the real trap pass."""

from __future__ import annotations

import numpy as np

from gpconv.conformance import cases, mutants
from gpconv.core import network, pointwise
from gpconv.core.arch import kefficientnet, without_dropout
from gpconv.core.ops import elementwise
from gpconv.core.params import init_params


def test_residual_on_interleaved_adds_interleave_of_y1_to_y2():
    """The trap is ``y2 + interleave(y1)`` where the reference adds ``y1``: ``y2`` itself (the
    second conv of ``interleave(y1)``) stays the reference's."""
    ref = cases.kpointwise_case((32, 16, 2, True, "swish", False), False, seed=0)
    spec, params, x = ref["spec"], ref["params"], ref["x"].astype(np.float64)
    assert spec.interleaves and spec.has_second_conv
    y1, _ = pointwise._conv_bn_act(spec, params, x, "conv", "bn", False)
    z = y1.reshape(*y1.shape[:-1], spec.groups, -1).swapaxes(-1, -2).reshape(y1.shape)
    y2, _ = pointwise._conv_bn_act(spec, params, z, "conv2", "bn2", False)
    with mutants.RESIDUAL_ON_INTERLEAVED._broken():
        got, _ = pointwise.KPointwise.forward(spec, params, x, False)
    np.testing.assert_allclose(got, y2 + z, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, y2 + y1)  # it is not the reference


def test_drop_connect_keep_probability_keeps_a_share_rate_and_scales_by_its_inverse():
    """TF1's ``dropout(x, keep_prob)`` fed the drop rate keeps a share ``rate`` of the samples
    (not ``1 - rate``) and scales the kept ones by ``1 / rate``."""
    rate, n = 0.25, 4000
    x = np.ones((n, 1, 1, 1))
    with mutants.DROP_CONNECT_KEEP_PROBABILITY._broken():
        mask = network._dropout_mask(
            np, x, (n, 1, 1, 1), rate, "block2b_drop", None, np.random.default_rng(0)
        )
        y, _ = elementwise.Dropout.forward(x, mask, rate)
    kept = float(np.mean(mask))
    assert abs(kept - rate) <= 6 * np.sqrt(rate * (1 - rate) / n), kept
    np.testing.assert_allclose(y, x * mask / rate)


def test_softmax_output_backward_goes_through_the_softmax():
    """The softmax-output mutant's backward goes through its softmax, as autograd's would: its
    dense-bias gradient is that of the mean cross-entropy of ``softmax(p)``, ``p = softmax(z)``
    the probabilities it returns for the reference's logits ``z``, by the chain rule through
    ``p``. Skipping the softmax's backward would give another trap's gradients (with a
    log-softmax output the two coincide, so only the softmax one can tell)."""
    arch = without_dropout(kefficientnet("b0", 10, 16, skip_stride_cnt=3))
    rng = np.random.default_rng(0)
    params = init_params(arch, seed=0, dtype=np.float64)
    params["predictions/kernel"] = rng.standard_normal(params["predictions/kernel"].shape)
    x = rng.standard_normal((2, 16, 16, 3))
    labels = np.array([1, 7])
    z, _ = network.forward(arch, params, x, training=False)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(p - p.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    dp = (q - np.eye(10)[labels]) / len(x)  # d mean CE(softmax(p)) / dp
    dz = p * (dp - np.sum(p * dp, axis=1, keepdims=True))  # through p = softmax(z)
    backend = mutants.SOFTMAX_OUTPUT
    model = backend.build(arch)
    backend.load_params(model, params)
    out = backend.loss_and_grads(model, x, labels, training=False)
    np.testing.assert_allclose(out["logits"], p, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["grads"]["predictions/bias"], dz.sum(0), rtol=1e-8, atol=1e-12)
    assert not np.allclose(dz.sum(0), dp.sum(0), rtol=1e-3)  # the two backwards differ here
