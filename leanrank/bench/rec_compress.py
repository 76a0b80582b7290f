"""``make bench-rec-compress``: compressing the Beauty sequential teacher (from ``make bench-rec``).

Two results files from one run (same teacher, same split, full ranking):

* ``beauty-compress``: the teacher's item table as int8 / int4 rows and as low-rank V×r·r×H
  (truncated SVD, with and without a short fine-tune).
* ``beauty-distill``: students without side information distilled from the teacher (CE + KL to
  the teacher's full next-item distribution). Main: the teacher *folded* (its item vectors, titles
  and attributes included, computed once into a plain table; the title buffer is most of its
  bytes), one block kept, KD, then an int8 table. Ablations: folding alone, the block drop without
  training, labels instead of KD, and narrower hidden-32 students (PCA init from the teacher's
  item vectors, or random).

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
from leanrank.compress.distill_rec import RecDistillConfig, distill_rec, fold_teacher, student_from_teacher
from leanrank.compress.item_table import ItemTableConfig, compress_item_table_, load_seqrec, nbytes
from leanrank.core.machine import machine_info, versions
from leanrank.data.sequences import load_sequence_dataset
from leanrank.models.seqrec import SeqRec, SeqRecConfig
from leanrank.train.rec import RecTrainConfig, evaluate_seqrec, train_rec

COLUMNS = ("name", "role", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "ndcg_vs_teacher", "size_mb", "size_ratio",
           "table_mb", "table_ratio", "train_minutes", "epochs")
NARROW = {"hidden": 32, "layers": 2, "heads": 2}   # the narrower students of the ablation
MAIN_LAYERS = (1,)      # the teacher block(s) the main student keeps
MAIN_LR = 5e-4          # the main student starts trained: a gentler rate than the fresh hidden-32 ones
NARROW_LR = 2e-3        # fresh (PCA or random) hidden-32 students
MAIN_ALPHA = 0.5        # CE + KL; pure KL (1.0, lr 3e-4) lowered validation NDCG@10 in a 4-min probe (0.0629 vs 0.0649 untrained)


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
        dataset: str = "beauty", skip_distill: bool = False, skip_compress: bool = False, log=print) -> dict:
    """Compress and distil the teacher; writes OUT_DIR/DATASET-compress and DATASET-distill (.json/.md)
    (``skip_distill`` / ``skip_compress``: only one of the two files)."""
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
    for kind, rank, minutes, int8_factor in () if skip_compress else (
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
    _distill_rows(teacher, ds, t_row, distill_rows, work, base, student_minutes, log)
    compress_doc = _compress_doc(compress_rows, teacher_dir, ds, dataset, finetune_minutes, threads)
    common = {k: compress_doc[k] for k in ("machine", "versions", "dataset", "split", "columns", "command")}
    protocol = {k: v for k, v in compress_doc["protocol"].items() if k != "fine-tune"}
    students = [r for r in distill_rows if r["role"] == "variant"]
    best_st = max((r for r in students if r["size_ratio"] >= 10), key=lambda r: r["ndcg_vs_teacher"], default=None)
    distill_doc = {**common, "rows": distill_rows,
                   "protocol": {**protocol, "students": {"main": f"the teacher folded (item vectors as a plain "
                                                                 f"table), layers {list(MAIN_LAYERS)} kept, KD",
                                                         "narrow": NARROW, "main_alpha": MAIN_ALPHA},
                                "train": {"main": asdict(_train_config(MAIN_LR, student_minutes, base)),
                                          "narrow": asdict(_train_config(NARROW_LR, student_minutes, base))},
                                "kd": "(1-α)·CE + α·T²·KL(teacher ‖ student) over the full catalog, T = 1"},
                   "bar": {"student_10x_smaller_at_97pct": None if best_st is None else {
                       "row": best_st["name"], "size_ratio": best_st["size_ratio"],
                       "ndcg_vs_teacher": best_st["ndcg_vs_teacher"], "met": best_st["ndcg_vs_teacher"] >= 0.97}}}
    elapsed = round(time.perf_counter() - t_start, 1)
    if not skip_compress:
        write_results(out_dir / f"{dataset}-compress", {**compress_doc, "seconds": elapsed})
    write_results(out_dir / f"{dataset}-distill", {**distill_doc, "seconds": elapsed})
    return {"compress": compress_doc, "distill": distill_doc}


def _train_config(lr: float, minutes: float, base: dict) -> RecTrainConfig:
    """The students' training: ``minutes`` of wall time at ``lr``, validated as ``base`` says."""
    return RecTrainConfig(lr=lr, max_seconds=minutes * 60, **base)


