"""Distillation benchmark on Home Depot (``make bench-distill``): one run, teacher and peers included.

1. Transfer data: judged + BM25 + dense-recall candidates of train queries, scored once by the
   teacher (cached, resumable).
2. Ablation: the same student shape trained for the same number of steps with each loss /
   add-on switched on alone (and a labels-only run without the teacher, and a two-stage chain).
3. Main student: the ablation config with the best *validation* NDCG@10, trained longer; then
   its ORT fp32 / ORT int8 / torch int8 forms.
4. Every row measured in this process: rerank-protocol NDCG@10 on test queries, interleaved
   throughput at batch 32, latency, size, peak RSS; peers = torch and ORT ``quantize_dynamic`` of
   the teacher.
Finished students are reused when the script is re-run (delete ``--work`` to retrain).
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from leanrank.bench.prune import measure_rows
from leanrank.bench.quantize import Variant, _ort_peer, torch_peer
from leanrank.bench.report import write_results
from leanrank.compress.distill import DistillConfig, distill, distill_chain
from leanrank.compress.quantize import DynamicInt8Config, quantize_
from leanrank.compress.students import StudentConfig, make_student
from leanrank.compress.transfer import TransferConfig, build_transfer, dense_recall
from leanrank.core.machine import machine_info, versions
from leanrank.data.registry import load_search_dataset
from leanrank.eval.protocol import build_rerank_tasks
from leanrank.models.bm25 import BM25Index
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.runtime.export import export_onnx, ort_quantize
from leanrank.runtime.loading import load_scorer
from leanrank.train.search import rerank_validator

COLUMNS = ("name", "role", "backend", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher", "spearman_vs_teacher",
           "best_valid_ndcg@10", "pairs_per_s", "pairs_per_s_min", "pairs_per_s_max", "speedup", "p50_ms",
           "p99_ms", "size_mb", "peak_rss_mb", "params", "flops_per_pair")
STUDENT = StudentConfig(num_layers=2, hidden_size=256, intermediate_size=1024)
ASSISTANT = StudentConfig(num_layers=3)
# name → DistillConfig overrides; each switches one thing against the "listwise" base
ABLATION = {
    "labels-only": {"listwise": 0.0, "hard": 1.0},
    "listwise": {},
    "margin-mse": {"listwise": 0.0, "margin_mse": 1.0},
    "pointwise-mse": {"listwise": 0.0, "mse": 1.0},
    "soft+hard": {"listwise": 0.0, "soft": 0.5, "hard": 0.5, "temperature": 2.0},
    "listwise+intermediate": {"hidden": 1.0, "attention": 1.0},
    "listwise+curriculum": {"curriculum": True},
    "listwise+multitask": {"multitask": 0.5},
}


def train_student(name: str, teacher: CrossEncoder, transfer, config: DistillConfig, work: Path, validate,
                  log, shape: StudentConfig = STUDENT) -> tuple[CrossEncoder, dict]:
    folder = work / name
    if (folder / "leanrank.json").exists() and (work / f"{name}-run" / "run.json").exists():
        log(f"reusing {folder}")
        return CrossEncoder.from_pretrained(folder), json.loads((work / f"{name}-run" / "run.json").read_text())
    log(f"distilling {name}: {asdict(config)}")
    student = make_student(teacher, shape)
    record = distill(teacher, student, transfer, config, work / f"{name}-run", validate=validate)
    student.save(folder)
    return student, record


def train_chain(teacher, transfer, config: DistillConfig, work: Path, validate, log) -> tuple[CrossEncoder, dict]:
    folder = work / "multistage"
    if (folder / "leanrank.json").exists():
        log(f"reusing {folder}")
        model = CrossEncoder.from_pretrained(folder)
        return model, {"best_ndcg@10": model.card.metrics.get("valid_ndcg@10")}
    half = replace(config, steps=config.steps // 2)
    student, records = distill_chain(teacher, [(ASSISTANT, half), (STUDENT, replace(config, teacher_scores="online"))],
                                     transfer, work / "multistage-run", validate=validate, log=log)
    student.save(folder)
    return student, {"best_ndcg@10": records[-1]["best_ndcg@10"], "stages": records}


def _summary(record: dict) -> dict:
    return {"best_valid_ndcg@10": record.get("best_ndcg@10"), "train_seconds": record.get("train_seconds"),
            "steps": record.get("steps"), "train_pairs_per_s": record.get("train_pairs_per_s")}


def run(teacher_dir: Path, data_dir: Path | None, out: Path, work: Path, max_queries: int = 150,
        valid_queries: int = 100, steps: int = 400, main_steps: int = 2400, transfer_queries: int = 3000,
        lr: float = 3e-4, repeats: int = 5, dataset: str = "homedepot", log=print) -> dict:
    t_start = time.perf_counter()
    full = load_search_dataset(dataset, data_dir)
    splits = full.split()
    ds, train = splits["test"], splits["train"]
    tasks = build_rerank_tasks(ds, BM25Index.build(full.titles), depth=100, max_queries=max_queries)
    log(f"test: {len(tasks)} queries, {sum(len(t.product_ids) for t in tasks)} pairs")
    work.mkdir(parents=True, exist_ok=True)
    teacher = CrossEncoder.from_pretrained(teacher_dir)
    tconfig = TransferConfig(max_queries=transfer_queries)
    transfer = build_transfer(teacher, train, work / "transfer", tconfig, dense=dense_recall(train.titles, log=log),
                              teacher_name=str(teacher_dir), progress=False, log=log)
    log(f"transfer: {len(transfer.lists)} lists, {transfer.pairs:,} teacher-scored pairs")
    validate = rerank_validator(splits["valid"], BM25Index.build(splits["valid"].titles), valid_queries)
    base = DistillConfig(steps=steps, eval_every=max(steps // 3, 1), lr=lr)

    variants = [Variant("teacher-fp32", "teacher", "torch", teacher, Path(teacher_dir))]
    variants.append(torch_peer(teacher, work))
    parity = splits["valid"].sample_pairs(256, seed=1)
    if not (work / "teacher-onnx" / "model.onnx").exists():
        export_onnx(teacher, work / "teacher-onnx", parity, overwrite=True, fuse=False)   # the peer's input
    peer_dir = _ort_peer(work / "teacher-onnx", work / "ort-peer")
    variants.append(Variant("peer-ort-quantize_dynamic", "peer", "onnxruntime", load_scorer(peer_dir), peer_dir))

    ablation = {}
    for name, overrides in ABLATION.items():
        config = replace(base, **overrides)
        model, record = train_student(name, teacher, transfer, config, work, validate, log)
        ablation[name] = (config, record)
        variants.append(Variant(f"ablation-{name}", "ablation", "torch", model, work / name,
                                extra={"distill": asdict(config), **_summary(record)}))
    model, record = train_chain(teacher, transfer, base, work, validate, log)
    variants.append(Variant("ablation-multistage", "ablation", "torch", model, work / "multistage",
                            extra={"chain": f"teacher → {ASSISTANT} → {STUDENT}", **_summary(record)}))

    chosen = max((n for n in ablation if n != "labels-only"), key=lambda n: ablation[n][1]["best_ndcg@10"] or -1)
    main_config = replace(ablation[chosen][0], steps=main_steps, eval_every=max(main_steps // 6, 1))
    log(f"main student: {chosen} (best validation NDCG@10 of the ablation), {main_steps} steps")
    student, record = train_student("student", teacher, transfer, main_config, work, validate, log)
    info = {"chosen_by_validation": chosen, "distill": asdict(main_config), **_summary(record)}
    variants.append(Variant("student-fp32", "variant", "torch", student, work / "student", extra=dict(info)))
    if not (work / "student-onnx" / "model.onnx").exists():
        export_onnx(student, work / "student-onnx", parity, overwrite=True)
    variants.append(Variant("student-ort-fp32", "variant", "onnxruntime", load_scorer(work / "student-onnx"),
                            work / "student-onnx", extra=dict(info)))
    ort_quantize(work / "student-onnx", work / "student-ort-int8", parity, overwrite=True, min_spearman=0.95)
    variants.append(Variant("student-ort-int8-dynamic", "variant", "onnxruntime",
                            load_scorer(work / "student-ort-int8"), work / "student-ort-int8", extra=dict(info)))
    q8 = copy.deepcopy(student)
    quantize_(q8, DynamicInt8Config())
    q8.save(work / "student-torch-int8")
    variants.append(Variant("student-torch-int8-dynamic", "variant", "torch", load_scorer(work / "student-torch-int8"),
                            work / "student-torch-int8", extra=dict(info)))

    rows = measure_rows(variants, ds, tasks, repeats, log)
    doc = {
        "command": "make bench-distill  # = python -m leanrank.bench.distill " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "dataset": dataset, "split": "test", "columns": list(COLUMNS),
        "protocol": {"candidates": "judged products + top BM25 catalog products not judged, up to 100",
                     "queries": len(tasks),
                     "speed": f"{repeats} interleaved repeats after warm-up, batch 32, median (min..max); "
                              f"{torch.get_num_threads()} threads",
                     "student": asdict(STUDENT), "assistant": asdict(ASSISTANT),
                     "transfer": {**asdict(tconfig), "lists": len(transfer.lists), "pairs": transfer.pairs,
                                  "scored_by": str(teacher_dir)},
                     "ablation": f"{steps} steps each, {base.queries_per_batch} queries × {base.list_size} candidates "
                                 f"per step, lr {base.lr}; best of {steps // base.eval_every} validations on "
                                 f"{valid_queries} valid queries",
                     "main": f"{main_steps} steps of the ablation config with the best validation NDCG@10",
                     "flops": "torch.utils.flop_counter, one pair padded to 48 tokens"},
        "machine": machine_info(), "versions": versions(), "rows": rows, "bar": bars(rows),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_results(out, doc)
    return doc


def bars(rows: list[dict]) -> dict:
    student = next((r for r in rows if r["name"] == "student-fp32"), None)
    int8 = [r for r in rows if r["name"].startswith("student-") and "int8" in r["name"]]
    best8 = max(int8, key=lambda r: (r["ndcg_vs_teacher"] >= 0.98, r["speedup"]), default=None)

    def bar(row, speed):
        if row is None:
            return None
        return {"row": row["name"], "speedup": round(row["speedup"], 3), "ndcg_vs_teacher": round(row["ndcg_vs_teacher"], 4),
                "met": row["speedup"] >= speed and row["ndcg_vs_teacher"] >= 0.98}

    return {"student_4x_at_98pct": bar(student, 4.0), "student_int8_10x_at_98pct": bar(best8, 10.0)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, default=Path("runs/teacher-homedepot-2/model"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/homedepot-distill"))
    parser.add_argument("--work", type=Path, default=Path("runs/distill-bench"))
    parser.add_argument("--max-queries", type=int, default=150)
    parser.add_argument("--valid-queries", type=int, default=100)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--main-steps", type=int, default=2400)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--transfer-queries", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dataset", default="homedepot")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    run(args.teacher, args.data_dir, args.out, args.work, args.max_queries, args.valid_queries, args.steps,
        args.main_steps, args.transfer_queries, args.lr, args.repeats, args.dataset)
