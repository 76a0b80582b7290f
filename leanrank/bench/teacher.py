"""``make bench`` → benchmarks/results/homedepot-teacher.{json,md}.

Rows on the rerank protocol of the test split: random, BM25 (whole-catalog statistics),
zero-shot MiniLM bi-encoder cosine, and the fine-tuned teacher, plus recall-stage Recall@100
over the whole catalog and the training throughput of fp32 vs bf16 autocast, all in one run.
"""

from __future__ import annotations

import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from leanrank.bench.evaluate import evaluate_scorer, model_size
from leanrank.bench.report import write_results
from leanrank.core.machine import machine_info, versions
from leanrank.data.registry import load_search_dataset
from leanrank.eval.baselines import RandomScorer
from leanrank.eval.latency import query_latency, throughput
from leanrank.eval.metrics import paired_test
from leanrank.eval.protocol import build_rerank_tasks, recall_at_k
from leanrank.models.bi_encoder import BiEncoder, DenseIndex, DenseScorer
from leanrank.models.bm25 import BM25Index, BM25Scorer
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.train.examples import build_examples
from leanrank.train.speed import train_throughput


def run(teacher_dir: Path, data_dir: Path | None, out: Path, split: str = "test",
        max_queries: int | None = None, dataset: str = "homedepot", log=print) -> dict:
    t_start = time.perf_counter()
    full = load_search_dataset(dataset, data_dir)
    splits = full.split()
    ds = splits[split]
    bm25 = BM25Index.build(full.titles)
    tasks = build_rerank_tasks(ds, bm25, depth=100, max_queries=max_queries)
    log(f"{split}: {len(tasks)} queries with a relevant product, "
        f"{sum(len(t.product_ids) for t in tasks)} candidate pairs")
    teacher = CrossEncoder.from_pretrained(teacher_dir)
    encoder = BiEncoder.from_pretrained()
    log(f"encoding the catalog ({len(full.titles)} titles) for dense recall ...")
    catalog_ids = list(full.titles)
    catalog_emb = encoder.encode([full.titles[p] for p in catalog_ids])
    title_cache = {full.titles[p]: e for p, e in zip(catalog_ids, catalog_emb)}

    scorers = [
        ("random", "baseline", RandomScorer(0), None),
        ("bm25", "baseline", BM25Scorer(bm25, full.titles), None),
        ("dense-minilm-zeroshot", "baseline", DenseScorer(encoder, title_cache), None),
        ("teacher-minilm-l6", "teacher", teacher, teacher.predict_labels),
    ]
    rows, results = [], {}
    for name, role, scorer, label_fn in scorers:
        log(f"evaluating {name} ...")
        row, results[name] = evaluate_scorer(name, role, scorer, ds, tasks, label_fn)
        rows.append(row)

    log("recall stage over the whole catalog ...")
    queries = [t.query for t in tasks]
    bm25_hits = dict(zip(queries, ([p for p, _ in h] for h in bm25.search(queries, k=100))))
    dense_index = DenseIndex.from_embeddings(catalog_ids, catalog_emb)
    dense_hits = dict(zip(queries, ([p for p, _ in h] for h in dense_index.search(encoder.encode(queries), 100))))
    recall = {"bm25": recall_at_k(ds, bm25_hits), "dense-minilm-zeroshot": recall_at_k(ds, dense_hits)}
    for row in rows:
        row["recall@100"] = recall.get(row["name"])

    log("latency and size ...")
    rng = random.Random(0)
    sample = rng.sample(tasks, min(40, len(tasks)))
    pairs = [(t.query, full.titles[p]) for t in sample for p in t.product_ids][:1024]
    qs, ts = [p[0] for p in pairs], [p[1] for p in pairs]
    for row, (_, _, scorer, _) in zip(rows, scorers):
        if row["name"] == "random":
            continue
        if row["name"] == "teacher-minilm-l6":  # throughput at batch 32 and at batch 1
            row.update(throughput(lambda q, t: teacher.score(q, t, batch_size=32), qs, ts, repeats=3))
            row["pairs_per_s_batch1"] = throughput(
                lambda q, t: teacher.score(q, t, batch_size=1), qs[:128], ts[:128], repeats=1)["pairs_per_s"]
        else:
            row.update(throughput(scorer.score, qs, ts, repeats=3))
        row.update(query_latency(scorer.score, [(t.query, [full.titles[p] for p in t.product_ids])
                                                for t in sample[:20]]))
    teacher_row = rows[-1]
    teacher_row.update(model_size(teacher_dir))

    best_base = max(rows[1:3], key=lambda r: r["ndcg@10"])
    significance = {
        f"teacher_vs_{r['name']}": paired_test(results["teacher-minilm-l6"].full, results[r["name"]].full, "ndcg@10")
        for r in rows[1:3]
    }

    log("training throughput fp32 vs bf16 autocast ...")
    examples = build_examples(splits["train"].subset(splits["train"].queries()[:200]), bm25, seed=0)
    random.Random(0).shuffle(examples)
    training = {"throughput": [train_throughput(CrossEncoder.from_pretrained(), examples, p, steps=s)
                               for p, s in (("fp32", 8), ("bf16", 2))]}
    run_record = Path(teacher_dir).parent / "run.json"
    if run_record.exists():
        rec = json.loads(run_record.read_text())
        training["teacher_run"] = {k: rec.get(k) for k in (
            "config", "setup", "steps", "train_pairs", "train_seconds", "train_pairs_per_s",
            "best_step", "best_ndcg@10", "history", "train_examples", "train_queries")}

    results_doc = {
        "command": "make bench  # = python -m leanrank.bench.teacher "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "dataset": dataset, "split": split, "protocol": {
            "candidates": "judged products + top BM25 catalog products not judged, up to 100",
            "gain": full.labels.describe(), "queries": len(tasks),
            "split": "query-level sha1 hash, 80/10/10"},
        "machine": machine_info(), "versions": versions(),
        "rows": rows,
        "bar": {"teacher_minus_best_baseline_ndcg@10": teacher_row["ndcg@10"] - best_base["ndcg@10"],
                "best_baseline": best_base["name"], "required": 0.15,
                "teacher_rmse": teacher_row["rmse"], "rmse_required_max": 0.49},
        "significance": significance, "training": training,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_results(out, results_doc)
    return results_doc


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher-homedepot-3/model"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/homedepot-teacher"))
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--dataset", default="homedepot")
    args = parser.parse_args()
    torch.manual_seed(0)
    run(args.teacher, args.data_dir, args.out, max_queries=args.max_queries, dataset=args.dataset)
