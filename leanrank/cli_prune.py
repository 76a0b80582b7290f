"""What ``leanrank prune`` and ``leanrank factorize`` run: data → calibration → verb → fine-tune → folder.

``--recover-steps N`` then distils the pruned / factorized model from the original one on cached
scores (``leanrank.compress.recover``), which keeps more of its quality than label fine-tuning.

Calibration triples (query, title, target) come from the train split, judged pairs plus sampled
negatives; fine-tuning uses ``leanrank.train.search.fine_tune`` (best validation NDCG@10 kept).
Gradual pruning (``stages > 1``) follows the cubic schedule, fine-tuning ``steps // stages``
steps after each stage and tracking validation NDCG@10 per stage.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from leanrank.cli_compress import _refuse_existing
from leanrank.core.errors import LeanrankError


def _setup(model_dir: Path, dataset: str, data_dir, calibration_size: int, valid_queries: int):
    from leanrank.data.registry import load_search_dataset
    from leanrank.models.bm25 import BM25Index
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.train.examples import build_examples
    from leanrank.train.search import rerank_validator

    if (Path(model_dir) / "model.onnx").exists():
        raise LeanrankError(f"{model_dir} is an ONNX folder; prune or factorize the torch model, then export")
    model = CrossEncoder.from_pretrained(model_dir)
    splits = load_search_dataset(dataset, data_dir).split()
    train = splits["train"]
    examples = build_examples(train, BM25Index.build(train.titles), seed=4)
    sample = random.Random(4).sample(examples, min(calibration_size, len(examples)))
    calibration = tuple((e.query, e.title, e.target) for e in sample)
    validate = rerank_validator(splits["valid"], BM25Index.build(splits["valid"].titles), valid_queries)
    return model, splits, examples, calibration, validate


def _tune(model, splits, examples, validate, steps: int, lr: float, log) -> dict | None:
    if steps <= 0:
        return None
    from leanrank.train.search import fine_tune

    with tempfile.TemporaryDirectory(prefix="leanrank-tune-") as run_dir:
        record = fine_tune(model, splits, run_dir, steps, lr, examples=examples, validate=validate)
    log(f"fine-tuned {record['steps']} steps: best validation NDCG@10 {record.get('best_ndcg@10')}")
    return {"steps": record["steps"], "lr": lr, "best_valid_ndcg@10": record.get("best_ndcg@10")}


def prune_model(model_dir: Path, out: Path, dataset: str, data_dir, *, target: str = "ffn", amount: float = 0.5,
                criterion: str = "magnitude", scope: str = "layer", heads_amount: float = 0.0, stages: int = 1,
                steps: int = 0, lr: float = 3e-5, calibration_size: int = 256, valid_queries: int = 150,
                recover_steps: int = 0, transfer_dir: Path | None = None, overwrite: bool = False,
                log=print) -> dict:
    """Prune ``model_dir`` (optionally gradually, optionally also heads; then optionally recover by
    distillation from the unpruned model) and write ``out``."""
    from leanrank.compress.prune import (
        PruneConfig,
        count_params,
        cubic_schedule,
        freeze_zeros_,
        prune_,
        stage_amount,
    )
    from leanrank.compress.recover import RecoverConfig

    _refuse_existing(out, overwrite)
    if stages < 1:
        raise LeanrankError(f"--stages must be >= 1, got {stages}")
    PruneConfig(target=target, amount=amount, criterion="magnitude", scope=scope)   # validate before loading data
    recover = RecoverConfig(steps=recover_steps) if recover_steps else None
    model, splits, examples, calibration, validate = _setup(model_dir, dataset, data_dir, calibration_size, valid_queries)
    cal = calibration if criterion != "magnitude" else ()
    before = count_params(model.model)
    log(f"float validation NDCG@10: {validate(model)['ndcg@10']:.4f}")
    history, done, handles = [], 0.0, []
    for stage, level in enumerate(cubic_schedule(amount, stages), 1):
        step_amount = level if target == "unstructured" else stage_amount(done, level)
        if step_amount > 0:
            report = prune_(model, PruneConfig(target=target, amount=step_amount, criterion=criterion, scope=scope,
                                               calibration=cal))
            if report.masks:
                for h in handles:
                    h.remove()
                handles = freeze_zeros_(model.model, report.masks)
        done = level
        if heads_amount and stage == stages and target != "heads":
            prune_(model, PruneConfig(target="heads", amount=heads_amount, criterion=criterion, calibration=cal))
        tuned = _tune(model, splits, examples, validate, steps // stages, lr, log)
        metric = validate(model)["ndcg@10"]
        history.append({"stage": stage, "amount": round(level, 4), "params": count_params(model.model, nonzero=True),
                        "valid_ndcg@10": metric, "fine_tune": tuned})
        log(f"stage {stage}/{stages}: {target} {level:.1%} removed, validation NDCG@10 {metric:.4f}")
    step = model.card.steps[-1]
    if recover:   # pruned weights stay zero: the hooks are still on
        recovered = _recover(model_dir, model, splits["train"], validate, recover, transfer_dir, log)
        step["recovery"] = {**recovered, "valid_ndcg@10": recovered["best_valid_ndcg@10"]}   # best weights kept
    for h in handles:
        h.remove()
    step["history"] = history
    model.save(out, sparse=target == "unstructured")
    after = count_params(model.model, nonzero=True)
    log(f"ok {out}: {before:,} → {after:,} parameters ({after / before:.1%})")
    return {"params_before": before, "params_after": after, "history": history}


def factorize_model(model_dir: Path, out: Path, dataset: str, data_dir, *, param_ratio: float | None = 0.5,
                    energy: float | None = None, embedding_rank: int | None = None, steps: int = 0,
                    lr: float = 3e-5, valid_queries: int = 150, calibration_size: int = 512,
                    recover_steps: int = 0, transfer_dir: Path | None = None, overwrite: bool = False,
                    log=print) -> dict:
    """Low-rank factorize ``model_dir`` (then optionally fine-tune on labels and/or recover by
    distillation from the original model's cached scores) and write ``out``; with
    ``calibration_size`` > 0 train pairs the SVD is activation-aware (0 = plain SVD)."""
    from leanrank.compress.factorize import FactorizeConfig, factorize_
    from leanrank.compress.recover import RecoverConfig

    _refuse_existing(out, overwrite)
    if calibration_size < 0:
        raise LeanrankError(f"calibration size must be >= 0, got {calibration_size}")
    recover = RecoverConfig(steps=recover_steps) if recover_steps else None      # validated before loading data
    model, splits, examples, calibration, validate = _setup(model_dir, dataset, data_dir, calibration_size,
                                                            valid_queries)
    config = FactorizeConfig(energy=energy, param_ratio=None if energy is not None else param_ratio,
                             embedding_rank=embedding_rank, calibration=calibration if calibration_size else ())
    base = validate(model)["ndcg@10"]
    report = factorize_(model, config)
    factored = validate(model)["ndcg@10"]
    log(f"factorized {len(report.ranks)} modules ({len(report.skipped)} kept dense): Linear weights "
        f"{report.linear_params_before:,} → {report.linear_params_after:,}; validation NDCG@10 {base:.4f} → {factored:.4f}")
    step = model.card.steps[-1]
    tuned = _tune(model, splits, examples, validate, steps, lr, log)
    recovered = _recover(model_dir, model, splits["train"], validate, recover, transfer_dir, log) if recover else None
    # recovery keeps its best validated weights, so its best score is the final one
    final = recovered["best_valid_ndcg@10"] if recovered else validate(model)["ndcg@10"] if tuned else factored
    step.update({"valid_ndcg@10": {"before": base, "factorized": factored, "final": final}, "fine_tune": tuned,
                 "recovery": recovered})
    model.save(out)
    log(f"ok {out}: validation NDCG@10 {final:.4f} (float {base:.4f})")
    return {**report.summary(), "valid_ndcg@10": {"before": base, "factorized": factored, "final": final}}


def _recover(parent_dir: Path, model, train, validate, config, transfer_dir: Path | None, log) -> dict:
    """Recovery by distillation from the model in ``parent_dir`` (its scores cached in ``transfer_dir``,
    or in a temporary folder)."""
    from leanrank.compress.recover import recover_by_distillation, recovery_summary
    from leanrank.models.cross_encoder import CrossEncoder

    parent = CrossEncoder.from_pretrained(parent_dir)
    with tempfile.TemporaryDirectory(prefix="leanrank-recover-") as tmp:
        record = recover_by_distillation(parent, model, train, transfer_dir or Path(tmp) / "transfer",
                                         Path(tmp) / "run", config, validate, parent_name=str(parent_dir), log=log)
    log(f"recovered by distillation, {record['steps']} steps: best validation NDCG@10 {record['best_ndcg@10']}")
    return recovery_summary(record)
