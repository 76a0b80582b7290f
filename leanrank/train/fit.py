"""``fit``: one plain training function for cross-encoders (no trainer class).

Pointwise (BCE/MSE on graded targets) or listwise (softmax CE per query) losses; AdamW or
Adafactor; bf16 autocast on CPU, fp16/bf16 on CUDA; gradient accumulation; length-bucketed
batches with dynamic padding; validation with early stopping (best weights kept); TensorBoard
and a JSON run record; atomic checkpoints and exact resume; DDP under ``torchrun``.

>>> record = fit(model, examples, TrainConfig(epochs=1, precision="bf16"), "runs/teacher",
...              validate=lambda m: {"ndcg@10": 0.5})          # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from leanrank.core.errors import LeanrankError
from leanrank.core.io import load_safetensors_dir, write_json
from leanrank.models.cross_encoder import CrossEncoder, autocast, pick_device
from leanrank.train.batching import epoch_batches
from leanrank.train.checkpoint import load_checkpoint, restore_training, save_checkpoint, training_state
from leanrank.train.distributed import barrier, broadcast_object, init_distributed
from leanrank.train.examples import PairExample
from leanrank.train.losses import LOSSES, compute_loss
from leanrank.train.progress import StepBar, tensorboard_writer

OPTIMIZERS = ("adamw", "adafactor")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "bce"
    optimizer: str = "adamw"
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    epochs: int = 1
    batch_size: int = 32
    grad_accum: int = 1
    precision: str = "fp32"
    max_steps: int | None = None        # optimizer steps; caps epochs
    max_seconds: float | None = None    # wall-clock training budget (stops like max_steps)
    eval_every: int | None = None       # optimizer steps; None = once per epoch
    patience: int = 2                   # evaluations without improvement before stopping
    metric: str = "ndcg@10"
    checkpoint_every: int = 100         # optimizer steps
    max_grad_norm: float = 1.0
    log_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise LeanrankError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LeanrankError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise LeanrankError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adafactor(params, lr=config.lr, weight_decay=config.weight_decay)


def warmup_linear_decay(total: int, warmup: int) -> Callable[[int], float]:
    """LR factor per step: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        return max(0.0, (total - step) / max(total - warmup, 1))
    return factor


