"""The training optimisers and schedule: the NumPy reference's SGD and Adam step for step against
Keras's own optimisers (the rules it claims to follow), torch's settings, and the cosine schedule's
landmarks. No test touched them before: a mutant dropping Adam's bias correction, or ignoring
``set_lr`` (so the schedule), passed the whole suite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpconv.train.frameworks.base import OptimConfig
from gpconv.train.frameworks.numpy_fw import NumpyOptimizer
from gpconv.train.loop import LoopConfig, lr_at

# lr changes between steps, as the per-epoch schedule does through set_lr
LRS = (0.1, 0.1, 0.03, 0.01)


def _keras_trajectory(kind: str, p0: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    keras = pytest.importorskip("keras")
    if kind == "sgd":
        opt = keras.optimizers.SGD(learning_rate=LRS[0], momentum=0.9)
    else:  # Keras's defaults: what OptimConfig documents
        opt = keras.optimizers.Adam(learning_rate=LRS[0], beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    var = keras.Variable(p0.copy(), dtype="float64")
    out = []
    for lr, g in zip(LRS, grads):
        opt.learning_rate = lr
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
        out.append(np.asarray(var.numpy(), np.float64).copy())
    return out


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_numpy_optimizers_take_keras_steps(kind):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    # small and large gradients, one sign change: Adam's eps and bias correction both matter
    grads = [rng.standard_normal((3, 4)) * s for s in (1e-6, 0.5, -2.0, 1e-3)]
    want = _keras_trajectory(kind, p0, grads)
    opt = NumpyOptimizer(OptimConfig(kind, LRS[0]))
    params = {"w": p0.copy()}
    for step, (lr, g) in enumerate(zip(LRS, grads)):
        opt.lr = lr  # NumpyFramework.set_lr
        opt.step(params, {"w": g})
        # Keras keeps the learning rate (and Adam's powers of beta) in float32 variables, so its
        # float64 steps carry float32 roundings (~1e-7 each): agree to 1e-5 of the way moved.
        moved = np.abs(want[step] - p0).max()
        np.testing.assert_allclose(params["w"], want[step], rtol=0, atol=1e-5 * moved, err_msg=kind)


def test_adams_first_step_is_the_learning_rate_in_the_gradients_direction():
    # Bias-corrected, Adam's first step is lr * g / (|g| + eps'), about lr * sign(g) (Kingma &
    # Ba, section 2.1): without the correction it is sqrt(1 - beta2) / (1 - beta1) = 0.316x that.
    opt = NumpyOptimizer(OptimConfig("adam", 1e-3))
    params = {"w": np.zeros(2)}
    opt.step(params, {"w": np.array([0.5, -4.0])})
    np.testing.assert_allclose(params["w"], [-1e-3, 1e-3], rtol=1e-5)


def test_torch_optimizers_take_keras_hyperparameters():
    torch = pytest.importorskip("torch")
    from gpconv.train.frameworks.torch_fw import make_optimizer

    w = [torch.zeros(2, requires_grad=True)]
    adam = make_optimizer(w, OptimConfig("adam", 1e-3)).defaults
    assert (adam["eps"], adam["betas"], adam["lr"]) == (1e-7, (0.9, 0.999), 1e-3)
    sgd = make_optimizer(w, OptimConfig("sgd", 0.05)).defaults
    assert (sgd["momentum"], sgd["lr"], sgd["nesterov"]) == (0.9, 0.05, False)


def test_cosine_schedule_landmarks():
    cfg = LoopConfig(epochs=10, batch_size=1, lr=0.2)
    assert lr_at(cfg, 0) == 0.2  # starts at --lr
    assert lr_at(cfg, 5) == pytest.approx(0.1)  # half-way: half
    assert 0 < lr_at(cfg, 9) < 0.2 * 0.03  # last epoch: small, never 0
    assert [lr_at(cfg, e) for e in range(10)] == sorted(
        (lr_at(cfg, e) for e in range(10)), reverse=True
    )
    # symmetric about the middle: lr(e) + lr(E - e) = lr
    assert lr_at(cfg, 2) + lr_at(cfg, 8) == pytest.approx(0.2)
    constant = LoopConfig(epochs=10, batch_size=1, lr=0.2, schedule="constant")
    assert {lr_at(constant, e) for e in range(10)} == {0.2}
    assert not math.isclose(lr_at(cfg, 3), 0.2)


@pytest.mark.parametrize("kind", ["rmsprop", "SGD", ""])
def test_optim_config_refuses_an_optimizer_it_does_not_implement(kind: str) -> None:
    """The frameworks branch on ``kind == "sgd"`` and treat anything else as Adam: an unchecked
    ``OptimConfig("rmsprop")`` (the library path; the CLI's choices stop it earlier) trained
    with Adam without a word."""
    with pytest.raises(ValueError, match=f"Expected optimizer 'sgd' or 'adam', received {kind!r}"):
        OptimConfig(kind)
