"""Knowledge distillation for cross-encoders: ``distill(teacher, student, data, config)``.

Each step takes ``queries_per_batch`` candidate lists from the transfer set (teacher-scored
judged + recalled products) and ``list_size`` candidates of each, and trains the student on a
weighted sum of score losses (listwise KL, Margin-MSE, MSE, soft labels with temperature, hard
labels), optionally hidden-state MSE through learned projections and attention KL on mapped
layers (the teacher then runs alongside), and an optional multi-task head (graded regression +
exact/partial/irrelevant). A curriculum can move the sampled candidates from the whole list
(mostly easy negatives) to the teacher's top of the list (hard ones) over training.
Validation picks the best step; checkpoints make runs resumable; works under ``torchrun``.

>>> student = make_student(teacher, StudentConfig(num_layers=2))            # doctest: +SKIP
>>> record = distill(teacher, student, transfer, DistillConfig(steps=1000), "runs/d")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leanrank.compress.distill_losses import (
    SCORE_LOSSES,
    attention_kl,
    default_layer_map,
    hidden_mse,
    score_loss,
)
from leanrank.compress.transfer import CandidateList, TransferSet
from leanrank.core.config import from_mapping
from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json
from leanrank.models.cross_encoder import CrossEncoder, autocast, pick_device
from leanrank.train.checkpoint import load_checkpoint, restore_training, save_checkpoint, training_state
from leanrank.train.distributed import barrier, broadcast_object, init_distributed
from leanrank.train.fit import warmup_linear_decay
from leanrank.train.progress import StepBar, tensorboard_writer

EXACT, PARTIAL = 0.75, 0.25     # normalised-gain thresholds of the multi-task classes


@dataclass(frozen=True)
class DistillConfig:
    listwise: float = 1.0            # weights of the score losses (0 = off)
    margin_mse: float = 0.0
    mse: float = 0.0
    soft: float = 0.0
    hard: float = 0.0
    temperature: float = 1.0
    hidden: float = 0.0              # hidden-state MSE (projected when widths differ)
    attention: float = 0.0           # attention-distribution KL
    layer_map: tuple[int, ...] | None = None   # student layer i → teacher layer (1-based); None = uniform
    multitask: float = 0.0           # joint head: graded regression + 3-class, on judged pairs
    curriculum: bool = False         # easy → hard candidates over training
    teacher_scores: str = "cache"    # "cache" (transfer file) or "online" (teacher runs each step)
    steps: int = 1000
    queries_per_batch: int = 8
    list_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    precision: str = "fp32"
    eval_every: int | None = None    # default: steps // 4
    checkpoint_every: int = 100
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        weights = {n: getattr(self, n) for n in (*SCORE_LOSSES, "hidden", "attention", "multitask")}
        bad = [n for n, w in weights.items() if not (w >= 0 and math.isfinite(w))]
        if bad:
            raise LeanrankError(f"loss weights must be finite and >= 0: {', '.join(bad)}")
        if not any(getattr(self, n) > 0 for n in SCORE_LOSSES):
            raise LeanrankError(f"at least one score loss needs a weight > 0 ({', '.join(SCORE_LOSSES)})")
        if self.temperature <= 0:
            raise LeanrankError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_scores not in ("cache", "online"):
            raise LeanrankError(f"teacher_scores must be 'cache' or 'online', got {self.teacher_scores!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise LeanrankError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("steps", "queries_per_batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.list_size < 2:
            raise LeanrankError(f"list_size must be >= 2 (lists are ranked), got {self.list_size}")
        if not self.lr > 0:
            raise LeanrankError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, values: dict) -> DistillConfig:
        return from_mapping(cls, values, "distill")

    @property
    def needs_teacher_inside(self) -> bool:
        return self.hidden > 0 or self.attention > 0


class _Bundle(nn.Module):
    """Everything trained: the student plus hidden-state projections and the multi-task head."""

    def __init__(self, student: CrossEncoder, teacher_hidden: int, n_proj: int, multitask: bool):
        super().__init__()
        self.student = student.model
        width = student.model.config.hidden_size
        make = (lambda: nn.Identity()) if width == teacher_hidden else (lambda: nn.Linear(width, teacher_hidden))
        self.proj = nn.ModuleList([make() for _ in range(n_proj)])
        self.aux = nn.Linear(width, 3) if multitask else None

    def forward(self, feats: dict, hidden: bool, attentions: bool):
        out = self.student(**feats, output_hidden_states=hidden, output_attentions=attentions)
        aux = None
        if self.aux is not None:
            aux = self.aux(out.hidden_states[-1][:, 0])
        return out, aux


def sample_batch(lists: list[CandidateList], rng: random.Random, config: DistillConfig, progress: float):
    """``queries_per_batch`` lists × ``list_size`` candidates. With the curriculum, candidates come
    from the teacher's top-n of each list, n shrinking from the whole list to 2·list_size."""
    chosen = rng.sample(lists, min(config.queries_per_batch, len(lists)))
    batch = []
    for c in chosen:
        order = np.argsort(-c.teacher, kind="stable")
        n = len(order)
        if config.curriculum:
            n = max(config.list_size, round(n - progress * (n - 2 * config.list_size)))
        pick = sorted(rng.sample(list(order[:n]), config.list_size))
        batch.append((c, pick))
    return batch


