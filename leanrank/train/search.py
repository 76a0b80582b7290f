"""Train a search cross-encoder end to end: data → split → negatives → fit → model dir.

This is what ``leanrank train search`` runs; a short script, not a framework.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from leanrank.core.io import write_json
from leanrank.data.search import SearchDataset
from leanrank.eval.protocol import build_rerank_tasks, evaluate_rerank, score_tasks
from leanrank.models.bm25 import BM25Index
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.train.calibrate import calibrate_
from leanrank.train.examples import build_examples
from leanrank.train.fit import TrainConfig, fit


@dataclass(frozen=True)
class SearchTrainSetup:
    """What goes around ``fit``: where the model starts and which data it sees."""

    init: str | None = None             # model dir, or None for MiniLM-L6
    num_layers: int | None = None       # keep this many layers of ``init``
    layer_pick: str = "spread"          # which layers: "spread" (every k-th) or "first"
    max_length: int = 48
    bm25_negatives: int = 3
    bm25_depth: int = 50                # hard negatives are sampled from this BM25 top list
    random_negatives: int = 1
    valid_queries: int | None = 300     # validation subset size (None = all)
    max_train_queries: int | None = None
    calibrate: bool = True              # fit the logit → label map on validation pairs


def rerank_validator(ds: SearchDataset, bm25: BM25Index, max_queries: int | None):
    """A ``validate(model) -> metrics`` closure over fixed validation rerank tasks."""
    tasks = build_rerank_tasks(ds, bm25, max_queries=max_queries)
    rel = ds.labels.relevant_min_label - ds.labels.label_min

    def validate(model: CrossEncoder) -> dict:
        t0 = time.perf_counter()
        scores = score_tasks(model, tasks, ds.titles)  # a CrossEncoder is a Scorer
        result = evaluate_rerank(tasks, scores, rel, [model.predict_labels(s) for s in scores])
        return {**result.summary(), "seconds": round(time.perf_counter() - t0, 1)}

    return validate


def train_search(
    splits: dict[str, SearchDataset],
    out_dir: str | Path,
    config: TrainConfig,
    setup: SearchTrainSetup = SearchTrainSetup(),
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    bm25: BM25Index | None = None,
) -> tuple[CrossEncoder, dict]:
    """Fine-tune a cross-encoder on ``splits['train']``, early-stopped on ``splits['valid']``."""
    out = Path(out_dir)
    train, valid = splits["train"], splits["valid"]
    if setup.max_train_queries:
        train = train.subset(train.queries()[: setup.max_train_queries])
    torch.manual_seed(config.seed)
    model = CrossEncoder.from_pretrained(setup.init, max_length=setup.max_length, num_layers=setup.num_layers,
                                         layer_pick=setup.layer_pick)
    model.card.label_range = (train.labels.label_min, train.labels.label_max)
    bm25 = bm25 or BM25Index.build(train.titles)
    examples = build_examples(train, bm25, setup.bm25_negatives, setup.random_negatives,
                              bm25_depth=setup.bm25_depth, seed=config.seed)
    validate = rerank_validator(valid, bm25, setup.valid_queries)
    meta = {"dataset": train.name.split(":")[0], "train_queries": len(train.queries()),
            "train_examples": len(examples), "setup": asdict(setup)}
    record = fit(model, examples, config, out, validate=validate, resume=resume, progress=progress,
                 device=device, meta=meta)
    model.card.add_step("train", config=asdict(config), setup=asdict(setup), dataset=meta["dataset"],
                        steps=record["steps"], train_pairs_per_s=record["train_pairs_per_s"])
    best = [h for h in record["history"] if h["step"] == record["best_step"]] or record["history"][-1:]
    model.card.metrics = {f"valid_{k}": v for k, v in (best or [{}])[0].items()
                          if k.startswith(("ndcg", "mrr", "rmse"))}
    if int(os.environ.get("RANK", "0")) == 0:
        if setup.calibrate:
            calibrate_(model, valid)
        model.save(out / "model")
        write_json(out / "run.json", record)
    return model, record


def fine_tune(
    model: CrossEncoder,
    splits: dict[str, SearchDataset],
    run_dir: str | Path,
    steps: int,
    lr: float = 3e-5,
    valid_queries: int | None = 150,
    evals: int = 2,
    seed: int = 3,
    progress: bool = True,
    examples: list | None = None,
    validate=None,
) -> dict:
    """A short recovery fine-tune after compression (pruning, factorization, QAT): ``steps``
    optimizer steps on the train split, validated ``evals`` times, best weights kept. The
    caller's hooks (e.g. ``freeze_zeros_``) stay active; returns the ``fit`` record.
    ``examples``/``validate`` may be passed in when several models are tuned on the same data."""
    train, valid = splits["train"], splits["valid"]
    if examples is None:
        examples = build_examples(train, BM25Index.build(train.titles), seed=seed)
    config = TrainConfig(lr=lr, max_steps=steps, eval_every=max(1, steps // max(evals, 1)), warmup_ratio=0.06,
                         seed=seed, patience=evals + 1)
    if validate is None:
        validate = rerank_validator(valid, BM25Index.build(valid.titles), valid_queries)
    return fit(model, examples, config, run_dir, validate=validate, progress=progress)
