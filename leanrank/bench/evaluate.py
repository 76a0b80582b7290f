"""Rerank-protocol evaluation of scorers on a split: the rows of every results file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from leanrank.core.io import write_json
from leanrank.data.search import SearchDataset
from leanrank.eval.protocol import RerankTask, build_rerank_tasks, evaluate_rerank, score_tasks


def evaluate_scorer(
    name: str,
    role: str,
    scorer,
    ds: SearchDataset,
    tasks: list[RerankTask],
    label_fn=None,
) -> tuple[dict, object]:
    """One results row (quality + the seconds it took) and the RerankResult behind it."""
    t0 = time.perf_counter()
    scores = score_tasks(scorer, tasks, ds.titles)
    seconds = time.perf_counter() - t0
    rel = ds.labels.relevant_min_label - ds.labels.label_min
    result = evaluate_rerank(tasks, scores, rel, [label_fn(s) for s in scores] if label_fn else None)
    lo, hi = result.full.ci("ndcg@10")
    row = {"name": name, "role": role, **result.summary(), "ndcg@10_ci95": [lo, hi],
           "eval_pairs": int(sum(len(t.product_ids) for t in tasks)), "eval_seconds": round(seconds, 1)}
    return row, result


def evaluate_model_dir(
    model_dir: Path, dataset: str, data_dir, split: str, out: Path | None,
    max_queries: int | None = None, batch_size: int = 64,
) -> dict:
    """``leanrank eval``: rerank-protocol metrics of a cross-encoder dir; writes metrics.json."""
    from leanrank.core.errors import LeanrankError
    from leanrank.data.registry import load_search_dataset
    from leanrank.models.bm25 import BM25Index
    from leanrank.runtime.loading import load_scorer

    if split not in ("train", "valid", "test"):
        raise LeanrankError(f"split must be train, valid or test, got {split!r}")
    model = load_scorer(model_dir)
    full = load_search_dataset(dataset, data_dir)
    ds = full.split()[split]
    tasks = build_rerank_tasks(ds, BM25Index.build(full.titles), max_queries=max_queries)

    class _Scorer:
        def score(self, q, t):
            return model.score(q, t, batch_size=batch_size)

    row, _ = evaluate_scorer(str(model_dir), "variant", _Scorer(), ds, tasks, model.predict_labels)
    metrics = {"model": str(model_dir), "dataset": dataset, "split": split, "metrics": row}
    write_json(out or Path(model_dir) / f"metrics-{split}.json", metrics)
    return metrics


def model_size(model_dir: Path) -> dict:
    """Size on disk of a model's weight files (safetensors, ONNX or .pt; MB) and the parameter
    count of its safetensors."""
    weights = [f for f in Path(model_dir).iterdir() if f.suffix in (".safetensors", ".onnx", ".pt")]
    size = sum(f.stat().st_size for f in weights) / 1e6
    files = [f for f in weights if f.suffix == ".safetensors"]
    from safetensors import safe_open

    params = 0
    for f in files:
        with safe_open(str(f), "np") as fh:
            params += sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())
    return {"size_mb": round(size, 2), "params": params}
