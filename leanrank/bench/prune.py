"""Pruning and low-rank benchmark on Home Depot (``make bench-prune``): one run, teacher included.

Rows: the fp32 teacher; structured pruning (50% of FFN neurons + 4 of 12 heads per layer) by each
criterion (magnitude, Taylor, activation) before and after the same short fine-tune; low-rank
models (half the encoder's Linear weights; plain SVD and activation-aware "whitened" SVD on the
same calibration pairs) before/after fine-tuning on labels, and the whitened one recovered by
distillation from the teacher's cached scores instead (``leanrank.compress.recover``); whole-layer
dropping; and
unstructured 50% magnitude pruning stored sparse (size vs quality; no speed claimed).
Quality: rerank protocol on test queries; speed: interleaved repeats at batch 32 (median, min..max).
"""

from __future__ import annotations

import copy
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from leanrank.bench.evaluate import evaluate_scorer, model_size
from leanrank.bench.quantize import Variant, measure_speed
from leanrank.bench.report import write_results
from leanrank.compress.factorize import FactorizeConfig, factorize_
from leanrank.compress.prune import PruneConfig, count_params, prune_
from leanrank.compress.quantize import is_quantized
from leanrank.compress.recover import RecoverConfig, recover_by_distillation, recovery_summary
from leanrank.core.machine import machine_info, versions
from leanrank.data.registry import load_search_dataset
from leanrank.eval.memory import peak_rss_mb
from leanrank.eval.protocol import build_rerank_tasks
from leanrank.models.bm25 import BM25Index
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.runtime.parity import spearman
from leanrank.train.examples import build_examples
from leanrank.train.search import fine_tune, rerank_validator

COLUMNS = ("name", "role", "criterion", "fine_tuned", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher",
           "spearman_vs_teacher", "pairs_per_s", "pairs_per_s_min", "pairs_per_s_max", "speedup", "p50_ms",
           "p99_ms", "size_mb", "peak_rss_mb", "params", "linear_params", "flops_per_pair")
CRITERIA = ("magnitude", "taylor", "activation")


def flops_per_pair(model: CrossEncoder, seq: int = 48) -> int:
    """Forward FLOPs for one (query, title) pair padded to ``seq`` tokens (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    feats = {"input_ids": torch.full((1, seq), 1000), "attention_mask": torch.ones(1, seq, dtype=torch.long),
             "token_type_ids": torch.zeros(1, seq, dtype=torch.long)}
    was_training = model.model.training
    model.model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**feats)
    model.model.train(was_training)
    return int(counter.get_total_flops())


def linear_params(model: CrossEncoder, nonzero: bool = False) -> int:
    """Weights of the encoder's Linear layers (incl. low-rank factors)."""
    total = 0
    for name, m in model.model.named_modules():
        if type(m) is torch.nn.Linear and ".encoder." in f".{name}":
            total += int((m.weight != 0).sum()) if nonzero else m.weight.numel()
    return total


def structured(teacher: CrossEncoder, criterion: str, calibration) -> CrossEncoder:
    model = copy.deepcopy(teacher)
    kw = {"criterion": criterion, "calibration": calibration}
    prune_(model, PruneConfig(target="ffn", amount=0.5, **kw))
    prune_(model, PruneConfig(target="heads", amount=1 / 3, **kw))
    return model


