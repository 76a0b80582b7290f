"""Probe: how close does a 2-layer, full-width (384) student of the issue-3 teacher get on Home Depot?

The shape of the published MiniLM-L2 cross-encoder (95.6% of L6's TREC-DL NDCG@10 at ~2.3x on a V100).
One longer listwise-KD run from the teacher's own layers (kept evenly spaced) on cached teacher scores
over deeper BM25 candidates than the distillation bench's, validation every STEPS/6 steps (the learning
curve is the point), then every row measured side by side like the benchmarks (rerank protocol, 150
test queries, interleaved throughput at batch 32, 2 threads).

    HF_HUB_OFFLINE=1 python benchmarks/probes/hd_student_2x384.py --steps 3600
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from leanrank.bench.prune import measure_rows
from leanrank.bench.quantize import Variant, _ort_peer, torch_peer
from leanrank.compress.distill import DistillConfig, distill
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

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--teacher", type=Path, default=Path("runs/teacher-homedepot-3/model"))
parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
parser.add_argument("--work", type=Path, default=Path("runs/probe-2x384"))
parser.add_argument("--out", type=Path, default=Path("benchmarks/probes/hd-student-2x384.json"))
parser.add_argument("--steps", type=int, default=3600)
parser.add_argument("--lr", type=float, default=2e-4)
parser.add_argument("--layers", type=int, default=2)
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(2)
t0 = time.perf_counter()
full = load_search_dataset("homedepot", args.data_dir)
splits = full.split()
tasks = build_rerank_tasks(splits["test"], BM25Index.build(full.titles), depth=100, max_queries=150)
teacher = CrossEncoder.from_pretrained(args.teacher)
tconfig = TransferConfig(max_queries=3000, bm25=24, dense=8, max_candidates=40)
transfer = build_transfer(teacher, splits["train"], args.work / "transfer", tconfig,
                          dense=dense_recall(splits["train"].titles, log=print), teacher_name=str(args.teacher),
                          progress=False, log=print)
print(f"transfer: {len(transfer.lists)} lists, {transfer.pairs:,} pairs ({time.perf_counter() - t0:.0f} s)", flush=True)
validate = rerank_validator(splits["valid"], BM25Index.build(splits["valid"].titles), 100)
shape = StudentConfig(num_layers=args.layers)
config = DistillConfig(steps=args.steps, eval_every=max(args.steps // 6, 1), lr=args.lr)
folder = args.work / "student"
if (folder / "leanrank.json").exists():
    student = CrossEncoder.from_pretrained(folder)
    record = json.loads((args.work / "run" / "run.json").read_text())
else:
    student = make_student(teacher, shape)
    record = distill(teacher, student, transfer, config, args.work / "run", validate=validate)
    student.save(folder)
print("validation curve:", [(h.get("step"), round(h.get("ndcg@10", 0), 4)) for h in record.get("history", [])],
      flush=True)

parity = splits["valid"].sample_pairs(256, seed=1)
variants = [Variant("teacher-fp32", "teacher", "torch", teacher, args.teacher)]
variants.append(torch_peer(teacher, args.work))
if not (args.work / "teacher-onnx" / "model.onnx").exists():
    export_onnx(teacher, args.work / "teacher-onnx", parity, overwrite=True, fuse=False)
peer_dir = _ort_peer(args.work / "teacher-onnx", args.work / "ort-peer")
variants.append(Variant("peer-ort-quantize_dynamic", "peer", "onnxruntime", load_scorer(peer_dir), peer_dir))
variants.append(Variant(f"student-{args.layers}x384-fp32", "variant", "torch", student, folder))
if not (args.work / "student-onnx" / "model.onnx").exists():
    export_onnx(student, args.work / "student-onnx", parity, overwrite=True)
ort_quantize(args.work / "student-onnx", args.work / "student-int8", parity, overwrite=True, min_spearman=0.95)
variants.append(Variant(f"student-{args.layers}x384-ort-int8", "variant", "onnxruntime",
                        load_scorer(args.work / "student-int8"), args.work / "student-int8"))
rows = measure_rows(variants, splits["test"], tasks, 3, print)
keep = ("name", "role", "backend", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher", "spearman_vs_teacher", "pairs_per_s",
        "pairs_per_s_min", "pairs_per_s_max", "speedup", "p50_ms", "size_mb")
doc = {"command": "HF_HUB_OFFLINE=1 python benchmarks/probes/hd_student_2x384.py "
                  f"--steps {args.steps} --lr {args.lr} --layers {args.layers}",
       "kind": "probe (not a bar run)", "teacher": str(args.teacher), "student": asdict(shape),
       "distill": asdict(config), "transfer": {**asdict(tconfig), "lists": len(transfer.lists), "pairs": transfer.pairs},
       "validation_curve": record.get("history"), "train_seconds": record.get("train_seconds"),
       "test": f"rerank protocol, {len(tasks)} test queries; speed: 3 interleaved repeats, batch 32, 2 threads",
       "rows": [{k: r.get(k) for k in keep} for r in rows], "machine": machine_info(), "versions": versions(),
       "seconds": round(time.perf_counter() - t0, 1)}
args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
for r in doc["rows"]:
    print(r)
