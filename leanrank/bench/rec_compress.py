"""``make bench-rec-compress``: compressing the Beauty sequential teacher (from ``make bench-rec``).

Two results files from one run (same teacher, same split, full ranking):

* ``beauty-compress``: the teacher's item table as int8 / int4 rows and as low-rank V×r·r×H
  (truncated SVD, with and without a short fine-tune).
* ``beauty-distill``: small students (hidden 32, no side information) distilled from the teacher
  (CE + KL to the teacher's full next-item distribution), with ablations: labels only, and KL
  without the PCA initialisation from the teacher's item vectors; the main student also with an
  int8 item table.

    python -m leanrank.bench.rec_compress --teacher runs/rec-bench/beauty/teacher/model \\
        --data-dir ../shared/data --out-dir benchmarks/results
"""

from __future__ import annotations

import copy
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from leanrank.bench.rec import METRICS
from leanrank.bench.report import write_results
from leanrank.compress.distill_rec import RecDistillConfig, distill_rec, student_from_teacher
from leanrank.compress.item_table import ItemTableConfig, compress_item_table_, load_seqrec, nbytes
from leanrank.core.machine import machine_info, versions
from leanrank.data.sequences import load_sequence_dataset
from leanrank.models.seqrec import SeqRec, SeqRecConfig
from leanrank.train.rec import RecTrainConfig, evaluate_seqrec, train_rec

COLUMNS = ("name", "role", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "ndcg_vs_teacher", "size_mb", "size_ratio",
           "table_mb", "table_ratio", "train_minutes", "epochs")
STUDENT = {"hidden": 32, "layers": 2, "heads": 2}


def row(name: str, role: str, model: SeqRec, ds, teacher_row: dict | None = None, record: dict | None = None,
        **extra) -> dict:
    results = evaluate_seqrec(model, ds)
    out = {"name": name, "role": role, **{k: results["test"][k] for k in METRICS},
           "valid_ndcg@10": results["valid"]["ndcg@10"], "size_mb": round(nbytes(model) / 1e6, 3),
           "table_mb": round(nbytes(model.items) / 1e6, 3), "popularity_ndcg@10": results["popularity_test"]["ndcg@10"]}
    if teacher_row:
        out["ndcg_vs_teacher"] = round(out["ndcg@10"] / teacher_row["ndcg@10"], 4)
        out["size_ratio"] = round(teacher_row["size_mb"] / out["size_mb"], 2)
        out["table_ratio"] = round(teacher_row["table_mb"] / out["table_mb"], 2)
    if record:
        out.update(train_minutes=round(record["train_seconds"] / 60, 2), epochs=record["epochs_done"],
                   best_step=record["best_step"])
    return {**out, **extra}