def _distill_rows(teacher: SeqRec, ds, t_row: dict, rows: list[dict], work: Path, base: dict, minutes: float,
                  log) -> None:
    """Append the students and their ablations to ``rows``.

    Main: the teacher folded (its complete item vectors, titles and attributes included, as one plain
    table) keeping ``MAIN_LAYERS``, trained with KD, then stored with an int8 table. Ablations show
    what each piece buys: folding alone (all layers, no training), the layer drop without training,
    labels instead of KD, and the narrower hidden-32 students (PCA or random init)."""
    def add(name: str, role: str, model: SeqRec, record: dict | None = None, **extra) -> None:
        rows.append(row(name, role, model, ds, t_row, record, **extra))
        r = rows[-1]
        log(f"{name}: NDCG@10 {r['ndcg@10']:.4f} ({r['ndcg_vs_teacher']:.3f}), ×{r['size_ratio']} smaller")

    def int8(model: SeqRec) -> SeqRec:
        q8 = copy.deepcopy(model)
        compress_item_table_(q8, ItemTableConfig(kind="int8"))
        return q8

    def train(student: SeqRec, alpha: float, lr: float, name: str) -> dict:
        config = RecDistillConfig(alpha=alpha, temperature=1.0, train=_train_config(lr, minutes, base))
        return distill_rec(teacher, student, ds, config, work / name)

    folded = fold_teacher(teacher)
    add("ablation: teacher folded, all layers, no training", "ablation", folded)
    add("ablation: teacher folded, all layers, no training + int8 item table", "ablation", int8(folded))
    main = fold_teacher(teacher, MAIN_LAYERS)
    add(f"ablation: folded, layers {list(MAIN_LAYERS)}, no training", "ablation", main)
    record = train(main, MAIN_ALPHA, MAIN_LR, "folded-kd")
    add(f"student: folded, layers {list(MAIN_LAYERS)}, KD (main)", "variant", main, record, alpha=MAIN_ALPHA)
    add(f"student: folded, layers {list(MAIN_LAYERS)}, KD + int8 item table", "variant", int8(main))
    labels = fold_teacher(teacher, MAIN_LAYERS)
    add(f"ablation: folded, layers {list(MAIN_LAYERS)}, labels only", "ablation", labels,
        train(labels, 0.0, MAIN_LR, "folded-labels"), alpha=0.0)
    narrow = None
    for name, alpha, pca in (("hidden 32: KD + PCA init", 0.5, True), ("hidden 32: labels only + PCA init", 0.0, True),
                             ("hidden 32: KD, random init", 0.5, False)):
        if pca:
            student = student_from_teacher(teacher, **NARROW)
        else:
            torch.manual_seed(0)
            student = SeqRec(SeqRecConfig(n_items=ds.n_items, max_len=teacher.config.max_len,
                                          dropout=teacher.config.dropout, **NARROW))
        record = train(student, alpha, NARROW_LR, name.replace(" ", "-").replace(":", "").replace(",", ""))
        add(f"ablation: {name}", "ablation", student, record, alpha=alpha, pca_init=pca)
        narrow = narrow or student
    add("ablation: hidden 32: KD + PCA init + int8 item table", "ablation", int8(narrow))


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
    parser.add_argument("--skip-compress", action="store_true", help="only the students' file (DATASET-distill)")
    args = parser.parse_args()
    docs = run(args.teacher, args.data_dir, args.out_dir, args.work, args.threads, args.finetune_minutes,
               args.student_minutes, skip_distill=args.skip_distill, skip_compress=args.skip_compress)
    for doc in docs.values():
        print(doc["bar"])
