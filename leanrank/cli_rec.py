"""What ``leanrank train rec`` does: load a sequence dataset, build a SeqRec from the flags, train,
then report full-ranking HR/NDCG on the validation and test targets (and the popularity baseline).

>>> train_rec_command("synthetic", None, "runs/sasrec", {"layers": 1}, {"epochs": 2})  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json

SETUP_FILE = "rec-setup.json"


def train_rec_command(
    dataset: str,
    data_dir: str | Path | None,
    out: str | Path,
    model_flags: dict,
    train_flags: dict,
    attributes: bool = True,
    titles: bool = False,
    resume: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train and evaluate; writes OUT/model, OUT/run.json (with ``valid``/``test``/``popularity``)."""
    from leanrank.data.sequences import load_sequence_dataset
    from leanrank.train.rec import RecTrainConfig, build_seqrec, evaluate_seqrec, train_rec

    out = Path(out)
    ds = load_sequence_dataset(dataset, data_dir)
    s = ds.summary()
    log(f"{ds.name}: {s['users']} users, {s['items']} items, {s['interactions']} interactions, "
        f"{s['attributes']} attributes, titles: {'yes' if ds.titles else 'no'}")
    train_config = RecTrainConfig(**train_flags)
    model = build_seqrec(ds, model_flags, attributes=attributes, titles=titles, seed=train_config.seed, log=log)
    config = model.config
    setup = {"dataset": ds.name, "model": asdict(config), "train": asdict(train_config)}
    setup_path = out / SETUP_FILE
    if resume and setup_path.is_file():
        saved = json.loads(setup_path.read_text(encoding="utf-8"))
        if saved["model"] != setup["model"] or saved["dataset"] != setup["dataset"]:
            raise LeanrankError(f"{out}: --resume with a different dataset or model flags than the run "
                                f"in {setup_path}")
    write_json(setup_path, setup)
    record = train_rec(model, ds, train_config, out, resume=resume, device=device,
                       meta={"load_report": ds.report} if ds.report else None)
    results = evaluate_seqrec(model, ds)
    model.card.parent = f"random-init ({config.variant})"
    model.card.add_step("train", dataset=ds.name, config=asdict(train_config), steps=record["steps"],
                        best_step=record["best_step"])
    model.card.metrics = {"dataset": ds.name, **{k: v for k, v in results.items() if k != "popularity_test"}}
    model.save(out / "model")
    record.update(results)
    write_json(out / "run.json", record)
    for name, r in results.items():
        log(f"{name:>16} ({r['protocol']}, {r['users']} users): "
            + "  ".join(f"{k} {v:.4f}" for k, v in r.items() if "@" in k))
    log(f"model: {out / 'model'}  ({record['steps']} steps, {record['train_seconds']} s, "
        f"best valid {train_config.metric} {record.get('best_' + train_config.metric)})")
    return record


def eval_rec_command(model_dir: str | Path, dataset: str, data_dir: str | Path | None, split: str = "test",
                     out: str | Path | None = None, protocol: str = "full", log: Callable[[str], None] = print) -> dict:
    """Full-ranking (or labelled sampled-99) HR/NDCG of a saved ``SeqRec`` folder (compressed item
    tables included) on the validation or test targets; writes ``metrics-SPLIT.json``."""
    from leanrank.compress.item_table import load_seqrec
    from leanrank.data.sequences import load_sequence_dataset
    from leanrank.eval.fullrank import evaluate_next_item, item_counts, model_scorer

    if split not in ("valid", "test"):
        raise LeanrankError(f"--split for a recommender is valid or test, got {split!r}")
    model = load_seqrec(model_dir)
    ds = load_sequence_dataset(dataset, data_dir)
    if ds.n_items != model.config.n_items:
        raise LeanrankError(f"{model_dir} scores {model.config.n_items} items but {ds.name} has {ds.n_items}")
    s = ds.split()
    histories, targets = (s.valid_histories(), s.valid_targets) if split == "valid" else (s.test_histories(), s.test_targets)
    result = evaluate_next_item(model_scorer(model), histories, targets, ds.n_items, protocol=protocol,
                                popularity=item_counts(s.train, ds.n_items))
    result.pop("ranks")
    path = Path(out) if out else Path(model_dir) / f"metrics-{split}.json"
    write_json(path, {"model": str(model_dir), "dataset": ds.name, "split": split, "metrics": result})
    log(f"{ds.name} {split} ({result['protocol']}, {result['users']} users): "
        + "  ".join(f"{k} {v:.4f}" for k, v in result.items() if "@" in k))
    return result
