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
    import torch

    from leanrank.data.sequences import load_sequence_dataset
    from leanrank.eval.fullrank import PopularityScorer, evaluate_next_item, model_scorer
    from leanrank.models.seqrec import SeqRec, SeqRecConfig, title_embeddings
    from leanrank.train.rec import RecTrainConfig, train_rec

    out = Path(out)
    ds = load_sequence_dataset(dataset, data_dir)
    s = ds.summary()
    log(f"{ds.name}: {s['users']} users, {s['items']} items, {s['interactions']} interactions, "
        f"{s['attributes']} attributes, titles: {'yes' if ds.titles else 'no'}")
    side: dict = {}
    if attributes and ds.n_attributes:
        side.update(n_attributes=ds.n_attributes, max_item_attributes=max(len(a) for a in ds.item_attributes))
    elif model_flags.get("attribute_loss_weight"):
        raise LeanrankError("--attribute-loss-weight needs attributes (--attributes and a dataset that has them)")
    title_vectors = None
    if titles:
        if not ds.titles:
            raise LeanrankError(f"dataset {ds.name!r} has no item titles; use --no-titles")
        log("encoding item titles with MiniLM-L6 (frozen) ...")
        title_vectors = title_embeddings(ds.titles)
        side["title_dim"] = int(title_vectors.shape[1])
    config = SeqRecConfig(n_items=ds.n_items, **side, **model_flags)
    train_config = RecTrainConfig(**train_flags)
    setup = {"dataset": ds.name, "model": asdict(config), "train": asdict(train_config)}
    setup_path = out / SETUP_FILE
    if resume and setup_path.is_file():
        saved = json.loads(setup_path.read_text(encoding="utf-8"))
        if saved["model"] != setup["model"] or saved["dataset"] != setup["dataset"]:
            raise LeanrankError(f"{out}: --resume with a different dataset or model flags than the run "
                                f"in {setup_path}")
    write_json(setup_path, setup)
    torch.manual_seed(train_config.seed)
    model = SeqRec(config, ds.item_attributes if side.get("n_attributes") else None, title_vectors)
    record = train_rec(model, ds, train_config, out, resume=resume, device=device,
                       meta={"load_report": ds.report} if ds.report else None)
    split = ds.split()
    results = {
        "valid": evaluate_next_item(model_scorer(model), split.valid_histories(), split.valid_targets, ds.n_items),
        "test": evaluate_next_item(model_scorer(model), split.test_histories(), split.test_targets, ds.n_items),
        "popularity_test": evaluate_next_item(PopularityScorer.fit(split.train, ds.n_items), split.test_histories(),
                                              split.test_targets, ds.n_items),
    }
    for r in results.values():
        r.pop("ranks")
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