def build_variants(teacher_dir: Path, splits, work: Path, steps: int, lr: float, valid_queries: int, log,
                   recover: RecoverConfig = RecoverConfig(), recover_valid_queries: int = 300,
                   transfer_dir: Path | None = None):
    teacher = CrossEncoder.from_pretrained(teacher_dir)
    train = splits["train"]
    rng = random.Random(4)
    examples = build_examples(train, BM25Index.build(train.titles), seed=4)
    valid_bm25 = BM25Index.build(splits["valid"].titles)
    validate = rerank_validator(splits["valid"], valid_bm25, valid_queries)
    calibration = tuple((e.query, e.title, e.target) for e in rng.sample(examples, 512))
    out = [Variant("teacher-fp32", "teacher", "torch", teacher, teacher_dir)]

    def add(name: str, model: CrossEncoder, criterion: str, tuned: bool, sparse: bool = False, info=None):
        folder = work / name
        model.save(folder, sparse=sparse)
        out.append(Variant(name, "variant", "torch", model, folder,
                           extra={"criterion": criterion, "fine_tuned": tuned, **(info or {})}))
        log(f"built {name}: {count_params(model.model):,} params")

    def tuned(name: str, model: CrossEncoder, n_steps: int) -> tuple[CrossEncoder, dict]:
        model = copy.deepcopy(model)
        log(f"fine-tuning {name} for {n_steps} steps ...")
        record = fine_tune(model, splits, work / f"{name}-run", n_steps, lr, valid_queries, seed=3,
                           examples=examples, validate=validate)
        return model, {"steps": record["steps"], "best_valid_ndcg@10": record.get("best_ndcg@10"),
                       "train_seconds": record.get("train_seconds")}

    for criterion in CRITERIA:
        model = structured(teacher, criterion, calibration)
        add(f"struct-{criterion}", model, criterion, False)
        ft, info = tuned(f"struct-{criterion}-ft", model, steps)
        add(f"struct-{criterion}-ft", ft, criterion, True, info={"fine_tune": info})

    low = copy.deepcopy(teacher)
    report = factorize_(low, FactorizeConfig(param_ratio=0.5))
    add("lowrank-0.5", low, "svd", False, info={"factorize": report.summary()})
    white = copy.deepcopy(teacher)
    white_report = factorize_(white, FactorizeConfig(param_ratio=0.5, calibration=calibration))
    add("lowrank-0.5-whitened", white, "svd-whitened", False, info={"factorize": white_report.summary()})
    for name, model, rep, crit in (("lowrank-0.5-ft", low, report, "svd"),
                                   ("lowrank-0.5-whitened-ft", white, white_report, "svd-whitened")):
        ft, info = tuned(name, model, 2 * steps)     # SVD loses more than pruning: twice the steps
        add(name, ft, crit, True, info={"factorize": rep.summary(), "fine_tune": info})
    kd = copy.deepcopy(white)
    log(f"recovering lowrank-0.5-whitened by distillation ({recover.steps} steps) ...")
    record = recover_by_distillation(
        teacher, kd, train, transfer_dir or work / "transfer", work / "lowrank-0.5-whitened-kd-run", recover,
        rerank_validator(splits["valid"], valid_bm25, recover_valid_queries),
        parent_name=str(teacher_dir), progress=False, log=log)
    add("lowrank-0.5-whitened-kd", kd, "svd-whitened", True, info={
        "factorize": white_report.summary(),
        "recovery": {**recovery_summary(record), "valid_queries": recover_valid_queries, "config": record["config"]}})

    layers = copy.deepcopy(teacher)
    prune_(layers, PruneConfig(target="layers", amount=1 / 3, criterion="activation", calibration=calibration))
    add("layers-drop2-activation", layers, "activation", False,
        info={"dropped": layers.card.steps[-1]["structure"]["num_layers"]})

    sparse = copy.deepcopy(teacher)
    rep = prune_(sparse, PruneConfig(target="unstructured", amount=0.5, scope="global"))
    add("unstructured-50-magnitude", sparse, "magnitude", False, sparse=True, info={"sparsity": rep.sparsity})
    return out


