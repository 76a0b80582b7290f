"""Distil a sequential recommender (``SeqRec``) into a smaller one: cross-entropy on the true next
item mixed with a temperature-scaled KL to the teacher's next-item distribution over the full
catalog, at every position of every training sequence.

The student can start from the teacher: ``student_from_teacher`` builds a narrower model whose item
table is the teacher's *complete* item vectors (table + attributes + projected titles) projected on
their top principal directions, so a student without side information at serving time still
inherits what titles and attributes taught the teacher. ``fold_teacher`` keeps the teacher's
width: the complete item vectors become a plain table (no title buffer, no attribute rows) and
the student starts from a chosen subset of the teacher's layers; with all layers it scores
exactly as the teacher does.

>>> student = student_from_teacher(teacher, hidden=32, layers=1)                # doctest: +SKIP
>>> record = distill_rec(teacher, student, dataset, RecDistillConfig(), "runs/student")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from leanrank.core.errors import LeanrankError
from leanrank.data.sequences import SequenceDataset
from leanrank.models.seqrec import SeqRec, SeqRecConfig
from leanrank.train.rec import RecTrainConfig, train_rec


@dataclass(frozen=True)
class RecDistillConfig:
    alpha: float = 0.5           # weight of the KL term; 1 - alpha on the true next item
    temperature: float = 1.0
    train: RecTrainConfig = RecTrainConfig()

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise LeanrankError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise LeanrankError(f"temperature must be > 0, got {self.temperature}")


def kd_loss(teacher: SeqRec, alpha: float, temperature: float):
    """``loss_fn`` for ``train_rec``: (1 - α)·CE(student, next item) + α·T²·KL(teacher_T ‖ student_T)
    over items 1..N at every target position (teacher in eval mode, no gradient)."""
    teacher.eval()
    t = temperature

    def loss(student: SeqRec, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        where = targets > 0
        s_logits = student.catalog_logits(student.encode(inputs)[where]).float()[:, 1:]
        ce = F.cross_entropy(s_logits, targets[where] - 1)
        if alpha == 0:
            return ce
        with torch.no_grad():
            t_logits = teacher.catalog_logits(teacher.encode(inputs)[where]).float()[:, 1:]
        kl = F.kl_div(F.log_softmax(s_logits / t, -1), F.log_softmax(t_logits / t, -1), log_target=True,
                      reduction="batchmean")
        return (1 - alpha) * ce + alpha * t * t * kl

    return loss


def student_from_teacher(teacher: SeqRec, hidden: int, layers: int, heads: int = 2, ffn: int | None = None,
                         dropout: float | None = None, seed: int = 0) -> SeqRec:
    """A ``hidden``-wide student without side information whose item table is the PCA projection
    of the teacher's full item vectors (ids 1..N); the Transformer layers start fresh."""
    c = teacher.config
    if c.variant != "sasrec":
        raise LeanrankError("student_from_teacher supports sasrec teachers")
    if hidden > c.hidden:
        raise LeanrankError(f"student hidden {hidden} is wider than the teacher's {c.hidden}")
    config = SeqRecConfig(n_items=c.n_items, variant=c.variant, hidden=hidden, layers=layers, heads=heads,
                          max_len=c.max_len, dropout=c.dropout if dropout is None else dropout, ffn=ffn,
                          loss="full")
    torch.manual_seed(seed)
    student = SeqRec(config)
    with torch.no_grad():
        vectors = teacher.item_vectors().detach().float()[1 : c.n_items + 1].cpu()
        _, _, vh = torch.linalg.svd(vectors, full_matrices=False)
        projected = vectors @ vh[:hidden].T
        # keep the teacher's score scale: the dot products of the projections approximate the teacher's
        student.items.weight[1 : c.n_items + 1] = projected
        student.items.weight[0].zero_()
    student.card.parent = f"PCA({hidden}) of the item vectors of a {c.hidden}-wide teacher"
    return student


def fold_teacher(teacher: SeqRec, layers: Sequence[int] | None = None) -> SeqRec:
    """A student of the teacher's width without side information: its item table is the teacher's
    complete item vectors (table + attribute mean + projected title, computed once), and it keeps
    the teacher's position table, final norm and the blocks listed in ``layers`` (default: all, in
    which case it ranks exactly as the teacher)."""
    c = teacher.config
    if c.variant != "sasrec":
        raise LeanrankError("fold_teacher supports sasrec teachers")
    keep = list(range(c.layers)) if layers is None else list(layers)
    if not keep or any(not 0 <= i < c.layers for i in keep) or len(set(keep)) != len(keep):
        raise LeanrankError(f"layers must be distinct indices in 0..{c.layers - 1}, got {keep}")
    config = SeqRecConfig(n_items=c.n_items, variant=c.variant, hidden=c.hidden, layers=len(keep), heads=c.heads,
                          max_len=c.max_len, dropout=c.dropout, ffn=c.ffn, loss="full")
    student = SeqRec(config)
    with torch.no_grad():
        student.items.weight.copy_(teacher.item_vectors().detach().float().cpu()[: student.items.weight.shape[0]])
        student.items.weight[0].zero_()
        student.positions.load_state_dict(teacher.positions.state_dict())
        student.norm.load_state_dict(teacher.norm.state_dict())
        for mine, i in zip(student.blocks, keep):
            mine.load_state_dict(teacher.blocks[i].state_dict())
    student.card.parent = f"teacher folded: item vectors as a plain table, layers {keep} of {c.layers}"
    return student


def distill_rec(teacher: SeqRec, student: SeqRec, dataset: SequenceDataset, config: RecDistillConfig,
                out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train ``student`` against ``teacher`` on ``dataset``'s train sequences with ``train_rec``
    (validation, best-epoch restore, checkpoints and resume as there); returns the run record."""
    if student.config.n_items != teacher.config.n_items:
        raise LeanrankError(f"student has {student.config.n_items} items, teacher {teacher.config.n_items}")
    if student.config.max_len > teacher.config.max_len:
        raise LeanrankError("the student's max_len must not exceed the teacher's")
    if student.config.loss != "full" and config.alpha > 0:
        raise LeanrankError("distillation scores the full catalog: build the student with loss='full'")
    device = next(student.parameters()).device
    teacher.to(device)
    record = train_rec(student, dataset, config.train, out_dir, resume=resume, progress=progress,
                       loss_fn=kd_loss(teacher, config.alpha, config.temperature),
                       meta={"distill": {"alpha": config.alpha, "temperature": config.temperature}})
    student.card.add_step("distill", alpha=config.alpha, temperature=config.temperature,
                          train=asdict(config.train), steps=record["steps"], best_step=record["best_step"])
    return record