def fit(
    model: CrossEncoder,
    examples: list[PairExample],
    config: TrainConfig,
    out_dir: str | Path,
    validate: Callable[[CrossEncoder], dict] | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    meta: dict | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` in place on ``examples``; returns the run record (also in run.json).

    With ``validate`` the weights with the best ``config.metric`` are restored at the end.
    ``on_step(step)`` is called after every optimizer step (tests use it to simulate a kill).
    """
    if not examples:
        raise LeanrankError("no training examples")
    out = Path(out_dir)
    info = init_distributed()
    dev = pick_device(device) if not info.enabled or not torch.cuda.is_available() else torch.device(
        "cuda", info.local_rank)
    if config.precision == "fp16" and dev.type != "cuda":
        raise LeanrankError("precision fp16 needs CUDA; use bf16 on CPU")
    torch.manual_seed(config.seed)
    model.to(dev)
    model.model.train()
    net = model.model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = make_optimizer(model.model.parameters(), config)
    n_micro = len(epoch_batches(examples, config.batch_size, config.loss, seed=config.seed, epoch=0))
    per_epoch = max(n_micro // info.world_size // config.grad_accum, 1)
    total = min(config.max_steps or per_epoch * config.epochs, per_epoch * config.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear_decay(total, int(config.warmup_ratio * total)))
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    st = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_step": None, "bad_evals": 0,
          "history": [], "train_pairs": 0, "train_seconds": 0.0, "stopped_early": False}
    ckpt = load_checkpoint(out) if resume else None
    if resume and ckpt is None and info.is_main:
        print(f"no checkpoint in {out}; starting from scratch")
    if ckpt is not None:
        st = restore_training(ckpt, model.model, optimizer, scheduler)
    writer = tensorboard_writer(out / "tb") if info.is_main else None
    bar = StepBar(total, st["step"]) if progress and info.is_main else None

    def evaluate() -> bool:
        """Validate on rank 0, share the verdict; returns True when training should stop."""
        metrics = None
        if validate is not None and info.is_main:
            metrics = validate(model)
            model.model.train()
        metrics = broadcast_object(metrics, info)
        if metrics is None:
            return False
        value = metrics[config.metric]
        st["history"].append({"step": st["step"], "epoch": st["epoch"], **metrics})
        if writer:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    writer.add_scalar(f"valid/{k}", v, st["step"])
        if value > st["best"]:
            st.update(best=value, best_step=st["step"], bad_evals=0)
            if info.is_main:
                model.save(out / "best")
        else:
            st["bad_evals"] += 1
        if bar:
            bar.note(f"valid {config.metric} {value:.4f} (best {st['best']:.4f})")
        return st["bad_evals"] >= config.patience

    def checkpoint() -> None:
        if info.is_main:
            save_checkpoint(out, training_state(model.model, optimizer, scheduler, st))
        barrier(info)

    out.mkdir(parents=True, exist_ok=True)
    stop = st["step"] >= total or st["stopped_early"]
    while not stop and st["epoch"] < config.epochs:
        batches = epoch_batches(examples, config.batch_size, config.loss, seed=config.seed, epoch=st["epoch"])
        usable = len(batches) // (info.world_size * config.grad_accum) * info.world_size * config.grad_accum
        mine = batches[:usable][info.rank :: info.world_size]
        t0 = time.perf_counter()
        for bi in range(st["batch"], len(mine)):
            idx = mine[bi]
            feats = model.tokenize([examples[i].query for i in idx], [examples[i].title for i in idx])
            targets = torch.tensor([examples[i].target for i in idx], device=dev)
            groups = torch.tensor([examples[i].group for i in idx], device=dev)
            with autocast(dev, config.precision):
                logits = net(**feats).logits.squeeze(-1)
            loss = compute_loss(config.loss, logits, targets, groups) / config.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            st["train_pairs"] += len(idx) * info.world_size
            st["batch"] = bi + 1
            if (bi + 1) % config.grad_accum:
                continue
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.model.parameters(), config.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st["step"] += 1
            if bar:
                bar.advance(loss.item() * config.grad_accum)
            if writer and st["step"] % config.log_every == 0:
                writer.add_scalar("train/loss", loss.item() * config.grad_accum, st["step"])
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], st["step"])
            if on_step:
                on_step(st["step"])
            if config.eval_every and st["step"] % config.eval_every == 0:
                st["train_seconds"] += time.perf_counter() - t0
                stop = evaluate()
                t0 = time.perf_counter()
            out_of_time = config.max_seconds and st["train_seconds"] + time.perf_counter() - t0 > config.max_seconds
            if stop or st["step"] >= total or out_of_time:
                stop = True
                st["stopped_early"] = st["step"] < total
                break
            if st["step"] % config.checkpoint_every == 0:
                st["train_seconds"] += time.perf_counter() - t0
                checkpoint()
                t0 = time.perf_counter()
        st["train_seconds"] += time.perf_counter() - t0
        if st["batch"] >= len(mine):
            st["epoch"] += 1
            st["batch"] = 0
            if not config.eval_every and evaluate():
                # record the stop so run.json says so and a resumed run does not train on
                stop = True
                st["stopped_early"] = st["step"] < total
        checkpoint()
    last_eval = st["history"][-1]["step"] if st["history"] else None
    if validate is not None and not st["stopped_early"] and last_eval != st["step"]:
        evaluate()  # the last steps are validated too, so best-weight restore never drops them
        checkpoint()
    if bar:
        bar.stop()
    if writer:
        writer.close()
    barrier(info)
    best_dir = out / "best"
    if st["best_step"] is not None and best_dir.exists():
        # the saved tensors straight into this model: works for any module structure (QAT too)
        model.model.load_state_dict(load_safetensors_dir(best_dir, device=str(dev)))
    record = {
        "config": asdict(config), "world_size": info.world_size, "device": str(dev),
        "steps": st["step"], "epochs_done": st["epoch"], "best_step": st["best_step"],
        f"best_{config.metric}": None if st["best_step"] is None else st["best"],
        "stopped_early": st["stopped_early"], "history": st["history"],
        "train_pairs": st["train_pairs"], "train_seconds": round(st["train_seconds"], 2),
        "train_pairs_per_s": st["train_pairs"] / st["train_seconds"] if st["train_seconds"] else None,
        **(meta or {}),
    }
    if info.is_main:
        write_json(out / "run.json", record)
    return record

