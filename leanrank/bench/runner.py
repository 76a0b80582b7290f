"""``leanrank bench MODELS...``: the teacher, every variant, the usual peers and score ensembles
side by side in ONE process on the same data and thread settings, then results.json, report.md,
report.html and pareto.png.

Peers (made from the teacher in the run): plain ``torch.ao.quantization.quantize_dynamic``, plain
ONNX Runtime ``quantize_dynamic``, fp32 ONNX Runtime and bf16 autocast. Speed is measured with
interleaved repeats after a warm-up (every repeat times every entry once), median and spread.

>>> bench_models(["runs/teacher/model", "runs/student-int8"], dataset="homedepot",
...              data_dir=None, out_dir=Path("runs/bench"))           # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanrank.core.errors import LeanrankError

COLUMNS = ("name", "role", "backend", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher", "ndcg@10_judged",
           "mrr@10", "mrr@10_ci95", "pairs_per_s", "pairs_per_s_min", "pairs_per_s_max", "speedup",
           "pairs_per_s_b1", "p50_ms", "p99_ms", "size_mb", "size_ratio", "peak_rss_mb", "params",
           "flops_per_pair", "quality_queries")
PEERS = ("torch-dynamic", "ort-dynamic", "ort-fp32", "bf16-autocast")


@dataclass
class Entry:
    """One column of the benchmark: a scorer with ``score(queries, titles, batch_size)``."""

    name: str
    role: str                       # teacher | variant | peer | ensemble
    backend: str                    # torch | onnxruntime | ensemble
    scorer: object
    folder: Path | None = None      # what is on disk (size, RSS)
    slow: bool = False              # measured on a subset (runs far below fp32 speed)
    rss_peer: str | None = None     # memory probe mode (peer built in the probe from the teacher)
    members: tuple[str, ...] = ()   # ensembles
    extra: dict = field(default_factory=dict)


class EnsembleScorer:
    """Scores with every member then mixes (for timing; quality uses per-query ``combine``)."""

    def __init__(self, members: Sequence[object], ensemble):
        self.members, self.ensemble, self.names = list(members), ensemble, list(ensemble.weights)

    def score(self, queries, titles, batch_size: int = 32) -> np.ndarray:
        scores = {n: [m.score(queries, titles, batch_size=batch_size)] for n, m in zip(self.names, self.members)}
        return self.ensemble.combine(scores, self._features(len(queries)))[0]

    def _features(self, n: int):
        needed = getattr(self.ensemble, "feature_names", None) or []
        return {f: [np.zeros(n)] for f in needed} or None


def _unique_name(path: Path, taken: set[str]) -> str:
    name = path.name if path.name not in ("model", "best") else path.parent.name      # <out>/<step>/model
    while name in taken:
        name = f"{path.parent.name}-{name}"
    taken.add(name)
    return name


def build_entries(models: Sequence[Path], teacher_dir: Path, work: Path, peers: Sequence[str], parity,
                  device: str, log: Callable[[str], None]) -> list[Entry]:
    """Teacher first, then the peers made from it, then the given variants (torch or ONNX folders)."""
    import torch

    from leanrank.bench.quantize import _ort_peer
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.runtime.loading import load_scorer

    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise LeanrankError(f"unknown peer {unknown[0]!r}; allowed: {', '.join(PEERS)}")
    teacher = CrossEncoder.from_pretrained(teacher_dir).to(device)
    teacher.eval()
    out = [Entry("teacher-fp32", "teacher", "torch", teacher, teacher_dir)]
    if "torch-dynamic" in peers and device == "cpu":
        peer = copy.deepcopy(teacher)
        peer.model = torch.ao.quantization.quantize_dynamic(peer.model, {torch.nn.Linear}, dtype=torch.qint8)
        (work / "peer-torch-dynamic").mkdir(parents=True, exist_ok=True)
        torch.save(peer.model.state_dict(), work / "peer-torch-dynamic" / "model.pt")   # for its size only
        out.append(Entry("peer-torch-quantize_dynamic", "peer", "torch", peer, work / "peer-torch-dynamic",
                         rss_peer="torch-dynamic"))
    if {"ort-fp32", "ort-dynamic"} & set(peers):
        from leanrank.runtime.export import export_onnx

        onnx_dir = work / "peer-ort-fp32"
        if not (onnx_dir / "model.onnx").exists():
            log("exporting the teacher to ONNX (dynamo, parity-checked) ...")
            export_onnx(teacher, onnx_dir, parity, overwrite=True, fuse=False)   # plain: what peers get
        if "ort-fp32" in peers:
            out.append(Entry("peer-ort-fp32", "peer", "onnxruntime", load_scorer(onnx_dir), onnx_dir))
        if "ort-dynamic" in peers:
            peer_dir = work / "peer-ort-dynamic"
            if not (peer_dir / "model.onnx").exists():
                _ort_peer(onnx_dir, peer_dir)
            out.append(Entry("peer-ort-quantize_dynamic", "peer", "onnxruntime", load_scorer(peer_dir), peer_dir))
    if "bf16-autocast" in peers:
        out.append(Entry("peer-bf16-autocast", "peer", "torch", _Autocast(teacher, "bf16"), teacher_dir,
                         slow=device == "cpu", rss_peer="teacher"))
    taken = {e.name for e in out}
    for path in models:
        if Path(path).resolve() == Path(teacher_dir).resolve():
            continue
        scorer = load_scorer(path)
        if device != "cpu" and hasattr(scorer, "to"):
            scorer.to(device)
        backend = "onnxruntime" if (Path(path) / "model.onnx").exists() else "torch"
        out.append(Entry(_unique_name(Path(path), taken), "variant", backend, scorer, Path(path)))
    return out


class _Autocast:
    """The teacher scored under ``torch.autocast`` (the bf16/fp16 peer)."""

    def __init__(self, model, precision: str):
        self.model, self.precision = model, precision

    def score(self, queries, titles, batch_size: int = 32) -> np.ndarray:
        return self.model.score(queries, titles, batch_size=batch_size, precision=self.precision)

    def predict_labels(self, logits):
        return self.model.predict_labels(logits)


def measure_speed(entries: list[Entry], pairs: list[tuple[str, str]], lists, repeats: int, log,
                  b1_pairs: int = 64) -> None:
    """Interleaved pairs/s at batch 32 and batch 1, then per-query p50/p99 of whole lists."""
    from leanrank.eval.latency import query_latency

    q, t = [p[0] for p in pairs], [p[1] for p in pairs]
    slow_n = max(len(pairs) // 8, 32)
    rates: dict[str, list[float]] = {e.name: [] for e in entries}
    rates_b1: dict[str, list[float]] = {e.name: [] for e in entries}
    for e in entries:                                   # warm-up
        e.scorer.score(q[:64], t[:64], batch_size=32)
        e.scorer.score(q[:4], t[:4], batch_size=1)
    for r in range(repeats):
        log(f"throughput repeat {r + 1}/{repeats} ...")
        for e in entries:
            n = slow_n if e.slow else len(q)
            t0 = time.perf_counter()
            e.scorer.score(q[:n], t[:n], batch_size=32)
            rates[e.name].append(n / (time.perf_counter() - t0))
            n1 = max(b1_pairs // 4, 8) if e.slow else b1_pairs
            t0 = time.perf_counter()
            e.scorer.score(q[:n1], t[:n1], batch_size=1)
            rates_b1[e.name].append(n1 / (time.perf_counter() - t0))
    for e in entries:
        e.extra.update({"pairs_per_s": statistics.median(rates[e.name]), "pairs_per_s_min": min(rates[e.name]),
                        "pairs_per_s_max": max(rates[e.name]), "pairs_per_s_b1": statistics.median(rates_b1[e.name]),
                        "speed_pairs": slow_n if e.slow else len(q)})
        sample = lists[:5] if e.slow else lists
        e.extra.update(query_latency(lambda qs, ts, s=e.scorer: s.score(qs, ts, batch_size=32), sample))


def static_facts(entry: Entry) -> dict:
    """Size on disk, parameter count and forward FLOPs per pair (float architecture)."""
    from leanrank.bench.evaluate import model_size

    facts: dict = {}
    if entry.folder is not None and entry.role != "ensemble":
        facts["size_mb"] = model_size(entry.folder)["size_mb"]
    model = getattr(entry.scorer, "model", None)
    if entry.backend == "torch" and model is not None and hasattr(model, "parameters"):
        facts["params"] = sum(p.numel() for p in model.parameters())
        card = getattr(entry.scorer, "card", None)
        quantized = card is not None and any(st.get("step") == "quantize" for st in card.steps)
        if entry.role in ("teacher", "variant") and hasattr(entry.scorer, "tokenize") and not quantized:
            # (torch's flop counter does not see quantized kernels: no FLOPs rather than a wrong number)
            try:
                from leanrank.bench.prune import flops_per_pair

                facts["flops_per_pair"] = flops_per_pair(entry.scorer)
            except Exception:  # quantized modules the flop counter does not know
                pass
    if entry.backend == "onnxruntime" and entry.folder is not None:
        facts["params"] = _onnx_params(entry.folder / "model.onnx")
    return facts


def _onnx_params(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(np.prod(init.dims) for init in model.graph.initializer if len(init.dims) >= 1))


def _ratios(rows: list[dict]) -> None:
    teacher = rows[0]
    for row in rows:
        base = row.pop("_teacher_ndcg_same_queries", teacher["ndcg@10"])
        row["ndcg_vs_teacher"] = row["ndcg@10"] / base if base else None
        if row.get("pairs_per_s") and teacher.get("pairs_per_s"):
            row["speedup"] = row["pairs_per_s"] / teacher["pairs_per_s"]
        if row.get("size_mb") and teacher.get("size_mb"):
            row["size_ratio"] = teacher["size_mb"] / row["size_mb"]


def bars(rows: list[dict]) -> dict:
    """Issue 7's bars, computed from the rows."""
    peers = [r for r in rows if r["role"] == "peer" and r.get("pairs_per_s") and r.get("quality_queries")
             == rows[0].get("quality_queries")]
    ours = [r for r in rows if r["role"] in ("variant", "ensemble")]
    best_peer = max(peers, key=lambda r: r["pairs_per_s"], default=None)
    beat = [r for r in ours if best_peer and r["ndcg@10"] >= best_peer["ndcg@10"]]
    best_vs_peer = max(beat, key=lambda r: r["pairs_per_s"], default=None)
    at98 = [r for r in ours if r.get("ndcg_vs_teacher") is not None and r["ndcg_vs_teacher"] >= 0.98]
    best98 = max(at98, key=lambda r: r.get("speedup") or 0, default=None)
    return {
        "best_peer": best_peer["name"] if best_peer else None,
        "best_at_or_above_peer_ndcg": best_vs_peer["name"] if best_vs_peer else None,
        "throughput_vs_best_peer": (best_vs_peer["pairs_per_s"] / best_peer["pairs_per_s"]) if best_vs_peer else None,
        "throughput_vs_best_peer_required": 3.0,
        "best_at_98pct_teacher": best98["name"] if best98 else None,
        "speedup_at_98pct_teacher": best98.get("speedup") if best98 else None,
        "speedup_required": 10.0,
    }


