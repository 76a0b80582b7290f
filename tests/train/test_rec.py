"""``train_rec``: learns a synthetic next-item pattern, exact resume, early stopping, budgets, windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leanrank.core.errors import LeanrankError
from leanrank.data.sequences import SequenceDataset
from leanrank.eval.fullrank import PopularityScorer, evaluate_next_item, model_scorer
from leanrank.models.seqrec import SeqRec, SeqRecConfig
from leanrank.train.checkpoint import load_checkpoint
from leanrank.train.rec import RecTrainConfig, train_examples, train_rec, validation_users

N_ITEMS = 30


class Killed(Exception):
    pass


def pattern_dataset(n_users: int = 160, seed: int = 0) -> SequenceDataset:
    """Item i is always followed by item i + 1 (wrapping after N_ITEMS); starts favour low ids."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start = int(rng.integers(0, N_ITEMS // 2)) if rng.random() < 0.7 else int(rng.integers(0, N_ITEMS))
        length = int(rng.integers(5, 10))
        seqs.append(np.array([(start + j) % N_ITEMS + 1 for j in range(length)], dtype=np.int64))
    return SequenceDataset("pattern", seqs, N_ITEMS, user_ids=[str(u) for u in range(n_users)],
                           item_ids=[""] + [str(i) for i in range(1, N_ITEMS + 1)])


def tiny(seed: int = 0, **kw) -> SeqRec:
    torch.manual_seed(seed)
    base = dict(n_items=N_ITEMS, hidden=32, layers=1, heads=2, max_len=10, dropout=0.1)
    return SeqRec(SeqRecConfig(**{**base, **kw}))


def weights(model: SeqRec) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant, steps, margin", [("sasrec", 300, 0.5), ("bert4rec", 300, 0.3)])
def test_learns_the_pattern_and_beats_popularity(tmp_path, one_thread, variant, steps, margin):
    ds = pattern_dataset()
    split = ds.split()
    model = tiny(variant=variant)
    config = RecTrainConfig(lr=5e-3, batch_size=32, epochs=100, max_steps=steps, eval_every=100, patience=10)
    record = train_rec(model, ds, config, tmp_path / "run", progress=False)
    assert record["steps"] == steps and [h["step"] for h in record["history"]] == [100, 200, 300]
    test = evaluate_next_item(model_scorer(model), split.test_histories(), split.test_targets, N_ITEMS)
    pop = evaluate_next_item(PopularityScorer.fit(split.train, N_ITEMS), split.test_histories(),
                             split.test_targets, N_ITEMS)
    assert test["ndcg@10"] > pop["ndcg@10"] + margin, (test["ndcg@10"], pop["ndcg@10"])
    if variant == "sasrec":
        assert model.recommend([4, 5, 6], k=1) == [7]
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert run["best_ndcg@10"] == max(h["ndcg@10"] for h in run["history"])
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


RESUME = dict(lr=3e-3, batch_size=32, epochs=3, max_steps=12, checkpoint_every=4, seed=3)


@pytest.mark.parametrize("model_kw", [{"variant": "bert4rec"}, {"loss": "sampled", "n_negatives": 8}])
def test_resume_after_kill_is_exact(tmp_path, one_thread, model_kw):
    """Dropout, BERT4Rec masking and sampled negatives all draw from the RNG: restored exactly."""
    ds = pattern_dataset(n_users=100)  # 4 batches of 32 per epoch: steps 4, 8, 12 end epochs
    config = RecTrainConfig(**RESUME)
    a = tiny(seed=1, **model_kw)
    record_a = train_rec(a, ds, config, tmp_path / "a", progress=False)
    assert record_a["steps"] == 12 and len(record_a["history"]) == 3

    def kill(step: int) -> None:
        if step == 6:
            raise Killed

    with pytest.raises(Killed):
        train_rec(tiny(seed=1, **model_kw), ds, config, tmp_path / "b", progress=False, on_step=kill)
    state = json.loads(load_checkpoint(tmp_path / "b")["state"])
    assert (state["step"], state["epoch"], state["batch"]) == (4, 1, 0)
    assert not (tmp_path / "b" / "run.json").exists()
    b = tiny(seed=1, **model_kw)
    record_b = train_rec(b, ds, config, tmp_path / "b", resume=True, progress=False)
    assert record_b["steps"] == 12 and _without_seconds(record_b) == _without_seconds(record_a)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], v) for k, v in weights(tiny(seed=1, **model_kw)).items())


