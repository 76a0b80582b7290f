"""Distillation losses: zero exactly when the student imitates the teacher, and what they ignore."""

from __future__ import annotations

import pytest
import torch

from leanrank.compress.distill_losses import (
    attention_kl,
    default_layer_map,
    hidden_mse,
    listwise_kl,
    margin_mse,
    score_loss,
    soft_bce,
)


def test_listwise_kl_is_zero_on_the_teacher_and_shift_invariant():
    torch.manual_seed(0)
    t = torch.randn(4, 8)
    assert listwise_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert listwise_kl(t + torch.randn(4, 1), t).item() == pytest.approx(0.0, abs=1e-5)  # per-list shift
    assert listwise_kl(torch.randn(4, 8), t).item() > 0.05


def test_listwise_kl_temperature_flattens_targets():
    t = torch.tensor([[4.0, 0.0, 0.0]])
    s = torch.tensor([[0.0, 0.0, 0.0]])
    # T² scaling keeps gradients comparable; at high T both distributions flatten so the raw KL shrinks
    assert listwise_kl(s, t, 4.0).item() / 16 < listwise_kl(s, t, 1.0).item()


def test_margin_mse_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, 2.0]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    # pairs (0,1), (0,2), (1,2): student margins 1, -1, -2; teacher 2, 1, -1 → squared errors 1, 4, 1
    assert margin_mse(s, t).item() == pytest.approx(2.0)
    assert margin_mse(t + 5.0, t).item() == pytest.approx(0.0)   # only differences matter


def test_soft_bce_gradient_vanishes_at_the_teacher():
    t = torch.tensor([[1.5, -0.5, 0.2]])
    s = t.clone().requires_grad_(True)
    soft_bce(s, t, 2.0).backward()
    assert s.grad.abs().max().item() < 1e-7
    s2 = (t + 1).requires_grad_(True)
    soft_bce(s2, t, 2.0).backward()
    assert (s2.grad > 0).all()                                   # pushes back down towards the teacher


def test_score_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="listwise"):
        score_loss("ranknet", torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 1.0)


def test_hidden_mse_ignores_padding_and_scale():
    torch.manual_seed(0)
    t = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s = t.clone()
    s[0, 3:] = 100.0                                              # garbage on padded tokens
    assert hidden_mse(s, t, mask).item() == pytest.approx(0.0)
    noisy = t + 0.1 * torch.randn_like(t)
    assert hidden_mse(10 * noisy, 10 * t, mask).item() == pytest.approx(hidden_mse(noisy, t, mask).item(), rel=1e-4)


def test_attention_kl_zero_on_equal_and_head_averages_when_counts_differ():
    torch.manual_seed(0)
    t = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    mask = torch.ones(2, 5)
    assert attention_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    assert attention_kl(s, t, mask).item() > 0
    same_mean = t.mean(1, keepdim=True).expand(2, 2, 5, 5)
    assert attention_kl(same_mean, t, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_default_layer_map_aligns_the_last_layers():
    assert default_layer_map(2, 6) == (3, 6)
    assert default_layer_map(3, 6) == (2, 4, 6)
    assert default_layer_map(6, 6) == (1, 2, 3, 4, 5, 6)
