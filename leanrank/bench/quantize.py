"""``make bench-quantize`` → benchmarks/results/homedepot-quantize.{json,md}.

Every quantized variant of the teacher next to the teacher and two peers (plain
``torch.ao.quantization.quantize_dynamic`` and plain ORT ``quantize_dynamic``), all in one
process: quality on the rerank protocol of the test split, agreement with the teacher, then
throughput measured interleaved (warm-up, repeats, median and spread), per-query latency, size on
disk and peak RSS (a fresh process per variant). Plans and calibrations use train/valid only.
"""

from __future__ import annotations

import copy
import random
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from leanrank.bench.evaluate import evaluate_scorer, model_size
from leanrank.bench.report import write_results
from leanrank.core.machine import machine_info, versions
from leanrank.data.registry import load_search_dataset
from leanrank.eval.latency import query_latency
from leanrank.eval.memory import peak_rss_mb
from leanrank.eval.protocol import build_rerank_tasks
from leanrank.models.bm25 import BM25Index
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.runtime.parity import spearman

COLUMNS = ("name", "role", "backend", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher", "spearman_vs_teacher",
           "pairs_per_s", "pairs_per_s_min", "pairs_per_s_max", "speedup", "p50_ms", "p99_ms", "size_mb",
           "peak_rss_mb", "params", "quality_queries")


@dataclass
class Variant:
    name: str
    role: str                      # teacher | peer | variant
    backend: str                   # torch | onnxruntime
    scorer: object
    folder: Path | None = None     # what is on disk (size, RSS)
    slow: bool = False             # measured on fewer queries/pairs (runs far below fp32 speed)
    extra: dict = field(default_factory=dict)
    rss_peer: str | None = None


def torch_peer(teacher: CrossEncoder, work: Path) -> Variant:
    """The peer ``torch.ao.quantization.quantize_dynamic`` of ``teacher`` (Linear layers, qint8), as a
    user would call it; its state dict is written to WORK/torch-peer for its size only."""
    peer = copy.deepcopy(teacher)
    peer.model = torch.ao.quantization.quantize_dynamic(peer.model, {torch.nn.Linear}, dtype=torch.qint8)
    (work / "torch-peer").mkdir(parents=True, exist_ok=True)
    torch.save(peer.model.state_dict(), work / "torch-peer" / "model.pt")
    return Variant("peer-torch-quantize_dynamic", "peer", "torch", peer, work / "torch-peer",
                   rss_peer="torch-dynamic")


