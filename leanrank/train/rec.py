"""``train_rec``: one plain training function for sequential recommenders (``SeqRec``).

AdamW, optional bf16 autocast (CPU or CUDA), length-bucketed batches of train sequences,
validation NDCG@10 by full ranking on the leave-one-out validation targets (optionally a fixed
seeded subsample of users) for early stopping with the best weights kept, a rich progress bar,
TensorBoard (when installed), a JSON run record (``run.json``), atomic checkpoints with exact
resume, and a wall-clock budget.

>>> ds = load_sequence_dataset("synthetic")                                     # doctest: +SKIP
>>> model = SeqRec(SeqRecConfig(n_items=ds.n_items))                            # doctest: +SKIP
>>> record = train_rec(model, ds, RecTrainConfig(epochs=20), "runs/sasrec")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from leanrank.core.batching import length_bucketed_batches
from leanrank.core.errors import LeanrankError
from leanrank.core.io import load_safetensors_dir, write_json
from leanrank.data.sequences import SequenceDataset
from leanrank.eval.fullrank import PopularityScorer, evaluate_next_item, item_counts, model_scorer
from leanrank.models.seqrec import SeqRec, SeqRecConfig, title_embeddings
from leanrank.train.checkpoint import load_checkpoint, restore_training, save_checkpoint, training_state
from leanrank.train.progress import StepBar, tensorboard_writer

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RecTrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0               # linear warm-up, then a constant learning rate
    epochs: int = 200
    batch_size: int = 128
    precision: str = "fp32"
    max_steps: int | None = None
    max_seconds: float | None = None    # wall-clock training budget (validation not counted)
    eval_every: int | None = None       # optimizer steps; None = once per epoch
    patience: int = 5                   # evaluations without improvement before stopping
    metric: str = "ndcg@10"
    valid_users: int | None = None      # validate on a fixed seeded subsample of users
    eval_batch_size: int = 256
    checkpoint_every: int = 200         # optimizer steps (and at every epoch end)
    max_grad_norm: float = 5.0
    sampling_power: float = 0.75        # sampled softmax: negatives ∝ train count ** power
    log_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise LeanrankError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("epochs", "batch_size", "patience", "eval_batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "valid_users"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1 when given, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise LeanrankError("need lr > 0, weight_decay >= 0 and warmup_steps >= 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise LeanrankError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.metric.split("@")[0] not in ("hr", "ndcg"):
            raise LeanrankError(f"metric must be hr@k or ndcg@k, got {self.metric!r}")


def train_examples(dataset: SequenceDataset, max_len: int, variant: str) -> list[np.ndarray]:
    """Train sequences (leave-one-out train part) cut into windows of ``max_len`` (+1 for SASRec,
    overlapping by one item), so every prefix's next item is a target; too-short ones dropped."""
    width = max_len + (1 if variant == "sasrec" else 0)
    step = max_len
    out = []
    for seq in dataset.split().train:
        for end in range(len(seq), 0, -step):
            window = seq[max(0, end - width) : end]
            if len(window) >= (2 if variant == "sasrec" else 1):
                out.append(window)
            if end - width <= 0:
                break
    if not out:
        raise LeanrankError(f"{dataset.name}: no training sequences (every user too short)")
    return out


def build_seqrec(dataset: SequenceDataset, model_flags: dict | None = None, attributes: bool = True,
                 titles: bool = False, seed: int = 0, log: Callable[[str], None] = print) -> SeqRec:
    """A freshly initialised ``SeqRec`` for ``dataset``: ``model_flags`` are ``SeqRecConfig`` fields;
    ``attributes`` adds the dataset's attribute side information (when it has any), ``titles`` the
    frozen MiniLM title embeddings (an error when the dataset has no titles)."""
    flags = dict(model_flags or {})
    side: dict = {}
    if attributes and dataset.n_attributes:
        side.update(n_attributes=dataset.n_attributes,
                    max_item_attributes=max(len(a) for a in dataset.item_attributes))
    elif flags.get("attribute_loss_weight"):
        raise LeanrankError("--attribute-loss-weight needs attributes (--attributes and a dataset that has them)")
    vectors = None
    if titles:
        if not dataset.titles:
            raise LeanrankError(f"dataset {dataset.name!r} has no item titles; use --no-titles")
        log("encoding item titles with MiniLM-L6 (frozen) ...")
        vectors = title_embeddings(dataset.titles)
        side["title_dim"] = int(vectors.shape[1])
    config = SeqRecConfig(n_items=dataset.n_items, **side, **flags)
    torch.manual_seed(seed)
    return SeqRec(config, dataset.item_attributes if side.get("n_attributes") else None, vectors)


def evaluate_seqrec(model: SeqRec, dataset: SequenceDataset) -> dict[str, dict]:
    """Full-ranking metrics of ``model`` on the validation and test targets, and of the popularity
    baseline on the test targets (``{"valid", "test", "popularity_test"}``, per-user ranks dropped)."""
    split = dataset.split()
    scorer = model_scorer(model)
    results = {
        "valid": evaluate_next_item(scorer, split.valid_histories(), split.valid_targets, dataset.n_items),
        "test": evaluate_next_item(scorer, split.test_histories(), split.test_targets, dataset.n_items),
        "popularity_test": evaluate_next_item(PopularityScorer.fit(split.train, dataset.n_items),
                                              split.test_histories(), split.test_targets, dataset.n_items),
    }
    for r in results.values():
        r.pop("ranks")
    return results


def validation_users(dataset: SequenceDataset, n: int | None, seed: int) -> np.ndarray:
    """Indices of the users validated on: all, or a fixed seeded subsample of ``n``."""
    users = np.arange(len(dataset.sequences))
    if n is None or n >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, n, replace=False))