def run(teacher_dir: Path, data_dir: Path | None, out: Path, work: Path, max_queries: int = 150,
        valid_queries: int = 100, steps: int = 300, lr: float = 3e-5, repeats: int = 3,
        dataset: str = "homedepot", log=print, recover: RecoverConfig = RecoverConfig(),
        recover_valid_queries: int = 300, transfer_dir: Path | None = None) -> dict:
    t_start = time.perf_counter()
    full = load_search_dataset(dataset, data_dir)
    splits = full.split()
    ds = splits["test"]
    tasks = build_rerank_tasks(ds, BM25Index.build(full.titles), depth=100, max_queries=max_queries)
    log(f"test: {len(tasks)} queries, {sum(len(t.product_ids) for t in tasks)} pairs")
    work.mkdir(parents=True, exist_ok=True)
    variants = build_variants(Path(teacher_dir), splits, work, steps, lr, valid_queries, log, recover,
                              recover_valid_queries, transfer_dir)

    rows = measure_rows(variants, ds, tasks, repeats, log)
    doc = {
        "command": "make bench-prune  # = python -m leanrank.bench.prune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "dataset": dataset, "split": "test", "columns": list(COLUMNS),
        "protocol": {"candidates": "judged products + top BM25 catalog products not judged, up to 100",
                     "queries": len(tasks),
                     "speed": f"{repeats} interleaved repeats after warm-up, batch 32, median (min..max); "
                              f"{torch.get_num_threads()} threads",
                     "calibration": "512 train pairs incl. sampled negatives (seed 4)",
                     "fine_tune": f"{steps} steps ({2 * steps} for low-rank), lr {lr}, batch 32, best of 2 validations on {valid_queries} "
                                  "valid queries",
                     "recovery_by_distillation": f"{recover.steps} steps, lr {recover.lr}, listwise KL on the teacher's "
                                                 f"cached scores of {recover.transfer_queries} train queries "
                                                 "(judged + BM25 + dense candidates), 32 pairs per step, best of "
                                                 f"{recover.evals} validations on {recover_valid_queries} valid queries",
                     "structured": "50% of FFN neurons, then 4 of 12 heads, in every layer",
                     "flops": "torch.utils.flop_counter, one pair padded to 48 tokens"},
        "machine": machine_info(), "versions": versions(), "rows": rows, "bar": bars(rows),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_results(out, doc)
    return doc


def measure_rows(variants: list[Variant], ds, tasks, repeats: int, log) -> list[dict]:
    """Quality on ``tasks``, agreement with the first variant (the teacher), params/FLOPs for torch
    models, interleaved throughput, size on disk and peak RSS; ratios to the first row."""
    rows, ref = [], None
    for v in variants:
        log(f"quality: {v.name} ...")
        row, result = evaluate_scorer(v.name, v.role, v.scorer, ds, tasks, getattr(v.scorer, "predict_labels", None))
        flat = np.concatenate(result.scores)
        ref = flat if ref is None else ref
        row.update({"backend": v.backend, "quality_queries": len(tasks), "spearman_vs_teacher": spearman(ref, flat)})
        if v.role != "peer" and isinstance(v.scorer, CrossEncoder) and not is_quantized(v.scorer.card):
            row.update({"params": count_params(v.scorer.model, nonzero=True),
                        "linear_params": linear_params(v.scorer, nonzero=True),
                        "flops_per_pair": flops_per_pair(v.scorer)})
        rows.append(row)

    rng = random.Random(0)
    pairs = [(t.query, ds.titles[p]) for t in rng.sample(tasks, min(40, len(tasks))) for p in t.product_ids]
    lists = [(t.query, [ds.titles[p] for p in t.product_ids]) for t in rng.sample(tasks, min(20, len(tasks)))]
    measure_speed(variants, rng.sample(pairs, min(1024, len(pairs))), lists, repeats, log)

    log("size and peak RSS (one fresh process per variant) ...")
    for v, row in zip(variants, rows):
        row.update(v.extra)
        row["size_mb"] = model_size(v.folder)["size_mb"]
        # a peer built in memory (torch quantize_dynamic) is rebuilt from the teacher folder in the probe
        row["peak_rss_mb"] = round(peak_rss_mb(variants[0].folder if v.rss_peer else v.folder, v.rss_peer), 1)
    teacher_row = rows[0]
    for row in rows:
        row.update({"ndcg_vs_teacher": row["ndcg@10"] / teacher_row["ndcg@10"],
                    "speedup": row["pairs_per_s"] / teacher_row["pairs_per_s"]})
    return rows


def bars(rows: list[dict]) -> dict:
    ft = [r for r in rows if r["name"].startswith("struct-") and r.get("fine_tuned")]
    ok = [r for r in ft if r["ndcg_vs_teacher"] >= 0.98]
    best = max(ok or ft, key=lambda r: (r["ndcg_vs_teacher"] >= 0.98, r["speedup"]), default=None)
    teacher = rows[0]
    lows = [r for r in rows if r["name"].startswith("lowrank-") and r.get("fine_tuned")
            and teacher["linear_params"] / r["linear_params"] >= 2]
    # the recipe leanrank recommends (whitened SVD + recovery by distillation) is named before the
    # run, so the bar is not a best-of over test scores; without it, the best fine-tuned row
    low = next((r for r in lows if r["name"] == "lowrank-0.5-whitened-kd"), None) or \
        max(lows, key=lambda r: r["ndcg_vs_teacher"], default=None)
    return {
        "structured_1.6x_at_98pct": None if best is None else {
            "row": best["name"], "speedup": round(best["speedup"], 3), "ndcg_vs_teacher": round(best["ndcg_vs_teacher"], 4),
            "met": best["speedup"] >= 1.6 and best["ndcg_vs_teacher"] >= 0.98},
        "lowrank_2x_fewer_linear_at_97pct": None if low is None else {
            "row": low["name"], "linear_ratio": round(teacher["linear_params"] / low["linear_params"], 3),
            "ndcg_vs_teacher": round(low["ndcg_vs_teacher"], 4),
            "met": teacher["linear_params"] / low["linear_params"] >= 2 and low["ndcg_vs_teacher"] >= 0.97},
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher-homedepot-2/model"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/homedepot-prune"))
    parser.add_argument("--work", type=Path, default=Path("runs/prune-bench"))
    parser.add_argument("--max-queries", type=int, default=150)
    parser.add_argument("--valid-queries", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="homedepot")
    parser.add_argument("--recover-steps", type=int, default=1600)
    parser.add_argument("--recover-valid-queries", type=int, default=300)
    parser.add_argument("--transfer-dir", type=Path, default=None,
                        help="Cached teacher scores (default WORK/transfer; reused when teacher and config match)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    run(args.teacher, args.data_dir, args.out, args.work, args.max_queries, args.valid_queries, args.steps,
        args.lr, args.repeats, args.dataset, recover=RecoverConfig(steps=args.recover_steps),
        recover_valid_queries=args.recover_valid_queries, transfer_dir=args.transfer_dir)
