"""Distillation losses for rankers: on scores (per pair, per pair of pairs, per list) and on
the inside of the network (hidden states, attention distributions).

Score losses take student and teacher logits shaped ``(queries, candidates)``: one row per
query's candidate list, so listwise and margin losses need no group ids.

>>> s, t = torch.zeros(2, 4), torch.randn(2, 4)
>>> float(listwise_kl(t, t)) == 0.0
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCORE_LOSSES = ("listwise", "margin_mse", "mse", "soft", "hard")


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T)) over each query's list, times T²."""
    t = F.log_softmax(teacher / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Margin-MSE (Hofstätter et al.): the student's score difference of every (better, worse)
    pair in a list should equal the teacher's."""
    ds = student.unsqueeze(-1) - student.unsqueeze(-2)
    dt = teacher.unsqueeze(-1) - teacher.unsqueeze(-2)
    n = student.shape[-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=student.device), diagonal=1)
    return F.mse_loss(ds[..., upper], dt[..., upper])


def pointwise_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between student and teacher logits, pair by pair."""
    return F.mse_loss(student, teacher)


def soft_bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft labels with temperature: BCE of sigmoid(student/T) against sigmoid(teacher/T) per pair
    (= the KL between the two relevance distributions up to the teacher's entropy), times T²."""
    return F.binary_cross_entropy_with_logits(student / temperature, torch.sigmoid(teacher / temperature)) \
        * temperature**2


def hard_bce(student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Hard labels: BCE on the graded targets in [0, 1] (unjudged candidates count as 0)."""
    return F.binary_cross_entropy_with_logits(student, targets)


def score_loss(name: str, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
               temperature: float) -> torch.Tensor:
    if name == "listwise":
        return listwise_kl(student, teacher, temperature)
    if name == "margin_mse":
        return margin_mse(student, teacher)
    if name == "mse":
        return pointwise_mse(student, teacher)
    if name == "soft":
        return soft_bce(student, teacher, temperature)
    if name == "hard":
        return hard_bce(student, targets)
    raise ValueError(f"unknown score loss {name!r}; choose from {', '.join(SCORE_LOSSES)}")


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states over real tokens, divided by
    the teacher's mean square so layers of any scale weigh alike."""
    m = mask.unsqueeze(-1).to(student.dtype)
    err = ((student - teacher) ** 2 * m).sum()
    scale = (teacher**2 * m).sum().clamp(min=1e-6)
    return err / scale


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) of attention distributions ``(batch, heads, seq, seq)``, averaged over
    real query tokens and heads. Different head counts are compared head-averaged."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    eps = 1e-8
    kl = (teacher * ((teacher + eps).log() - (student + eps).log())).sum(-1)   # (batch, heads, seq)
    rows = mask.unsqueeze(1).to(kl.dtype)
    return (kl * rows).sum() / (rows.sum() * kl.shape[1] / rows.shape[1]).clamp(min=1)


def default_layer_map(student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Student layer i (1-based, after the embeddings) → teacher layer round(i·T/S): the last
    layers align, the rest spread uniformly (TinyBERT's mapping)."""
    return tuple(round((i + 1) * teacher_layers / student_layers) for i in range(student_layers))