def run(teacher_dir: Path, data_dir: Path | None, out_dir: Path, work: Path, threads: int = 2,
        finetune_minutes: float = 3.0, student_minutes: float = 8.0, valid_users: int = 5000,
        dataset: str = "beauty", skip_distill: bool = False, log=print) -> dict:
    """Compress and distil the teacher; writes OUT_DIR/DATASET-compress and DATASET-distill (.json/.md)."""
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    ds = load_sequence_dataset(dataset, data_dir)
    teacher = load_seqrec(teacher_dir)
    t_row = row("teacher (SASRec h64, attributes + titles)", "teacher", teacher, ds)
    log(f"teacher: test NDCG@10 {t_row['ndcg@10']:.4f}, {t_row['size_mb']} MB")
    base = dict(valid_users=valid_users, epochs=1000, patience=1000)

    compress_rows = [t_row]
    half = teacher.items.full().shape[1] // 2
    # (kind, rank, fine-tune minutes, then store the V×r factor in int8)
    for kind, rank, minutes, int8_factor in (
            ("int8", None, 0, False), ("int4", None, 0, False), ("lowrank", 15, 0, False),
            ("lowrank", 15, finetune_minutes, False), ("lowrank", 8, 0, False), ("lowrank", 8, finetune_minutes, False),
            ("lowrank", half, 0, False), ("lowrank", half, finetune_minutes, True)):
        model = copy.deepcopy(teacher)
        report = compress_item_table_(model, ItemTableConfig(kind=kind, rank=rank))
        name = f"item table {kind}" + (f" r={rank}" if rank else "")
        record = None
        if minutes:
            name += f" + fine-tune {minutes:g} min"
            record = train_rec(model, ds, RecTrainConfig(lr=5e-4, max_seconds=minutes * 60, **base),
                               work / name.replace(" ", "-").replace("=", ""))
        variants = [(name, model)]
        if int8_factor:
            stored = copy.deepcopy(model)
            compress_item_table_(stored, ItemTableConfig(kind="int8"))
            variants.append((name + " + int8 factor", stored))
        for label, m in variants:
            compress_rows.append(row(label, "variant", m, ds, t_row, record, table_bytes_before=report["bytes_before"]))
            log(f"{label}: NDCG@10 {compress_rows[-1]['ndcg@10']:.4f} ({compress_rows[-1]['ndcg_vs_teacher']:.3f}), "
                f"table ×{compress_rows[-1]['table_ratio']}")
    if skip_distill:
        doc = _compress_doc(compress_rows, teacher_dir, ds, dataset, finetune_minutes, threads)
        write_results(out_dir / f"{dataset}-compress", {**doc, "seconds": round(time.perf_counter() - t_start, 1)})
        return {"compress": doc}

    distill_rows = [t_row]
    train = RecTrainConfig(lr=2e-3, max_seconds=student_minutes * 60, **base)
    runs = (("student KD + PCA init (main)", 0.5, True), ("ablation: labels only + PCA init", 0.0, True),
            ("ablation: KD, random init", 0.5, False))
    main = None
    for name, alpha, pca in runs:
        if pca:
            student = student_from_teacher(teacher, **STUDENT)
        else:
            torch.manual_seed(0)
            student = SeqRec(SeqRecConfig(n_items=ds.n_items, max_len=teacher.config.max_len,
                                          dropout=teacher.config.dropout, **STUDENT))
        config = RecDistillConfig(alpha=alpha, temperature=1.0, train=train)
        record = distill_rec(teacher, student, ds, config, work / name.split(" (")[0].replace(" ", "-").replace(":", ""))
        role = "variant" if "main" in name else "ablation"
        distill_rows.append(row(name, role, student, ds, t_row, record, alpha=alpha, pca_init=pca))
        log(f"{name}: NDCG@10 {distill_rows[-1]['ndcg@10']:.4f} ({distill_rows[-1]['ndcg_vs_teacher']:.3f}), "
            f"×{distill_rows[-1]['size_ratio']} smaller")
        main = main or student
    q8 = copy.deepcopy(main)
    compress_item_table_(q8, ItemTableConfig(kind="int8"))
    distill_rows.append(row("student KD + PCA init + int8 item table", "variant", q8, ds, t_row))

    compress_doc = _compress_doc(compress_rows, teacher_dir, ds, dataset, finetune_minutes, threads)
    common = {k: compress_doc[k] for k in ("machine", "versions", "dataset", "split", "columns", "command")}
    protocol = {k: v for k, v in compress_doc["protocol"].items() if k != "fine-tune"}
    students = [r for r in distill_rows if r["role"] == "variant"]
    best_st = max((r for r in students if r["size_ratio"] >= 10), key=lambda r: r["ndcg_vs_teacher"], default=None)
    distill_doc = {**common, "rows": distill_rows,
                   "protocol": {**protocol, "student": STUDENT, "train": asdict(train),
                                "kd": "(1-α)·CE + α·T²·KL(teacher ‖ student) over the full catalog, T = 1"},
                   "bar": {"student_10x_smaller_at_97pct": None if best_st is None else {
                       "row": best_st["name"], "size_ratio": best_st["size_ratio"],
                       "ndcg_vs_teacher": best_st["ndcg_vs_teacher"], "met": best_st["ndcg_vs_teacher"] >= 0.97}}}
    elapsed = round(time.perf_counter() - t_start, 1)
    write_results(out_dir / f"{dataset}-compress", {**compress_doc, "seconds": elapsed})
    write_results(out_dir / f"{dataset}-distill", {**distill_doc, "seconds": elapsed})
    return {"compress": compress_doc, "distill": distill_doc}


def _compress_doc(rows: list[dict], teacher_dir, ds, dataset: str, finetune_minutes: float, threads: int) -> dict:
    """The item-table results document; its bar is the best low-rank row at >= 4x smaller."""
    best = max((r for r in rows[1:] if r["name"].startswith("item table lowrank") and r["table_ratio"] >= 4),
               key=lambda r: r["ndcg_vs_teacher"], default=None)
    return {"machine": machine_info(), "versions": versions(("leanrank", "torch", "numpy")),
            "dataset": dataset, "split": "test (leave-one-out, last item)", "columns": list(COLUMNS),
            "command": f"make bench-rec-compress  # = python -m leanrank.bench.rec_compress {shlex.join(sys.argv[1:])}",
            "rows": rows,
            "protocol": {"ranking": f"full ranking over all {ds.n_items:,} items, history removed, pessimistic ties",
                         "teacher": str(teacher_dir), "threads": threads,
                         "sizes": "size_mb = every parameter and buffer (the teacher's includes its frozen 384-d "
                                  "title-embedding buffer, 18.6 MB); table_mb = the item-id table alone (an int8 "
                                  "factor counts its codes, a float scale and zero per row, and the float projection)",
                         "fine-tune": f"{finetune_minutes} min at lr 5e-4, best valid epoch"},
            "bar": {"lowrank_table_4x_smaller_at_97pct": None if best is None else {
                "row": best["name"], "table_ratio": best["table_ratio"], "ndcg_vs_teacher": best["ndcg_vs_teacher"],
                "met": best["ndcg_vs_teacher"] >= 0.97}}}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("runs/rec-bench/beauty/teacher/model"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("runs/rec-compress"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--finetune-minutes", type=float, default=3.0)
    parser.add_argument("--student-minutes", type=float, default=8.0)
    parser.add_argument("--skip-distill", action="store_true", help="only the item-table file (DATASET-compress)")
    args = parser.parse_args()
    docs = run(args.teacher, args.data_dir, args.out_dir, args.work, args.threads, args.finetune_minutes,
               args.student_minutes, skip_distill=args.skip_distill)
    for doc in docs.values():
        print(doc["bar"])
