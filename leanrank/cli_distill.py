"""What ``leanrank distill`` runs: teacher → transfer scores (cached) → student(s) → model folder.

Options come from a YAML file (``--config``) and/or flags (flags win). The YAML holds up to four
sections, each validated before any work starts::

    student: {num_layers: 2, hidden_size: 256, intermediate_size: 1024}
    distill: {listwise: 1.0, hidden: 1.0, attention: 1.0, steps: 3000}
    transfer: {max_queries: 3000, bm25: 16, dense: 8}
    stages:                      # multi-stage instead of `student`: teacher → assistant → student
      - {student: {num_layers: 3}, distill: {steps: 1000}}
      - {student: {num_layers: 2, hidden_size: 256}}

The run folder ``--out`` gets ``transfer/`` (teacher scores, reused on re-runs), ``run/`` (or
``stageN/``: checkpoints, TensorBoard, run.json) and ``model/`` (the student).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from leanrank.core.config import from_mapping
from leanrank.core.errors import LeanrankError

SECTIONS = ("student", "distill", "transfer", "stages")


def read_config(path: Path | None) -> dict:
    from leanrank.core.config import read_yaml_sections

    return read_yaml_sections(path, SECTIONS)


def parse_losses(text: str | None) -> dict[str, float]:
    """``"listwise=1,margin_mse=0.5"`` → weights; every other score loss is set to 0."""
    from leanrank.compress.distill_losses import SCORE_LOSSES

    if not text:
        return {}
    out = dict.fromkeys(SCORE_LOSSES, 0.0)
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in SCORE_LOSSES:
            raise LeanrankError(f"--losses: unknown loss {name!r}; allowed: {', '.join(SCORE_LOSSES)}")
        try:
            out[name] = float(value) if value else 1.0
        except ValueError:
            raise LeanrankError(f"--losses: weight of {name} must be a number, got {value!r}") from None
    return out


def plan(config: dict, student_flags: dict, distill_flags: dict, transfer_flags: dict):
    """(stages as [(StudentConfig, DistillConfig)], TransferConfig), all validated."""
    from leanrank.compress.distill import DistillConfig
    from leanrank.compress.students import StudentConfig
    from leanrank.compress.transfer import TransferConfig

    base_distill = {**(config.get("distill") or {}), **distill_flags}
    transfer = from_mapping(TransferConfig, {**(config.get("transfer") or {}), **transfer_flags}, "transfer")
    if config.get("stages"):
        if config.get("student"):
            raise LeanrankError("give either `student` or `stages`, not both")
        stages = []
        for i, stage in enumerate(config["stages"]):
            if not isinstance(stage, dict) or set(stage) - {"student", "distill"}:
                raise LeanrankError(f"stage {i + 1}: expected a mapping with `student` and optional `distill`")
            stages.append((from_mapping(StudentConfig, stage.get("student"), "student"),
                           from_mapping(DistillConfig, {**base_distill, **(stage.get("distill") or {})}, "distill")))
        return stages, transfer
    student = from_mapping(StudentConfig, {**(config.get("student") or {}), **student_flags}, "student")
    return [(student, from_mapping(DistillConfig, base_distill, "distill"))], transfer


def _check_chain(config, shapes, check_shape) -> None:
    """Every stage's shape must fit the model before it (before transfer scoring starts)."""
    import copy

    current = copy.deepcopy(config)
    for i, shape in enumerate(shapes):
        try:
            hidden, heads, inter = check_shape(current, shape)
        except LeanrankError as exc:
            raise LeanrankError(f"stage {i + 1}: {exc}" if len(shapes) > 1 else str(exc)) from None
        current.update({"hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": inter,
                        "num_hidden_layers": shape.num_layers or current.num_hidden_layers})


def distill_model(teacher_dir: Path, out: Path, dataset: str, data_dir, config_path: Path | None = None, *,
                  student_flags: dict | None = None, distill_flags: dict | None = None,
                  transfer_flags: dict | None = None, valid_queries: int = 150, resume: bool = False,
                  overwrite: bool = False, device: str | None = None, log=print) -> dict:
    """Distil ``teacher_dir`` into ``out/model``; returns a summary."""
    import shutil

    stages, tconfig = plan(read_config(config_path), student_flags or {}, distill_flags or {}, transfer_flags or {})
    if (out / "model").exists() and not (overwrite or resume):
        raise LeanrankError(f"{out / 'model'} exists; pass --overwrite to replace it or --resume to continue")
    if (Path(teacher_dir) / "model.onnx").exists():
        raise LeanrankError(f"{teacher_dir} is an ONNX folder; distil from the torch teacher")
    from leanrank.compress.distill import distill_chain, stage_dir
    from leanrank.compress.students import check_shape
    from leanrank.compress.transfer import build_transfer, dense_recall
    from leanrank.data.registry import load_search_dataset
    from leanrank.models.bm25 import BM25Index
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.train.search import rerank_validator

    teacher = CrossEncoder.from_pretrained(teacher_dir)
    _check_chain(teacher.model.config, [shape for shape, _ in stages], check_shape)
    splits = load_search_dataset(dataset, data_dir).split()
    train = splits["train"]
    transfer = build_transfer(teacher, train, out / "transfer", tconfig,
                              dense=dense_recall(train.titles, log=log) if tconfig.dense else None,
                              teacher_name=str(teacher_dir), log=log)
    log(f"transfer: {len(transfer.lists)} queries, {transfer.pairs:,} teacher-scored pairs")
    validate = rerank_validator(splits["valid"], BM25Index.build(splits["valid"].titles), valid_queries)
    for i in range(len(stages)):
        if overwrite and not resume and stage_dir(out, i, len(stages)).exists():
            shutil.rmtree(stage_dir(out, i, len(stages)))
    current, records = distill_chain(teacher, stages, transfer, out, validate=validate, device=device, resume=resume,
                                     log=log)
    current.save(out / "model")
    log(f"model: {out / 'model'}")
    return {"model": str(out / "model"),
            "stages": [{"student": asdict(shape), "best_valid_ndcg@10": r["best_ndcg@10"],
                        "train_seconds": r["train_seconds"]} for (shape, _), r in zip(stages, records)]}
