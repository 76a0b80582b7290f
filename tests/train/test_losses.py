"""Ranking losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from leanrank.train.losses import LOSSES, compute_loss, listwise_softmax, pointwise_bce, pointwise_mse

torch.set_num_threads(1)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_bce_on_soft_targets():
    # x=0, t=0.5: ln 2;  x=2, t=1: ln(1 + e^-2)
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert expected == pytest.approx(0.4100376, abs=1e-7)
    assert pointwise_bce(t(0.0, 2.0), t(0.5, 1.0)).item() == pytest.approx(expected, abs=1e-6)
    assert compute_loss("bce", t(0.0, 2.0), t(0.5, 1.0), t(0, 0)).item() == pytest.approx(expected, abs=1e-6)


def test_bce_is_minimal_at_the_target_probability():
    target = t(0.25)
    best = math.log(0.25 / 0.75)  # sigmoid(best) = 0.25
    at_best = pointwise_bce(t(best), target).item()
    assert at_best < pointwise_bce(t(best + 0.1), target).item()
    assert at_best < pointwise_bce(t(best - 0.1), target).item()


def test_mse_on_sigmoid():
    # sigmoid(0) = 0.5 vs 0: 0.25;  sigmoid(2) = 0.8807971 vs 1: 0.0142093
    expected = (0.25 + (1 - 1 / (1 + math.exp(-2))) ** 2) / 2
    assert expected == pytest.approx(0.1321047, abs=1e-7)
    assert pointwise_mse(t(0.0, 2.0), t(0.0, 1.0)).item() == pytest.approx(expected, abs=1e-6)
    assert compute_loss("mse", t(0.0, 2.0), t(0.0, 1.0), t(0, 0)).item() == pytest.approx(expected, abs=1e-6)


def test_listwise_softmax_by_hand():
    # group 0: logits (1, 0, -1), targets (1, .5, 0) → p = (2/3, 1/3, 0)
    lse0 = math.log(math.e + 1 + math.exp(-1))
    loss0 = 2 / 3 * (lse0 - 1) + 1 / 3 * lse0
    # group 1: logits (2, -2), targets (0, 1) → p = (0, 1)
    loss1 = 2 + math.log(math.exp(2) + math.exp(-2))
    assert (loss0, loss1) == (pytest.approx(0.7409393, abs=1e-7), pytest.approx(4.0181499, abs=1e-7))
    logits = t(1, 0, -1, 2, -2)
    targets = t(1, 0.5, 0, 0, 1)
    groups = torch.tensor([0, 0, 0, 1, 1])
    got = compute_loss("listwise", logits, targets, groups).item()
    assert got == pytest.approx((loss0 + loss1) / 2, abs=1e-5)
    assert got == pytest.approx(2.3795446, abs=1e-5)


def test_listwise_skips_all_zero_and_single_item_groups():
    logits = t(1, 0, -1, 2, -2, 5, -5, 3)
    targets = t(1, 0.5, 0, 0, 1, 0, 0, 1)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])  # group 2: all-zero targets; group 3: one item
    full = listwise_softmax(logits, targets, groups).item()
    kept = listwise_softmax(logits[:5], targets[:5], groups[:5]).item()
    assert full == pytest.approx(kept, abs=1e-6)


def test_listwise_targets_are_normalised_and_groups_need_not_be_contiguous():
    logits = t(1, 2, 0, -1)
    a = listwise_softmax(logits, t(1, 0, 0.5, 0), torch.tensor([0, 1, 0, 1])).item()
    b = listwise_softmax(logits, t(4, 0, 2, 0), torch.tensor([0, 1, 0, 1])).item()  # scaled targets
    c = listwise_softmax(t(1, 0), t(1, 0.5), torch.tensor([0, 0])).item()  # group 1 is all zero
    assert a == pytest.approx(b, abs=1e-6) and a == pytest.approx(c, abs=1e-6)


def test_listwise_with_nothing_to_learn_is_zero_but_differentiable():
    logits = t(0.3, -0.2, 1.0).requires_grad_()
    loss = listwise_softmax(logits, t(0, 0, 0), torch.tensor([0, 0, 1]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3))


def test_listwise_gradient_pushes_the_relevant_item_up():
    logits = t(0, 0, 0).requires_grad_()
    listwise_softmax(logits, t(1, 0, 0), torch.tensor([0, 0, 0])).backward()
    assert logits.grad[0] < 0 < logits.grad[1]


def test_compute_loss_upcasts_half_precision_logits():
    loss = compute_loss("bce", t(0.5, -0.5).bfloat16(), t(1, 0), t(0, 0))
    assert loss.dtype == torch.float32


def test_bce_plus_listwise_is_the_sum_of_both():
    logits, targets, groups = t(2.0, -1.0, 0.5, 0.0), t(1.0, 0.0, 0.5, 0.0), torch.tensor([0, 0, 1, 1])
    both = compute_loss("bce+listwise", logits, targets, groups)
    expected = pointwise_bce(logits, targets) + listwise_softmax(logits, targets, groups)
    assert both.item() == pytest.approx(expected.item())
    # a list with no positive only gets the pointwise part
    only_zero = compute_loss("bce+listwise", t(1.0, 2.0), t(0.0, 0.0), torch.tensor([0, 0]))
    assert only_zero.item() == pytest.approx(pointwise_bce(t(1.0, 2.0), t(0.0, 0.0)).item())


def test_unknown_loss_raises():
    assert LOSSES == ("bce", "mse", "listwise", "bce+listwise")
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss("hinge", t(0.0), t(1.0), t(0))