def _quality(entries: list[Entry], ds, tasks, slow_tasks, log) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Rerank-protocol quality of every entry (slow ones on ``slow_tasks``); the per-query scores."""
    from leanrank.bench.evaluate import evaluate_scorer
    from leanrank.runtime.parity import spearman

    rows, scores, ref = [], {}, {}
    for e in entries:
        if e.role == "ensemble":
            continue
        log(f"quality: {e.name} ...")
        use = slow_tasks if e.slow else tasks
        row, result = evaluate_scorer(e.name, e.role, e.scorer, ds, use, getattr(e.scorer, "predict_labels", None))
        row.update({"backend": e.backend, "quality_queries": len(use),
                    "mrr@10_ci95": list(result.full.ci("mrr@10")),
                    "ndcg@10_judged_ci95": list(result.judged.ci("ndcg@10"))})
        flat = np.concatenate(result.scores)
        if e.role == "teacher":
            ref["all"] = flat
            _, small = evaluate_scorer(e.name, e.role, e.scorer, ds, slow_tasks)
            ref["slow"], ref["slow_ndcg"] = np.concatenate(small.scores), small.summary()["ndcg@10"]
        if e.slow:
            row["_teacher_ndcg_same_queries"] = ref["slow_ndcg"]
            row["teacher_ndcg@10_same_queries"] = ref["slow_ndcg"]
        row["spearman_vs_teacher"] = spearman(ref["slow"] if e.slow else ref["all"], flat)
        rows.append(row)
        if not e.slow:
            scores[e.name] = result.scores
    return rows, scores


def _fit_ensembles(kinds: Sequence[str], members: list[Entry], valid, valid_tasks, bm25, log) -> list:
    """Fit each ensemble kind on the VALIDATION lists (scores of every member + BM25 features)."""
    from leanrank.compress.ensemble import EnsembleConfig, bm25_features, fit_ensemble
    from leanrank.eval.protocol import score_tasks

    log(f"ensembles: scoring {len(valid_tasks)} validation queries with {len(members)} members ...")
    valid_scores = {m.name: score_tasks(m.scorer, valid_tasks, valid.titles) for m in members}
    gains = [t.gains for t in valid_tasks]
    feats = bm25_features(valid_tasks, bm25)
    return [(kind, fit_ensemble([m.name for m in members], valid_scores, gains, EnsembleConfig(kind=kind),
                                features=feats if kind == "stacking" else None)) for kind in kinds]


def bench_models(models: Sequence[str | Path], *, dataset: str, data_dir, out_dir: Path,
                 teacher: str | Path | None = None, peers: Sequence[str] | bool = True,
                 max_queries: int | None = 150, slow_queries: int = 15, repeats: int = 3,
                 ensembles: Sequence[str] = (), ensemble_members: Sequence[str] | None = None,
                 valid_queries: int = 100, device: str = "cpu", rss: bool = True, command: str | None = None,
                 name: str | None = None, work: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Benchmark ``models`` (the first is the teacher unless ``teacher`` is given) on the test split.

    Writes ``out_dir``/results.json, report.md, report.html, pareto.png (``NAME.*`` with ``name``);
    exported peers go to ``work`` (default ``out_dir/work``, or ``runs/bench-work/NAME``)."""
    import torch

    from leanrank.bench.html import write_report
    from leanrank.core.machine import machine_info, versions
    from leanrank.data.registry import load_search_dataset
    from leanrank.eval.memory import peak_rss_mb
    from leanrank.eval.protocol import build_rerank_tasks, evaluate_rerank
    from leanrank.models.bm25 import BM25Index

    t_start = time.perf_counter()
    models = [Path(m) for m in models]
    if not models and teacher is None:
        raise LeanrankError("give at least one model folder (the first is the teacher unless --teacher)")
    for m in [*models, *([Path(teacher)] if teacher else [])]:
        if not (m / "leanrank.json").is_file() and not (m / "config.json").is_file():
            raise LeanrankError(f"{m}: not a model folder (no leanrank.json or config.json)")
    teacher_dir = Path(teacher) if teacher else models[0]
    peer_list = list(PEERS) if peers is True else list(peers or [])
    if device not in ("cpu", "cuda"):
        raise LeanrankError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise LeanrankError("--device cuda asked for, but no CUDA device is available")
    out_dir = Path(out_dir)
    work = Path(work) if work else (Path("runs") / "bench-work" / name if name else out_dir / "work")
    work.mkdir(parents=True, exist_ok=True)

    full = load_search_dataset(dataset, data_dir)
    splits = full.split()
    ds = splits["test"]
    bm25 = BM25Index.build(full.titles)
    tasks = build_rerank_tasks(ds, bm25, depth=100, max_queries=max_queries)
    slow_tasks = tasks[:slow_queries]
    log(f"test: {len(tasks)} queries, {sum(len(t.product_ids) for t in tasks)} pairs")
    parity = splits["valid"].sample_pairs(256, seed=1)
    entries = build_entries(models, teacher_dir, work, peer_list, parity, device, log)
    rows, scores = _quality(entries, ds, tasks, slow_tasks, log)

    if ensembles:
        names = list(ensemble_members or [e.name for e in entries if e.role == "variant" and not e.slow])
        by_name = {e.name: e for e in entries}
        missing = [n for n in names if n not in by_name or n not in scores]
        if missing or len(names) < 2:
            raise LeanrankError(f"ensembles need >= 2 members among {sorted(scores)}; got {names}")
        members = [by_name[n] for n in names]
        valid_tasks = build_rerank_tasks(splits["valid"], bm25, depth=100, max_queries=valid_queries)
        from leanrank.compress.ensemble import bm25_features

        test_feats = bm25_features(tasks, bm25)
        rel = ds.labels.relevant_min_label - ds.labels.label_min
        for kind, ens in _fit_ensembles(ensembles, members, splits["valid"], valid_tasks, bm25, log):
            mixed = ens.combine({n: scores[n] for n in names}, test_feats if kind == "stacking" else None)
            result = evaluate_rerank(tasks, mixed, rel)
            label = f"ensemble-{kind}"
            row = {"name": label, "role": "ensemble", "backend": "ensemble", **result.summary(),
                   "ndcg@10_ci95": list(result.full.ci("ndcg@10")), "mrr@10_ci95": list(result.full.ci("mrr@10")),
                   "quality_queries": len(tasks), "members": names, "weights": ens.weights}
            rows.append(row)
            entries.append(Entry(label, "ensemble", "ensemble", EnsembleScorer([m.scorer for m in members], ens),
                                 members=tuple(names)))

    rng = random.Random(0)
    pairs = [(t.query, ds.titles[p]) for t in rng.sample(tasks, min(40, len(tasks))) for p in t.product_ids]
    lists = [(t.query, [ds.titles[p] for p in t.product_ids]) for t in rng.sample(tasks, min(20, len(tasks)))]
    measure_speed(entries, rng.sample(pairs, min(1024, len(pairs))), lists, repeats, log)

    by_row = {r["name"]: r for r in rows}
    for e in entries:
        row = by_row[e.name]
        row.update({k: v for k, v in e.extra.items()})
        row.update(static_facts(e))
        if e.role == "ensemble":
            parts = [by_row[m] for m in e.members]
            row["size_mb"] = round(sum(p.get("size_mb", 0) for p in parts), 2)
            row["params"] = sum(p.get("params", 0) for p in parts)
        elif rss and device == "cpu":
            log(f"peak RSS: {e.name} (fresh process) ...")
            probe_dir = teacher_dir if e.rss_peer else e.folder
            peer = e.rss_peer if e.rss_peer == "torch-dynamic" else None
            row["peak_rss_mb"] = round(peak_rss_mb(probe_dir, peer, threads=torch.get_num_threads()), 1)
    _ratios(rows)
    for e in entries:     # an ensemble's gain and cost against its best member
        if e.role == "ensemble":
            best = max((by_row[m] for m in e.members), key=lambda r: r["ndcg@10"])
            by_row[e.name]["ndcg_gain_vs_best_member"] = by_row[e.name]["ndcg@10"] - best["ndcg@10"]
            by_row[e.name]["p50_cost_vs_best_member"] = by_row[e.name]["p50_ms"] / best["p50_ms"]

    doc = {
        "command": command or "leanrank bench " + " ".join(str(m) for m in models),
        "dataset": dataset, "split": "test", "columns": list(COLUMNS) + (
            ["ndcg_gain_vs_best_member", "p50_cost_vs_best_member"] if ensembles else []),
        "device": device,
        "protocol": {"candidates": "judged products + top BM25 catalog products not judged, up to 100",
                     "queries": len(tasks), "slow_variant_queries": len(slow_tasks),
                     "speed": f"{repeats} interleaved repeats after warm-up; batch 32 on "
                              f"{entries[0].extra.get('speed_pairs')} pairs and batch 1 on 64 pairs; median "
                              f"(min..max); {torch.get_num_threads()} threads for torch and ORT; device {device}",
                     "latency": "p50/p99 ms to score one query's whole candidate list (20 queries, batch 32)",
                     "ci": "bootstrap 95% over queries (1,000 resamples)",
                     "flops": "torch.utils.flop_counter, one pair padded to 48 tokens (float torch models)",
                     "peak_rss": "fresh process per entry: load + score 32 pairs twice",
                     "ensembles": f"fitted on {valid_queries} validation queries; latency measured by "
                                  "running the members one after the other" if ensembles else "none"},
        "machine": machine_info(), "versions": versions(), "rows": rows, "bar": bars(rows),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_report(doc, out_dir, stem=name)
    return doc
