"""The operand-byte counter behind benchmarks/bytes_torch_train.py (gpconv.perf.torch_traffic)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gpconv.perf.torch_traffic import (  # noqa: E402
    CountOperandBytes,
    distinct_bytes,
    train_step_traffic,
)

F32 = 4


def test_an_add_counts_both_inputs_and_the_output():
    a, b = torch.ones(10, 20), torch.ones(10, 20)
    with CountOperandBytes() as c:
        torch.add(a, b)
    assert dict(c.traffic.calls) == {"add": 1}
    assert c.traffic.bytes["add"] == 3 * 200 * F32


def test_views_and_allocations_move_no_bytes():
    a = torch.ones(6, 4)
    with CountOperandBytes() as c:
        a.view(4, 6)
        a.t()
        a[:, 1:]
        a.expand(2, 6, 4)
        torch.empty(100)
    assert c.traffic.total_bytes == 0, dict(c.traffic.bytes)


def test_a_broadcast_operand_counts_its_stored_elements_once():
    row = torch.ones(1, 20)
    assert distinct_bytes(row.expand(10, 20)) == 20 * F32
    with CountOperandBytes() as c:
        torch.ones(10, 20) * row.expand(10, 20)
    assert c.traffic.bytes["mul"] == (200 + 20 + 200) * F32


def test_a_conv_counts_input_weight_and_output():
    x, w = torch.ones(2, 3, 5, 5), torch.ones(4, 3, 1, 1)
    with CountOperandBytes() as c:
        torch.nn.functional.conv2d(x, w)
    assert c.traffic.bytes["convolution"] == (2 * 3 * 25 + 12 + 2 * 4 * 25) * F32


def test_train_step_traffic_covers_forward_backward_and_the_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3)
    )
    traffic = train_step_traffic(model, torch.randn(2, 3, 2, 2), torch.tensor([0, 2]))
    assert traffic.calls["convolution"] == 1 and traffic.calls["convolution_backward"] == 1
    # SGD with momentum touches every parameter: at least one read and one write of each.
    param_bytes = sum(p.numel() * F32 for p in model.parameters())
    assert traffic.total_bytes > 2 * param_bytes


def test_train_step_traffic_rejects_mismatched_batches():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"y.shape=\(3,\)"):
        train_step_traffic(model, torch.randn(2, 3, 1, 1), torch.tensor([0, 1, 0]))


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3)
    )


def test_distinct_bytes_uses_the_element_size_and_an_empty_broadcast_is_empty() -> None:
    """A float64 element is 8 bytes and an int8 one 1 (not always float32's 4), and a broadcast
    of a size-1 axis to size 0 addresses no element at all (not the one stored)."""
    assert distinct_bytes(torch.ones(3, dtype=torch.float64)) == 3 * 8
    assert distinct_bytes(torch.ones(5, 2, dtype=torch.int8)) == 10
    assert distinct_bytes(torch.ones(1, 5).expand(0, 5)) == 0


def test_the_copy_a_matmul_returns_as_a_fresh_tensor_moves_no_bytes() -> None:
    """A batched ``a @ b`` dispatches ``view``, ``mm`` and ``_unsafe_view`` (a view autograd
    treats as a fresh tensor): only the ``mm`` moves data, its two inputs and its output."""
    a, b = torch.ones(2, 3, 4), torch.ones(4, 5)
    with CountOperandBytes() as c:
        a @ b
    assert dict(c.traffic.calls) == {"mm": 1}
    assert c.traffic.total_bytes == (2 * 3 * 4 + 4 * 5 + 2 * 3 * 5) * F32


def test_like_allocations_move_no_bytes() -> None:
    """``empty_like`` / ``new_empty`` only allocate: no operand traffic (``zeros_like`` fills)."""
    a = torch.ones(6, 4)
    with CountOperandBytes() as c:
        torch.empty_like(a)
        a.new_empty((3,))
    assert c.traffic.total_bytes == 0, dict(c.traffic.bytes)


def test_train_step_traffic_rejects_an_input_that_is_not_4d() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"x.shape=\(2, 3\)"):
        train_step_traffic(model, torch.randn(2, 3), torch.tensor([0, 1]))


def test_train_step_traffic_counts_a_training_mode_step_of_a_model_left_in_eval() -> None:
    """The step is a train step whatever mode the caller left the model in: its dropout draws
    a mask (``bernoulli_``) as in ``benchmarks/bench_torch_train.py``'s timed step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(16, 3)
    ).eval()
    traffic = train_step_traffic(model, torch.randn(2, 3, 2, 2), torch.tensor([0, 2]))
    assert traffic.calls["bernoulli_"] == 1 and model.training


def test_train_step_traffic_counts_a_steady_state_momentum_update() -> None:
    """The counted step is the second (the first created the momentum buffers): per parameter
    SGD with momentum does ``buf.mul_(0.9).add_(grad)`` then ``param.add_(buf, alpha=-lr)``:
    one ``mul_`` and two ``add_`` of the parameter's size each (2 + 3 + 3 operand sizes), no
    ``clone`` (a first step's new buffer) and no ``zero_`` (gradients are set to None, not
    zeroed)."""
    model = _small_model()
    params = list(model.parameters())
    traffic = train_step_traffic(model, torch.randn(2, 3, 2, 2), torch.tensor([0, 2]))
    assert traffic.calls["mul_"] == len(params) and traffic.calls["add_"] == 2 * len(params)
    assert "clone" not in traffic.calls and "zero_" not in traffic.calls, dict(traffic.calls)
    param_bytes = sum(p.numel() * F32 for p in params)
    assert traffic.bytes["mul_"] == 2 * param_bytes
    assert traffic.bytes["add_"] == 6 * param_bytes


def test_an_out_tensor_counts_once_as_written_and_an_in_place_one_twice() -> None:
    """``torch.add(a, b, out=c)`` reads a and b and writes c (3 operands; c is not read);
    ``a.add_(b)`` reads a and b and writes a (3 as well)."""
    a, b, c = torch.ones(10, 20), torch.ones(10, 20), torch.empty(10, 20)
    with CountOperandBytes() as counter:
        torch.add(a, b, out=c)
        a.add_(b)
    assert counter.traffic.bytes["add"] == 3 * 200 * F32
    assert counter.traffic.bytes["add_"] == 3 * 200 * F32
