"""RecBole 1.2.1 SASRec (CE loss, full ranking) on a leave-one-out split, under a training-time budget.

Runs INSIDE the RecBole virtual environment (``make recbole-venv`` → ``.venv-recbole``), never
the project's: it imports nothing from leanrank. ``leanrank.bench.recbole_peer`` writes the
atomic file and runs this script as a subprocess::

    .venv-recbole/bin/python benchmarks/peers/recbole_sasrec.py --atomic-dir DIR/beauty \\
        --dataset beauty --out result.json --max-train-seconds 3600 --threads 2

Data: ``ATOMIC_DIR/DATASET.inter`` (``user_id:token  item_id:token  timestamp:float``, the
position in the user's sequence as timestamp). RecBole orders each user's items by timestamp,
builds every prefix → next-item example, and leave-one-out splits them per user (last target =
test, second-to-last = validation, the rest train): the same split as the project's, provided
every user has >= 4 items (with 3, RecBole gives the user no validation item; checked here).
No filtering, deduplication or normalisation is enabled; ids are only re-indexed.

Model and training: RecBole's stock SASRec with its documented defaults (hidden 64, 2 layers,
2 heads, inner 256, dropout 0.5, MAX_ITEM_LIST_LENGTH 50, CE over all items, Adam lr 1e-3,
batch 2048, early stopping on valid NDCG@10 after 10 epochs without improvement). The budget:
training stops after the epoch during which the cumulative *training* time (validation not
counted) passes ``--max-train-seconds``; that epoch is still validated. The best-valid
checkpoint is then evaluated on test.

Two sets of numbers:

* top level (``hr@k`` / ``ndcg@k``, ``valid``): the project's full-ranking protocol
  (``leanrank.eval.fullrank``): the target ranked against all items, the user's history items
  (train items for validation, train + validation item for test) removed except the target
  itself, ties pessimistic. Computed here from SASRec's ``full_sort_predict`` scores.
* ``recbole_stock``: RecBole's own evaluator, which for sequential models ranks against all
  items *without* removing history items (``FullSortEvalDataLoader`` passes no history for
  sequential models), as RecBole users see it. Best-checkpoint selection uses these (stock).

RecBole's end-of-training checkpoint reload (``torch.load`` of its own file, which pickles the
config) fails under torch >= 2.6's ``weights_only`` default; this process sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for itself (its caller sets it too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own checkpoint

try:
    import numpy as np
    import recbole
    import torch
    import yaml
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed
except ImportError as exc:  # pragma: no cover - depends on the interpreter used
    sys.exit(f"recbole_sasrec.py needs the RecBole environment (make recbole-venv): {exc}")

NAME = "RecBole 1.2.1 SASRec (CE)"
KS = (5, 10, 20)
MIN_ITEMS = 4  # RecBole's leave-one-out gives users with 3 items no validation example

# RecBole's documented SASRec / overall defaults, written out so the result records them.
BASE_CONFIG: dict = {
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    # no filtering or rewriting of interactions: the split must stay the project's
    "rm_dup_inter": None, "val_interval": None, "user_inter_num_interval": None,
    "item_inter_num_interval": None, "normalize_all": False, "normalize_field": None,
    # model (properties/model/SASRec.yaml)
    "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
    "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50, "train_neg_sample_args": None,
    # training (properties/overall.yaml)
    "learner": "adam", "learning_rate": 0.001, "train_batch_size": 2048, "weight_decay": 0.0,
    "epochs": 300, "eval_step": 1, "stopping_step": 10, "clip_grad_norm": None,
    # evaluation
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Hit", "NDCG"], "topk": list(KS), "valid_metric": "NDCG@10", "eval_batch_size": 4096,
    "metric_decimal_place": 6,
    # housekeeping
    "seed": 2020, "reproducibility": True, "worker": 0, "show_progress": False, "save_dataset": False,
    "save_dataloaders": False, "log_wandb": False,
}


class BudgetSpent(Exception):
    """Raised at the start of an epoch once the training-time budget is used up."""


class BudgetTrainer(Trainer):
    """RecBole's Trainer, stopping after the epoch in which cumulative training time passes
    ``max_train_seconds`` (checked when the next epoch would start, so that epoch is validated
    and checkpointed by the stock ``fit`` loop first). Times training and validation apart."""

    def __init__(self, config, model, max_train_seconds: float):
        super().__init__(config, model)
        self.max_train_seconds = max_train_seconds
        self.epoch_seconds: list[float] = []
        self.valid_seconds = 0.0
        self.best_epoch: int | None = None

    @property
    def train_seconds(self) -> float:
        return sum(self.epoch_seconds)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.train_seconds >= self.max_train_seconds:
            raise BudgetSpent
        start = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_seconds.append(time.perf_counter() - start)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.valid_seconds += time.perf_counter() - start
        if score >= self.best_valid_score:  # as early_stopping(); fit() updates best_valid_score right after this call
            self.best_epoch = len(self.epoch_seconds) - 1
        return score, result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--atomic-dir", type=Path, required=True, help="folder holding DATASET.inter")
    p.add_argument("--dataset", required=True, help="dataset name (the .inter file's stem)")
    p.add_argument("--out", type=Path, required=True, help="result JSON path")
    p.add_argument("--max-train-seconds", type=float, required=True, help="training-time budget (s)")
    p.add_argument("--epochs", type=int, default=BASE_CONFIG["epochs"], help="epoch cap (RecBole default 300)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=BASE_CONFIG["seed"])
    p.add_argument("--cpu", action="store_true", help="never use a GPU")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=YAML",
                   help="RecBole config override, e.g. --set stopping_step=5 (repeatable)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace, work_dir: Path) -> dict:
    cfg = {**BASE_CONFIG, "epochs": args.epochs, "seed": args.seed,
           "data_path": str(args.atomic_dir.parent), "checkpoint_dir": str(work_dir / "saved"),
           "use_gpu": not args.cpu and torch.cuda.is_available()}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"--set needs KEY=VALUE, got {item!r}")
        cfg[key.strip()] = yaml.safe_load(value)
    return cfg


def read_inter(path: Path) -> dict[str, list[str]]:
    """User token → item tokens ordered by the timestamp column, read straight from the file."""
    rows: dict[str, list[tuple[float, str]]] = {}
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        cols = [h.split(":")[0] for h in header]
        u, i, t = cols.index("user_id"), cols.index("item_id"), cols.index("timestamp")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == len(cols):
                rows.setdefault(parts[u], []).append((float(parts[t]), parts[i]))
    return {user: [item for _, item in sorted(evs)] for user, evs in rows.items()}


def internal_sequences(dataset, sequences: dict[str, list[str]]) -> dict[int, np.ndarray]:
    """The file's sequences in RecBole's internal ids (user id → item ids)."""
    users = dataset.token2id(dataset.uid_field, list(sequences))
    return {int(uid): np.asarray(dataset.token2id(dataset.iid_field, items), dtype=np.int64)
            for uid, items in zip(np.atleast_1d(users), sequences.values())}


@torch.no_grad()
def protocol_metrics(model, loader, sequences: dict[int, np.ndarray], holdout: int, device) -> dict:
    """HR/NDCG@k of the project's protocol (history removed except the target, pessimistic ties)
    and of RecBole's unmasked ranking, from one pass of ``full_sort_predict``; ``holdout`` = 2 for
    validation (history = train items), 1 for test (history = train + validation item)."""
    model.eval()
    masked, plain, n_history_targets = [], [], 0
    for interaction, _history, _pos_u, pos_i in loader:
        interaction = interaction.to(device)
        scores = model.full_sort_predict(interaction).float()
        scores = scores.view(len(interaction), -1)
        target = pos_i.to(scores.device).long()
        uids = interaction[model.USER_ID].cpu().numpy()
        rows, cols = [], []
        for r, uid in enumerate(uids):
            seq = sequences[int(uid)]
            if int(seq[-holdout]) != int(target[r]):
                raise RuntimeError(f"user {uid}: RecBole's target {int(target[r])} is not item "
                                   f"{int(seq[-holdout])} of the file's leave-one-out split")
            history = seq[:-holdout]
            n_history_targets += int((history == seq[-holdout]).any())
            rows.append(np.full(len(history), r))
            cols.append(history)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[:, 0] = False
        plain.append(_ranks(scores, target, keep))
        keep[torch.as_tensor(np.concatenate(rows)), torch.as_tensor(np.concatenate(cols))] = False
        masked.append(_ranks(scores, target, keep))
    return {"masked": _metrics(torch.cat(masked)), "unmasked": _metrics(torch.cat(plain)),
            "users": int(sum(len(m) for m in masked)), "targets_in_history": n_history_targets}


def _ranks(scores: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.scatter(1, target[:, None], True)
    t = scores.gather(1, target[:, None])
    return ((scores > t) & keep).sum(1) + ((scores == t) & keep).sum(1) - 1


def _metrics(ranks: torch.Tensor) -> dict[str, float]:
    r = ranks.double()
    out = {}
    for k in KS:
        hit = (r < k).double()
        out[f"hr@{k}"] = round(hit.mean().item(), 6)
        out[f"ndcg@{k}"] = round((hit / torch.log2(r + 2.0)).mean().item(), 6)
    return out


def _stock(result) -> dict[str, float]:
    return {key.replace("hit@", "hr@"): float(v) for key, v in dict(result or {}).items()}


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    args.atomic_dir, args.out = args.atomic_dir.resolve(), args.out.resolve()
    inter = args.atomic_dir / f"{args.dataset}.inter"
    if not inter.is_file():
        sys.exit(f"no atomic file {inter}")
    if args.atomic_dir.name != args.dataset:  # RecBole reads DATA_PATH/DATASET/DATASET.inter
        sys.exit(f"--atomic-dir must be a folder named like the dataset ({args.dataset}), got {args.atomic_dir}")
    work_dir = args.out.parent
    work_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(work_dir)  # RecBole writes log/ and log_tensorboard/ into the working directory
    if args.threads:
        torch.set_num_threads(args.threads)
    file_sequences = read_inter(inter)
    short = sum(len(s) < MIN_ITEMS for s in file_sequences.values())
    if short:
        sys.exit(f"{short} users have < {MIN_ITEMS} items: RecBole's leave-one-out would give them no "
                 "validation item, so its split would differ from the project's")

    argv_saved, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv too
    try:
        config = Config(model="SASRec", dataset=args.dataset, config_dict=build_config(args, work_dir))
    finally:
        sys.argv = argv_saved
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    n_users, n_inter = len(file_sequences), sum(len(s) for s in file_sequences.values())
    if dataset.user_num - 1 != n_users or dataset.inter_num != n_inter:  # id 0 is RecBole's padding
        raise RuntimeError(f"RecBole kept {dataset.user_num - 1} users / {dataset.inter_num} interactions; "
                           f"the file has {n_users} / {n_inter}: it filtered something")
    train_data, valid_data, test_data = data_preparation(config, dataset)
    # one example per item but each user's first; two per user held out
    expected = {"train": n_inter - 3 * n_users, "valid": n_users, "test": n_users}
    for split, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        if len(loader._dataset) != expected[split]:
            raise RuntimeError(f"{split}: RecBole built {len(loader._dataset)} examples, expected {expected[split]}")
    sequences = internal_sequences(dataset, file_sequences)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = BudgetTrainer(config, model, args.max_train_seconds)
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        reason = "early stopping" if len(trainer.epoch_seconds) < config["epochs"] else "epoch cap"
    except BudgetSpent:
        reason = "time budget"
    stock_test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)  # best-valid checkpoint
    valid = protocol_metrics(trainer.model, valid_data, sequences, 2, config["device"])
    test = protocol_metrics(trainer.model, test_data, sequences, 1, config["device"])

    params = sum(p.numel() for p in trainer.model.parameters())
    result = {
        "name": NAME,
        **test["masked"],
        "valid": valid["masked"],
        "protocol": "full ranking over all items, history items removed except the target, pessimistic "
                    "ties (leanrank.eval.fullrank); recbole_stock = RecBole's own unmasked evaluation",
        "recbole_stock": {"test": _stock(stock_test), "valid_best": _stock(trainer.best_valid_result),
                          "test_recomputed": test["unmasked"], "valid_recomputed": valid["unmasked"]},
        "test_users": test["users"], "valid_users": valid["users"], "users_in_file": n_users,
        "items": dataset.item_num - 1, "interactions": n_inter,
        "targets_in_history": {"valid": valid["targets_in_history"], "test": test["targets_in_history"]},
        "params": params, "size_mb": round(params * 4 / 1e6, 3),
        "train_seconds": round(trainer.train_seconds, 2), "train_minutes": round(trainer.train_seconds / 60, 3),
        "valid_seconds": round(trainer.valid_seconds, 2),
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "epoch_seconds": [round(s, 2) for s in trainer.epoch_seconds],
        "epochs_done": len(trainer.epoch_seconds), "best_epoch": trainer.best_epoch,
        "epoch_cap_reason": reason, "max_train_seconds": args.max_train_seconds,
        "threads": torch.get_num_threads(), "device": str(config["device"]),
        "recbole_version": recbole.__version__, "torch_version": torch.__version__,
        "config": {k: config[k] for k in sorted(BASE_CONFIG) if k in config.final_config_dict},
    }
    tmp = args.out.with_suffix(args.out.suffix + ".part")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(args.out)
    print(json.dumps({k: result[k] for k in ("hr@10", "ndcg@10", "test_users", "epochs_done",
                                             "train_seconds", "epoch_cap_reason")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