def train_rec(
    model: SeqRec,
    dataset: SequenceDataset,
    config: RecTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    meta: dict | None = None,
    on_step: Callable[[int], None] | None = None,
    validate: bool = True,
    loss_fn: Callable[[SeqRec, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """Train ``model`` in place; returns the run record (also written to ``out_dir/run.json``).

    The weights with the best validation ``config.metric`` are restored at the end
    (``validate=False`` skips validation). ``on_step(step)`` runs after every optimizer step.
    ``loss_fn(model, inputs, targets)`` replaces ``model.loss`` (distillation adds a teacher term).
    """
    if model.config.n_items != dataset.n_items:
        raise LeanrankError(f"model has {model.config.n_items} items but {dataset.name} has {dataset.n_items}")
    out = Path(out_dir)
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise LeanrankError("--device cuda asked for, but no CUDA device is available")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    examples = train_examples(dataset, model.config.max_len, model.config.variant)
    split = dataset.split()
    model.to(dev)
    model.set_sampling_distribution(torch.from_numpy(item_counts(split.train, dataset.n_items)),
                                    config.sampling_power)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps) if config.warmup_steps else 1.0)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    total = min(config.max_steps or per_epoch * config.epochs, per_epoch * config.epochs)
    users = validation_users(dataset, config.valid_users, config.seed)
    st = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "best_step": None, "bad_evals": 0,
          "history": [], "train_sequences": 0, "train_seconds": 0.0, "stopped_early": False}
    ckpt = load_checkpoint(out) if resume else None
    if resume and ckpt is None:
        print(f"no checkpoint in {out}; starting from scratch")
    if ckpt is not None:
        st = restore_training(ckpt, model, optimizer, scheduler)
    writer = tensorboard_writer(out / "tb")
    bar = StepBar(total, st["step"], every=200) if progress else None

    def evaluate() -> bool:
        """Validate, keep the best weights; True when patience ran out."""
        if not validate:
            return False
        t0 = time.perf_counter()
        with _autocast(dev, config.precision):
            result = evaluate_next_item(model_scorer(model), [split.train[u] for u in users],
                                        split.valid_targets[users], dataset.n_items,
                                        batch_size=config.eval_batch_size)
        metrics = {k: v for k, v in result.items() if "@" in k}
        st["history"].append({"step": st["step"], "epoch": st["epoch"], "users": len(users), **metrics,
                              "seconds": round(time.perf_counter() - t0, 2)})
        if writer:
            for k, v in metrics.items():
                writer.add_scalar(f"valid/{k}", v, st["step"])
        value = metrics[config.metric]
        if value > st["best"]:
            st.update(best=value, best_step=st["step"], bad_evals=0)
            model.save(out / "best")
        else:
            st["bad_evals"] += 1
        if bar:
            bar.note(f"step {st['step']} valid {config.metric} {value:.4f} (best {st['best']:.4f})")
        return st["bad_evals"] >= config.patience

    def checkpoint() -> None:
        save_checkpoint(out, training_state(model, optimizer, scheduler, st))

    out.mkdir(parents=True, exist_ok=True)
    stop = st["step"] >= total or st["stopped_early"]
    lengths = [len(e) for e in examples]
    while not stop and st["epoch"] < config.epochs:
        batches = length_bucketed_batches(lengths, config.batch_size, shuffle=True,
                                          seed=config.seed * 1_000_003 + st["epoch"])
        t0 = time.perf_counter()
        for bi in range(st["batch"], len(batches)):
            inputs, targets = model.training_batch([examples[i] for i in batches[bi]])
            with _autocast(dev, config.precision):
                loss = loss_fn(model, inputs, targets) if loss_fn else model.loss(inputs, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st["train_sequences"] += len(batches[bi])
            st["batch"] = bi + 1
            st["step"] += 1
            if bar:
                bar.advance(loss.item())
            if writer and st["step"] % config.log_every == 0:
                writer.add_scalar("train/loss", loss.item(), st["step"])
            if on_step:
                on_step(st["step"])
            if config.eval_every and st["step"] % config.eval_every == 0:
                st["train_seconds"] += time.perf_counter() - t0
                stop = evaluate()
                model.train()
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
        if st["batch"] >= len(batches):
            st["epoch"] += 1
            st["batch"] = 0
            if not config.eval_every and evaluate():
                stop = True
                st["stopped_early"] = st["step"] < total
            model.train()
        checkpoint()
    last_eval = st["history"][-1]["step"] if st["history"] else None
    if validate and last_eval != st["step"]:
        evaluate()  # the last steps are validated too, so restoring the best never drops them
        checkpoint()
    if bar:
        bar.stop()
    if writer:
        writer.close()
    if st["best_step"] is not None and (out / "best").exists():
        model.load_state_dict(load_safetensors_dir(out / "best", device=str(dev)))
    model.eval()
    record = {
        "config": asdict(config), "model": asdict(model.config), "dataset": dataset.name, "device": str(dev),
        "train_examples": len(examples), "steps": st["step"], "epochs_done": st["epoch"],
        "best_step": st["best_step"], f"best_{config.metric}": None if st["best_step"] is None else st["best"],
        "stopped_early": st["stopped_early"], "history": st["history"], "valid_users": len(users),
        "train_sequences": st["train_sequences"], "train_seconds": round(st["train_seconds"], 2),
        "train_sequences_per_s": st["train_sequences"] / st["train_seconds"] if st["train_seconds"] else None,
        **(meta or {}),
    }
    write_json(out / "run.json", record)
    return record


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