def distill(
    teacher: CrossEncoder,
    student: CrossEncoder,
    data: TransferSet,
    config: DistillConfig,
    out_dir: str | Path,
    validate: Callable[[CrossEncoder], dict] | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train ``student`` in place to imitate ``teacher`` on ``data``; returns the run record.

    With ``validate`` the student weights of the best validated step are kept."""
    out = Path(out_dir)
    lists = [c for c in data.lists if len(c.titles) >= config.list_size]
    if not lists:
        raise LeanrankError(f"no transfer list has >= list_size={config.list_size} candidates")
    info = init_distributed()
    dev = torch.device("cuda", info.local_rank) if info.enabled and torch.cuda.is_available() else pick_device(device)
    torch.manual_seed(config.seed)
    teacher.to(dev).model.eval()
    student.to(dev)
    n_student = student.model.config.num_hidden_layers
    layer_map = config.layer_map or default_layer_map(n_student, teacher.model.config.num_hidden_layers)
    if len(layer_map) != n_student or not all(1 <= t <= teacher.model.config.num_hidden_layers for t in layer_map):
        raise LeanrankError(f"layer_map needs {n_student} teacher layers in 1..{teacher.model.config.num_hidden_layers}, "
                            f"got {list(layer_map)}")
    bundle = _Bundle(student, teacher.model.config.hidden_size, n_student + 1 if config.hidden else 0,
                     config.multitask > 0).to(dev)
    if config.attention:
        for m in (student, teacher):
            m.model.set_attn_implementation("eager")
    net = bundle
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(bundle, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.AdamW(bundle.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(config.warmup_ratio * config.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(config.steps, warmup))
    eval_every = config.eval_every or max(config.steps // 4, 1)
    st = {"step": 0, "best": -math.inf, "best_step": None, "history": [], "train_pairs": 0, "train_seconds": 0.0,
          "losses": {}}
    best_state = None
    rng = random.Random(config.seed * 1000 + info.rank)
    ckpt = load_checkpoint(out) if resume else None
    if ckpt is not None:
        st = restore_training(ckpt, bundle, optimizer, scheduler)
        rng.setstate((3, tuple(ckpt["sampler"]), None))
        best_state = ckpt.get("best")
    writer = tensorboard_writer(out / "tb") if info.is_main else None
    bar = StepBar(config.steps, st["step"]) if progress and info.is_main else None
    out.mkdir(parents=True, exist_ok=True)
    bundle.train()

    def evaluate() -> None:
        nonlocal best_state
        metrics = None
        if validate is not None and info.is_main:
            metrics = validate(student)
            bundle.train()
        metrics = broadcast_object(metrics, info)
        if metrics is None:
            return
        st["history"].append({"step": st["step"], **metrics})
        value = metrics["ndcg@10"]
        if writer:
            writer.add_scalar("valid/ndcg@10", value, st["step"])
        if value > st["best"]:
            st.update(best=value, best_step=st["step"])
            best_state = {k: v.detach().cpu().clone() for k, v in student.model.state_dict().items()}
        if bar:
            bar.note(f"step {st['step']}: valid ndcg@10 {value:.4f} (best {st['best']:.4f})")

    t0 = time.perf_counter()
    while st["step"] < config.steps:
        batch = sample_batch(lists, rng, config, st["step"] / config.steps)
        loss, parts = _step_loss(net, bundle, teacher, batch, config, layer_map, dev)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bundle.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        st["step"] += 1
        st["train_pairs"] += config.queries_per_batch * config.list_size * info.world_size
        for k, v in parts.items():
            st["losses"][k] = 0.98 * st["losses"].get(k, v) + 0.02 * v
        if bar:
            bar.advance(loss.item())
        if writer and st["step"] % 20 == 0:
            for k, v in parts.items():
                writer.add_scalar(f"train/{k}", v, st["step"])
        if on_step:
            on_step(st["step"])
        if st["step"] % eval_every == 0 or st["step"] == config.steps:
            st["train_seconds"] += time.perf_counter() - t0
            evaluate()
            t0 = time.perf_counter()
        if st["step"] % config.checkpoint_every == 0 and st["step"] < config.steps:
            st["train_seconds"] += time.perf_counter() - t0
            if info.is_main:
                save_checkpoint(out, training_state(bundle, optimizer, scheduler, st, sampler=list(rng.getstate()[1]),
                                                    **({"best": best_state} if best_state is not None else {})))
            barrier(info)
            t0 = time.perf_counter()
    if bar:
        bar.stop()
    if writer:
        writer.close()
    if config.attention:
        for m in (student, teacher):
            m.model.set_attn_implementation("sdpa")
    if best_state is not None:
        student.model.load_state_dict(best_state)
    record = {"config": asdict(config), "layer_map": list(layer_map), "steps": st["step"],
              "best_step": st["best_step"], "best_ndcg@10": None if st["best_step"] is None else st["best"],
              "history": st["history"], "final_losses": {k: round(v, 5) for k, v in st["losses"].items()},
              "train_pairs": st["train_pairs"], "train_seconds": round(st["train_seconds"], 1),
              "train_pairs_per_s": st["train_pairs"] / max(st["train_seconds"], 1e-9),
              "transfer_lists": len(lists), "world_size": info.world_size, "device": str(dev)}
    student.card.add_step("distill", config=record["config"], layer_map=record["layer_map"], steps=st["step"],
                          best_step=st["best_step"], transfer=data.meta)
    if st["best_step"] is not None:
        student.card.metrics = {"valid_ndcg@10": st["best"]}
    if info.is_main:
        write_json(out / "run.json", record)
    barrier(info)
    return record


def _step_loss(net, bundle: _Bundle, teacher: CrossEncoder, batch, config: DistillConfig, layer_map, dev):
    """The weighted loss of one batch and its parts (floats, for logs)."""
    queries = [c.query for c, pick in batch for _ in pick]
    titles = [c.titles[i] for c, pick in batch for i in pick]
    shape = (len(batch), config.list_size)
    targets = torch.tensor(np.stack([c.targets[pick] for c, pick in batch]), device=dev)
    judged = torch.tensor(np.stack([c.judged[pick] for c, pick in batch]), device=dev)
    feats = _tokenize(teacher, queries, titles, dev)
    inside = config.needs_teacher_inside
    t_out = None
    if inside or config.teacher_scores == "online":
        with torch.no_grad():
            t_out = teacher.model(**feats, output_hidden_states=config.hidden > 0, output_attentions=config.attention > 0)
        t_scores = t_out.logits.float().view(shape)
    else:
        t_scores = torch.tensor(np.stack([c.teacher[pick] for c, pick in batch]), device=dev)
    with autocast(dev, config.precision):
        s_out, aux = net(feats, hidden=config.hidden > 0 or config.multitask > 0, attentions=config.attention > 0)
    s_scores = s_out.logits.float().view(shape)
    parts: dict[str, torch.Tensor] = {}
    for name in SCORE_LOSSES:
        w = getattr(config, name)
        if w:
            parts[name] = w * score_loss(name, s_scores, t_scores, targets, config.temperature)
    mask = feats["attention_mask"]
    if config.hidden:
        pairs = [(0, 0)] + [(i + 1, t) for i, t in enumerate(layer_map)]
        parts["hidden"] = config.hidden * sum(
            hidden_mse(bundle.proj[k](s_out.hidden_states[si].float()), t_out.hidden_states[ti].float(), mask)
            for k, (si, ti) in enumerate(pairs)) / len(pairs)
    if config.attention:
        parts["attention"] = config.attention * sum(
            attention_kl(s_out.attentions[i].float(), t_out.attentions[t - 1].float(), mask)
            for i, t in enumerate(layer_map)) / len(layer_map)
    if config.multitask and judged.any():
        flat_judged = judged.view(-1)
        classes = (targets.view(-1) >= PARTIAL).long() + (targets.view(-1) >= EXACT).long()
        ce = nn.functional.cross_entropy(aux.float()[flat_judged], classes[flat_judged])
        reg = nn.functional.mse_loss(torch.sigmoid(s_scores.view(-1)[flat_judged]), targets.view(-1)[flat_judged])
        parts["multitask"] = config.multitask * (ce + reg)
    loss = sum(parts.values())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def _tokenize(model: CrossEncoder, queries, titles, dev) -> dict:
    feats = model.tokenize(queries, titles)
    return {k: v.to(dev) for k, v in feats.items()}


def stage_dir(out_dir: str | Path, index: int, n_stages: int) -> Path:
    """Run folder of stage ``index`` (0-based): ``run`` for a single stage, else ``stageN``."""
    return Path(out_dir) / ("run" if n_stages == 1 else f"stage{index + 1}")


def distill_chain(teacher: CrossEncoder, stages: list[tuple], data: TransferSet, out_dir: str | Path,
                  validate=None, progress: bool = True, device: str | None = None, resume: bool = False,
                  log=print) -> tuple[CrossEncoder, list]:
    """Multi-stage distillation: teacher → assistant → … → student. ``stages`` holds
    ``(StudentConfig, DistillConfig)`` pairs; each student is cut from the previous stage's model
    and taught by it (scores from the transfer cache for the first stage, online afterwards:
    the cache holds the first teacher's scores). Stage ``i`` runs in ``stage_dir(out_dir, i, n)``."""
    from leanrank.compress.students import make_student

    if not stages:
        raise LeanrankError("a distillation chain needs at least one stage")
    current, records = teacher, []
    for i, (shape, cfg) in enumerate(stages):
        student = make_student(current, shape)
        if i > 0 and cfg.teacher_scores == "cache":
            cfg = replace(cfg, teacher_scores="online")
        log(f"stage {i + 1}/{len(stages)}: student {student.card.steps[-1]['shape']}, {cfg.steps} steps, taught by "
            f"{'the teacher' if i == 0 else f'stage {i}'}")
        record = distill(current, student, data, cfg, stage_dir(out_dir, i, len(stages)), validate=validate,
                         resume=resume, progress=progress, device=device)
        log(f"stage {i + 1}: best validation NDCG@10 {record['best_ndcg@10']} at step {record['best_step']}")
        records.append(record)
        current = student
    return current, records
