"""Recovery by distillation: after factorizing or pruning a cross-encoder, train it to imitate the
model it was made from (listwise KL on that model's cached scores) instead of fine-tuning on labels.

The compressed model starts close to its parent, so the parent's scores over judged + BM25 + dense
candidates are a denser and more faithful signal than the graded labels: on Home Depot a low-rank
model with half the encoder's Linear weights goes from 0.907 of the teacher's NDCG@10 to 0.973 this
way, where 600 label fine-tuning steps reached 0.937 (``benchmarks/results/homedepot-prune.json``).
The parent's scores are cached in ``transfer_dir`` (``leanrank.compress.transfer``), so several
compressed models of one parent share one scoring pass.

>>> RecoverConfig(steps=0)
Traceback (most recent call last):
...
leanrank.core.errors.LeanrankError: recovery steps must be >= 1, got 0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leanrank.core.errors import LeanrankError


@dataclass(frozen=True)
class RecoverConfig:
    steps: int = 1600
    lr: float = 5e-5
    queries_per_batch: int = 4           # x list_size candidates = 32 pairs per step
    list_size: int = 8
    transfer_queries: int = 2000         # train queries the parent scores (cached)
    dense: bool = True                   # add MiniLM dense-recall candidates to the lists
    evals: int = 4                       # validations; the best step is kept
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LeanrankError(f"recovery steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise LeanrankError(f"recovery lr must be > 0, got {self.lr}")
        if self.transfer_queries < 1 or self.evals < 1:
            raise LeanrankError("transfer_queries and evals must be >= 1")


def recover_by_distillation(parent, model, train, transfer_dir: str | Path, run_dir: str | Path,
                            config: RecoverConfig = RecoverConfig(), validate: Callable | None = None,
                            parent_name: str = "", progress: bool = True, log=print) -> dict:
    """Train ``model`` (compressed, in place) on ``parent``'s cached listwise scores over the train
    split ``train``; returns the distillation run record (best validated weights kept)."""
    from leanrank.compress.distill import DistillConfig, distill
    from leanrank.compress.transfer import TransferConfig, build_transfer, dense_recall

    tconfig = TransferConfig(max_queries=config.transfer_queries, dense=8 if config.dense else 0)
    recall = dense_recall(train.titles, log=log) if config.dense else None
    data = build_transfer(parent, train, transfer_dir, tconfig, dense=recall, teacher_name=parent_name,
                          progress=progress, log=log)
    log(f"recovery: {len(data.lists)} lists, {data.pairs:,} pairs scored by the parent")
    dconfig = DistillConfig(listwise=1.0, steps=config.steps, lr=config.lr, queries_per_batch=config.queries_per_batch,
                            list_size=config.list_size, eval_every=max(config.steps // config.evals, 1),
                            seed=config.seed)
    return distill(parent, model, data, dconfig, run_dir, validate=validate, progress=progress)


def recovery_summary(record: dict) -> dict:
    """The fields of a ``recover_by_distillation`` record worth keeping in a model card or a result row."""
    return {"steps": record["steps"], "lr": record["config"]["lr"], "best_step": record["best_step"],
            "best_valid_ndcg@10": record["best_ndcg@10"], "train_seconds": record["train_seconds"],
            "transfer_lists": record["transfer_lists"]}