def _without_seconds(record: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in record["history"]]


def test_early_stopping_and_best_weights(tmp_path, one_thread):
    ds = pattern_dataset(n_users=64)  # 2 steps per epoch
    frozen = train_rec(tiny(), ds, RecTrainConfig(lr=1e-9, batch_size=32, epochs=50, patience=2), tmp_path / "f",
                       progress=False)  # no change: validation never improves after the first epoch
    assert frozen["stopped_early"] and frozen["steps"] == 6 and frozen["best_step"] == 2
    model = tiny()
    config = RecTrainConfig(lr=0.3, batch_size=32, epochs=8, patience=8, valid_users=20)  # noisy validation
    record = train_rec(model, ds, config, tmp_path / "es", progress=False)
    assert all(h["users"] == 20 for h in record["history"]) and record["valid_users"] == 20
    best = record["history"][[h["step"] for h in record["history"]].index(record["best_step"])]
    assert best["ndcg@10"] == max(h["ndcg@10"] for h in record["history"])
    users = validation_users(ds, 20, 0)
    split = ds.split()
    again = evaluate_next_item(model_scorer(model), [split.train[u] for u in users], split.valid_targets[users],
                               N_ITEMS)
    assert again["ndcg@10"] == pytest.approx(best["ndcg@10"])  # the best weights were restored


def test_wall_clock_budget(tmp_path, one_thread):
    timed = train_rec(tiny(), pattern_dataset(n_users=64), RecTrainConfig(epochs=1000, max_seconds=0.5, batch_size=8),
                      tmp_path / "t", progress=False, validate=False)
    assert timed["stopped_early"] and timed["train_seconds"] < 5 and 1 <= timed["steps"] < 8 * 1000
    assert timed["history"] == [] and timed["best_step"] is None


def test_bf16_autocast_on_cpu(tmp_path, one_thread):
    model = tiny()
    record = train_rec(model, pattern_dataset(n_users=32), RecTrainConfig(precision="bf16", max_steps=2,
                       batch_size=16), tmp_path / "bf16", progress=False, device="cpu")
    assert record["steps"] == 2 and record["config"]["precision"] == "bf16"
    assert 0 <= record["history"][-1]["ndcg@10"] <= 1
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_train_windows_cover_every_target_once():
    seq = np.arange(1, 26, dtype=np.int64)  # 25 items; train part = items 1..23
    ds = SequenceDataset("one", [seq], 25, user_ids=["u"], item_ids=[""] + [str(i) for i in range(1, 26)])
    windows = train_examples(ds, max_len=10, variant="sasrec")
    assert all(len(w) <= 11 for w in windows)
    targets = sorted(int(t) for w in windows for t in w[1:])
    assert targets == list(range(2, 24))
    masked = train_examples(ds, max_len=10, variant="bert4rec")
    assert sorted(int(t) for w in masked for t in w) == list(range(1, 24))


def test_config_and_input_errors(tmp_path):
    with pytest.raises(LeanrankError, match="precision='fp16'"):
        RecTrainConfig(precision="fp16")
    with pytest.raises(LeanrankError, match="valid_users must be >= 1"):
        RecTrainConfig(valid_users=0)
    with pytest.raises(LeanrankError, match="metric"):
        RecTrainConfig(metric="mrr@10")
    with pytest.raises(LeanrankError, match="model has 7 items"):
        train_rec(SeqRec(SeqRecConfig(n_items=7)), pattern_dataset(8), RecTrainConfig(), tmp_path, progress=False)