def _ort_peer(src: Path, dest: Path) -> Path:
    """The peer exactly as a user would call it: ORT ``quantize_dynamic`` with its defaults."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    dest.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src / "model.onnx"))
    del model.graph.value_info[:]
    onnx.save(model, str(dest / "float.onnx"))
    quantize_dynamic(str(dest / "float.onnx"), str(dest / "model.onnx"))
    (dest / "float.onnx").unlink()
    for f in src.iterdir():
        if f.name != "model.onnx":
            shutil.copy(f, dest / f.name)
    return dest


def build_variants(teacher_dir: Path, splits, work: Path, valid_queries: int, qat_steps: int, log,
                   min_spearman: float = 0.98) -> list[Variant]:
    from leanrank.cli_compress import _mixed, _qat
    from leanrank.compress.quantize import make_config, quantize_
    from leanrank.runtime.export import export_onnx, ort_quantize
    from leanrank.runtime.loading import load_scorer

    parity = splits["valid"].sample_pairs(256, seed=1)
    calibration = splits["train"].sample_pairs(512, seed=2)
    teacher = CrossEncoder.from_pretrained(teacher_dir)
    teacher.eval()
    out = [Variant("teacher-fp32", "teacher", "torch", teacher, teacher_dir)]

    out.append(torch_peer(teacher, work))

    log("exporting the teacher to ONNX (plain graph for the peer, attention-fused for leanrank) ...")
    plain_dir, onnx_dir = work / "ort-fp32", work / "ort-fp32-fused"
    export_onnx(teacher, plain_dir, parity, overwrite=True, fuse=False)
    export_onnx(teacher, onnx_dir, parity, overwrite=True)
    out.append(Variant("ort-fp32", "variant", "onnxruntime", load_scorer(plain_dir), plain_dir))
    out.append(Variant("ort-fp32-fused", "variant", "onnxruntime", load_scorer(onnx_dir), onnx_dir))
    peer_dir = _ort_peer(plain_dir, work / "ort-peer")
    out.append(Variant("peer-ort-quantize_dynamic", "peer", "onnxruntime", load_scorer(peer_dir), peer_dir))

    log("ORT int8: dynamic, static QDQ, mixed plan ...")
    ort_quantize(onnx_dir, work / "ort-int8-dynamic", parity, overwrite=True, min_spearman=min_spearman)
    ort_quantize(plain_dir, work / "ort-int8-static", parity, calibration=calibration, method="percentile",
                 overwrite=True, min_spearman=min(min_spearman, 0.9))
    plan = _mixed(onnx_dir, work / "ort-int8-mixed", splits, 0.005, valid_queries, parity, True, True, log)
    for name in ("ort-int8-dynamic", "ort-int8-static", "ort-int8-mixed"):
        extra = {"float_blocks": plan["float_blocks"], "mixed_plan": plan} if name.endswith("mixed") else {}
        out.append(Variant(name, "variant", "onnxruntime", load_scorer(work / name), work / name, extra=extra))

    log("torch schemes ...")
    for scheme in ("int8-dynamic", "int8-static", "int8-weight", "int4-weight", "emb-int8", "emb-int4", "bf16", "fp16"):
        model = copy.deepcopy(teacher)
        overrides = {"calibration": tuple(calibration)} if scheme == "int8-static" else {}
        report = quantize_(model, make_config(scheme, **overrides))
        folder = model.save(work / f"torch-{scheme}")
        extra = {"quantized_bytes_before": report.bytes_before, "quantized_bytes_after": report.bytes_after,
                 "quantized_ratio": round(report.ratio, 3)}
        out.append(Variant(f"torch-{scheme}", "variant", "torch", model, folder, slow=scheme in ("bf16", "fp16"),
                           extra=extra))
    log("torch int8-inductor: PT2E static int8, then torch.compile (Inductor, oneDNN int8 kernels) ...")
    from leanrank.runtime.inductor import InductorInt8Config, quantize_inductor

    compiled = quantize_inductor(copy.deepcopy(teacher), InductorInt8Config(), calibration)
    folder = compiled.save(work / "torch-int8-inductor")
    step = compiled.card.steps[-1]
    out.append(Variant("torch-int8-inductor", "variant", "torch-inductor", compiled, folder,
                       extra={"quantized_bytes_before": step["bytes_before"], "quantized_bytes_after": step["bytes_after"],
                              "quantized_ratio": round(step["bytes_before"] / step["bytes_after"], 3)}))
    if qat_steps:
        log(f"QAT: {qat_steps} fake-quant steps, then static int8 ...")
        info = _qat(teacher_dir, work / "torch-int8-qat", splits, qat_steps, 1e-5, valid_queries, log)
        out.append(Variant("torch-int8-qat", "variant", "torch", load_scorer(work / "torch-int8-qat"),
                           work / "torch-int8-qat", extra={"qat": info}))
    return out


def measure_speed(variants: list[Variant], pairs: list[tuple[str, str]], lists, repeats: int, log) -> None:
    """Interleaved: every repeat times each variant once on the same pairs at batch 32."""
    q, t = [p[0] for p in pairs], [p[1] for p in pairs]
    slow_n = max(len(pairs) // 8, 32)
    rates: dict[str, list[float]] = {v.name: [] for v in variants}
    for v in variants:                       # warm-up
        n = slow_n if v.slow else 128
        v.scorer.score(q[:n], t[:n], batch_size=32)
    for r in range(repeats):
        log(f"throughput repeat {r + 1}/{repeats} ...")
        for v in variants:
            n = slow_n if v.slow else len(q)
            t0 = time.perf_counter()
            v.scorer.score(q[:n], t[:n], batch_size=32)
            rates[v.name].append(n / (time.perf_counter() - t0))
    for v in variants:
        v.extra.update({"pairs_per_s": statistics.median(rates[v.name]), "pairs_per_s_min": min(rates[v.name]),
                        "pairs_per_s_max": max(rates[v.name]), "speed_pairs": slow_n if v.slow else len(q)})
        sample = lists[:5] if v.slow else lists
        v.extra.update(query_latency(lambda qs, ts, s=v.scorer: s.score(qs, ts, batch_size=32), sample))


def run(teacher_dir: Path, data_dir: Path | None, out: Path, work: Path, max_queries: int = 150,
        slow_queries: int = 15, valid_queries: int = 100, qat_steps: int = 300, repeats: int = 3,
        dataset: str = "homedepot", min_spearman: float = 0.98, log=print) -> dict:
    t_start = time.perf_counter()
    teacher_dir, out, work = Path(teacher_dir), Path(out), Path(work)
    full = load_search_dataset(dataset, data_dir)
    splits = full.split()
    ds = splits["test"]
    tasks = build_rerank_tasks(ds, BM25Index.build(full.titles), depth=100, max_queries=max_queries)
    slow_tasks = tasks[:slow_queries]
    log(f"test: {len(tasks)} queries, {sum(len(t.product_ids) for t in tasks)} pairs "
        f"(slow variants: {len(slow_tasks)} queries)")
    work.mkdir(parents=True, exist_ok=True)
    variants = build_variants(teacher_dir, splits, work, valid_queries, qat_steps, log, min_spearman)

    rows, teacher_scores = [], {}
    for v in variants:
        log(f"quality: {v.name} ...")
        use = slow_tasks if v.slow else tasks
        row, result = evaluate_scorer(v.name, v.role, v.scorer, ds, use, getattr(v.scorer, "predict_labels", None))
        flat = np.concatenate(result.scores)
        if v.role == "teacher":
            teacher_scores["all"] = flat
            _, small = evaluate_scorer(v.name, v.role, v.scorer, ds, slow_tasks)
            teacher_scores["slow"], teacher_scores["slow_ndcg"] = np.concatenate(small.scores), small.summary()["ndcg@10"]
        ref = teacher_scores["slow"] if v.slow else teacher_scores["all"]
        row.update({"backend": v.backend, "quality_queries": len(use), "spearman_vs_teacher": spearman(ref, flat)})
        rows.append(row)

    rng = random.Random(0)
    pairs = [(t.query, ds.titles[p]) for t in rng.sample(tasks, min(40, len(tasks))) for p in t.product_ids]
    lists = [(t.query, [ds.titles[p] for p in t.product_ids]) for t in rng.sample(tasks, min(20, len(tasks)))]
    measure_speed(variants, rng.sample(pairs, min(1024, len(pairs))), lists, repeats, log)

    log("size and peak RSS (one fresh process per variant) ...")
    teacher_row = rows[0]
    for v, row in zip(variants, rows):
        row.update({k: v.extra[k] for k in v.extra})
        row["size_mb"] = model_size(v.folder)["size_mb"]
        row["peak_rss_mb"] = round(peak_rss_mb(teacher_dir if v.rss_peer else v.folder, v.rss_peer), 1)
    n_params = sum(p.numel() for p in variants[0].scorer.parameters())
    for row in rows:
        base = teacher_scores["slow_ndcg"] if row["quality_queries"] < len(tasks) else teacher_row["ndcg@10"]
        row.update({"params": n_params, "ndcg_vs_teacher": row["ndcg@10"] / base,
                    "speedup": row["pairs_per_s"] / teacher_row["pairs_per_s"]})
        if row["quality_queries"] < len(tasks):
            row["teacher_ndcg@10_same_queries"] = base

    doc = {
        "command": "make bench-quantize  # = python -m leanrank.bench.quantize "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "dataset": dataset, "split": "test", "columns": list(COLUMNS),
        "protocol": {"candidates": "judged products + top BM25 catalog products not judged, up to 100",
                     "queries": len(tasks), "slow_variant_queries": len(slow_tasks),
                     "speed": f"{repeats} interleaved repeats after warm-up, batch 32, median (min..max); "
                              f"{torch.get_num_threads()} threads for torch and ORT",
                     "calibration": "512 train pairs (seed 2)", "parity": "256 valid pairs (seed 1)",
                     "mixed_plan": f"validation NDCG@10 on {valid_queries} valid queries, budget 0.5%"},
        "machine": machine_info(), "versions": versions(), "rows": rows,
        "bar": bars(rows), "notes": notes(rows), "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_results(out, doc)
    return doc


def _int8(row: dict) -> bool:
    return row["role"] == "variant" and "int8" in row["name"] and "emb" not in row["name"]


def bars(rows: list[dict]) -> dict:
    peers = [r for r in rows if r["role"] == "peer"]
    ok = [r for r in rows if _int8(r) and r["ndcg_vs_teacher"] >= 0.99]
    best = max(ok, key=lambda r: r["speedup"], default=None)
    mixed = next((r for r in rows if r["name"].endswith("mixed")), None)
    dominated_by = [p["name"] for p in peers if mixed and p["ndcg@10"] >= mixed["ndcg@10"]
                    and p["pairs_per_s"] >= mixed["pairs_per_s"]]
    emb = next((r for r in rows if r["name"] == "torch-emb-int8"), None)
    return {
        "best_int8_at_99pct": best["name"] if best else None,
        "best_int8_speedup": best["speedup"] if best else None, "speedup_required": 2.5,
        "mixed_dominated_by_peers": dominated_by, "mixed_on_or_above_peer_frontier": not dominated_by,
        "emb_int8_table_ratio": emb.get("quantized_ratio") if emb else None, "emb_ratio_required": 3.5,
        "emb_int8_ndcg_vs_teacher": emb["ndcg_vs_teacher"] if emb else None, "emb_ndcg_required": 0.995,
    }


def notes(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["role"] != "teacher" and r["speedup"] < 1.0:
            out.append(f"{r['name']} is slower than the fp32 teacher on this CPU ({r['speedup']:.2f}×).")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher-homedepot-2/model"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/homedepot-quantize"))
    parser.add_argument("--work", type=Path, default=Path("runs/quantize-bench"))
    parser.add_argument("--max-queries", type=int, default=150)
    parser.add_argument("--slow-queries", type=int, default=15)
    parser.add_argument("--valid-queries", type=int, default=100)
    parser.add_argument("--qat-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="homedepot")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    run(args.teacher, args.data_dir, args.out, args.work, args.max_queries, args.slow_queries, args.valid_queries,
        args.qat_steps, args.repeats, args.dataset)
