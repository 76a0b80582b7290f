"""``fit`` and what feeds it: exact resume, early stopping with best weights, gradient accumulation,
optimizers, precision, config validation; ``build_examples`` and ``epoch_batches``."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import pytest
import torch

from leanrank.core.errors import LeanrankError
from leanrank.models.bm25 import BM25Index
from leanrank.models.cross_encoder import CrossEncoder, autocast
from leanrank.train.batching import epoch_batches
from leanrank.train.checkpoint import load_checkpoint
from leanrank.train.examples import PairExample, build_examples
from leanrank.train.fit import TrainConfig, fit
from leanrank.train.losses import compute_loss

torch.set_num_threads(1)


class Killed(Exception):
    """Raised from ``on_step`` to simulate a process killed mid-training."""


def _kill_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise Killed(s)

    return on_step


def _weights(model: CrossEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _assert_weights_differ(a: dict, b: dict) -> None:
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _scripted(values, fallback=0.0, snapshots=None):
    """A ``validate`` that returns ``values`` in turn (then ``fallback``), snapshotting weights."""
    it = iter(values)

    def validate(model: CrossEncoder) -> dict:
        if snapshots is not None:
            snapshots.append(_weights(model))
        return {"ndcg@10": next(it, fallback)}

    return validate


@pytest.fixture(scope="module")
def examples(tiny_search):
    ex = build_examples(tiny_search["train"], bm25=None, random_negatives=1, seed=0)
    assert len(ex) >= 48
    return ex


@pytest.fixture(scope="module")
def tiny_bm25(tiny_search):
    return BM25Index.build(tiny_search["train"].titles)


# ----------------------------------------------------------------------------- resume

RESUME = dict(batch_size=4, max_steps=12, checkpoint_every=4, lr=1e-3, warmup_ratio=0.25, seed=3)


def test_resume_after_kill_is_exact(tiny_cross_encoder, examples, tmp_path):
    data = examples[:48]  # 12 batches of 4: one epoch of 12 optimizer steps
    config = TrainConfig(**RESUME)
    assert tiny_cross_encoder().model.config.hidden_dropout_prob > 0  # RNG restore matters

    model_a = tiny_cross_encoder(seed=1)
    record_a = fit(model_a, data, config, tmp_path / "a", progress=False, device="cpu")
    assert record_a["steps"] == 12

    with pytest.raises(Killed):
        fit(tiny_cross_encoder(seed=1), data, config, tmp_path / "b", progress=False, device="cpu",
            on_step=_kill_at(6))
    ckpt = load_checkpoint(tmp_path / "b")
    state = json.loads(ckpt["state"])
    assert (state["step"], state["epoch"], state["batch"]) == (4, 0, 4)  # steps 5-6 are lost
    assert not (tmp_path / "b" / "run.json").exists()

    model_b = tiny_cross_encoder(seed=1)
    record_b = fit(model_b, data, config, tmp_path / "b", resume=True, progress=False, device="cpu")
    assert record_b["steps"] == record_a["steps"] == 12
    assert record_b["train_pairs"] == record_a["train_pairs"] == 48
    _assert_equal_weights(_weights(model_b), _weights(model_a))
    _assert_weights_differ(_weights(model_b), _weights(tiny_cross_encoder(seed=1)))
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["steps"] == 12


def test_resume_without_rng_restore_would_differ(tiny_cross_encoder, examples, tmp_path):
    """Sanity check that the exact-resume test can fail: dropout makes a run seed-dependent."""
    data = examples[:16]
    a, b = tiny_cross_encoder(seed=1), tiny_cross_encoder(seed=1)
    fit(a, data, TrainConfig(**{**RESUME, "max_steps": 4}), tmp_path / "a", progress=False, device="cpu")
    fit(b, data, TrainConfig(**{**RESUME, "max_steps": 4, "seed": 4}), tmp_path / "b", progress=False,
        device="cpu")
    _assert_weights_differ(_weights(a), _weights(b))


EPOCHS = dict(batch_size=2, grad_accum=2, epochs=2, checkpoint_every=4, lr=1e-3, warmup_ratio=0.1, seed=5)


@pytest.mark.parametrize("kill, resumes_from", [(7, (5, 1, 0)), (9, (8, 1, 6))])
def test_resume_in_second_epoch_is_exact(tiny_cross_encoder, examples, tmp_path, kill, resumes_from):
    """20 pairs, batches of 2, accumulation 2: 5 steps per epoch, 10 in all. Killed in epoch 2,
    either right after the end-of-epoch checkpoint (step 5) or mid-epoch (step 8)."""
    data = examples[:20]
    config = TrainConfig(**EPOCHS)
    model_a = tiny_cross_encoder(seed=2)
    record_a = fit(model_a, data, config, tmp_path / "a", progress=False, device="cpu")
    assert (record_a["steps"], record_a["epochs_done"]) == (10, 2)

    with pytest.raises(Killed):
        fit(tiny_cross_encoder(seed=2), data, config, tmp_path / "b", progress=False, device="cpu",
            on_step=_kill_at(kill))
    state = json.loads(load_checkpoint(tmp_path / "b")["state"])
    assert (state["step"], state["epoch"], state["batch"]) == resumes_from

    model_b = tiny_cross_encoder(seed=2)
    record_b = fit(model_b, data, config, tmp_path / "b", resume=True, progress=False, device="cpu")
    assert (record_b["steps"], record_b["epochs_done"]) == (10, 2)
    assert record_b["train_pairs"] == record_a["train_pairs"] == 40
    _assert_equal_weights(_weights(model_b), _weights(model_a))


def test_resume_of_finished_run_does_not_train_more(tiny_cross_encoder, examples, tmp_path):
    data = examples[:8]
    config = TrainConfig(batch_size=4, lr=1e-3)
    model = tiny_cross_encoder()
    fit(model, data, config, tmp_path, progress=False, device="cpu")
    again = tiny_cross_encoder(seed=9)
    record = fit(again, data, config, tmp_path, resume=True, progress=False, device="cpu")
    assert record["steps"] == 2
    _assert_equal_weights(_weights(again), _weights(model))


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_keeps_best_weights(tiny_cross_encoder, examples, tmp_path):
    data = examples[:48]  # 12 steps per epoch, 24 in all
    config = TrainConfig(batch_size=4, epochs=2, eval_every=2, patience=2, lr=1e-3, warmup_ratio=0.0)
    snapshots: list[dict] = []
    model = tiny_cross_encoder()
    record = fit(model, data, config, tmp_path, validate=_scripted([0.5, 0.7, 0.6, 0.55], snapshots=snapshots),
                 progress=False, device="cpu")
    assert [h["step"] for h in record["history"]] == [2, 4, 6, 8]
    assert [h["ndcg@10"] for h in record["history"]] == [0.5, 0.7, 0.6, 0.55]
    assert record["steps"] == 8 and record["stopped_early"] is True
    assert record["best_step"] == 4 and record["best_ndcg@10"] == 0.7
    final = _weights(model)
    saved = _weights(CrossEncoder.from_pretrained(tmp_path / "best"))
    _assert_equal_weights(final, saved)
    _assert_equal_weights(final, snapshots[1])          # the weights that scored 0.7
    _assert_weights_differ(final, snapshots[3])         # not the weights training stopped with
    assert json.loads((tmp_path / "run.json").read_text())["best_step"] == 4


def test_early_stopping_on_epoch_evaluation_is_recorded_and_survives_resume(
        tiny_cross_encoder, examples, tmp_path):
    """eval_every=None evaluates once per epoch; a stop there must be final (also on resume)."""
    data = examples[:16]  # 4 steps per epoch, 16 in all
    config = TrainConfig(batch_size=4, epochs=4, patience=1, lr=1e-3, warmup_ratio=0.0)
    model = tiny_cross_encoder()
    record = fit(model, data, config, tmp_path, validate=_scripted([0.5, 0.4]), progress=False, device="cpu")
    assert record["steps"] == 8 and record["epochs_done"] == 2
    assert record["stopped_early"] is True
    assert record["best_step"] == 4

    again = tiny_cross_encoder(seed=9)
    resumed = fit(again, data, config, tmp_path, resume=True, validate=_scripted([0.9]), progress=False,
                  device="cpu")
    assert resumed["steps"] == 8 and resumed["stopped_early"] is True
    assert [h["step"] for h in resumed["history"]] == [4, 8]
    _assert_equal_weights(_weights(again), _weights(model))


def test_no_validate_keeps_last_weights(tiny_cross_encoder, examples, tmp_path):
    model = tiny_cross_encoder()
    record = fit(model, examples[:8], TrainConfig(batch_size=4, lr=1e-3), tmp_path, progress=False, device="cpu")
    assert record["best_step"] is None and record["history"] == [] and not (tmp_path / "best").exists()
    assert (tmp_path / "run.json").exists() and (tmp_path / "checkpoint.pt").exists()


# ----------------------------------------------------------------------------- accumulation


def test_gradient_accumulation_matches_big_batch(tiny_cross_encoder, examples, tmp_path):
    """16 pairs: 2 micro-batches of 8 accumulated == 1 batch of 16 (both one optimizer step).

    The two batches of 8 hold the same 16 pairs whichever way length bucketing cuts them, and the
    loss is a mean over equal-size halves, so the gradients agree up to float rounding."""
    data = examples[:16]
    common = dict(lr=1e-3, warmup_ratio=0.0, max_grad_norm=1e9)
    init = _weights(tiny_cross_encoder(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    runs = []
    for batch, accum in ((8, 2), (16, 1)):
        model = tiny_cross_encoder(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        record = fit(model, data, TrainConfig(batch_size=batch, grad_accum=accum, **common),
                     tmp_path / f"b{batch}", progress=False, device="cpu")
        assert record["steps"] == 1 and record["train_pairs"] == 16
        runs.append(_weights(model))
    small, big = runs
    for k in small:
        torch.testing.assert_close(small[k], big[k], atol=1e-5, rtol=0, msg=k)
    _assert_weights_differ(small, init)


def test_gradient_accumulation_divides_optimizer_steps(tiny_cross_encoder, examples, tmp_path):
    data = examples[:32]
    plain = fit(tiny_cross_encoder(), data, TrainConfig(batch_size=4), tmp_path / "1", progress=False,
                device="cpu")
    accum = fit(tiny_cross_encoder(), data, TrainConfig(batch_size=4, grad_accum=2), tmp_path / "2",
                progress=False, device="cpu")
    assert (plain["steps"], accum["steps"]) == (8, 4)
    assert plain["train_pairs"] == accum["train_pairs"] == 32


# ----------------------------------------------------------------------------- optimizers


def _overfit_set(tiny_search) -> list[PairExample]:
    ds = tiny_search["train"]
    titles = sorted(set(ds.titles.values()))[:16]
    return [PairExample(f"query {i % 4}", t, float(i % 2), i % 4) for i, t in enumerate(titles)]


def _loss(model: CrossEncoder, data: list[PairExample]) -> float:
    model.model.eval()
    with torch.no_grad():
        logits = model(**model.tokenize([e.query for e in data], [e.title for e in data]))
    return compute_loss("bce", logits, torch.tensor([e.target for e in data]), torch.zeros(len(data))).item()


@pytest.mark.parametrize("optimizer, lr", [("adamw", 1e-2), ("adafactor", 0.2)])
def test_optimizers_overfit_tiny_set(tiny_cross_encoder, tiny_search, tmp_path, optimizer, lr):
    data = _overfit_set(tiny_search)
    model = tiny_cross_encoder(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    before = _loss(model, data)
    config = TrainConfig(optimizer=optimizer, lr=lr, batch_size=16, epochs=30, warmup_ratio=0.0,
                         weight_decay=0.0)
    record = fit(model, data, config, tmp_path, progress=False, device="cpu")
    after = _loss(model, data)
    assert record["steps"] == 30
    assert after < 0.7 * before, (optimizer, before, after)


# ----------------------------------------------------------------------------- precision and config


def test_bf16_on_cpu_trains_with_finite_loss(tiny_cross_encoder, examples, tmp_path):
    data = examples[:4]
    model = tiny_cross_encoder()
    init = _weights(model)
    record = fit(model, data, TrainConfig(precision="bf16", batch_size=4, lr=1e-3), tmp_path,
                 progress=False, device="cpu")
    assert record["steps"] == 1
    weights = _weights(model)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    _assert_weights_differ(weights, init)
    with torch.no_grad(), autocast(torch.device("cpu"), "bf16"):
        logits = model(**model.tokenize([e.query for e in data], [e.title for e in data]))
    assert logits.dtype == torch.bfloat16
    loss = compute_loss("bce", logits, torch.tensor([e.target for e in data]), torch.zeros(4))
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_fp16_on_cpu_raises(tiny_cross_encoder, examples, tmp_path):
    with pytest.raises(LeanrankError, match="fp16"):
        fit(tiny_cross_encoder(), examples[:4], TrainConfig(precision="fp16", batch_size=4), tmp_path,
            progress=False, device="cpu")


@pytest.mark.parametrize("bad", [
    {"loss": "hinge"}, {"optimizer": "sgd"}, {"precision": "fp8"}, {"batch_size": 0}, {"lr": 0.0},
    {"lr": -1e-4}, {"grad_accum": 0}, {"epochs": 0}, {"checkpoint_every": 0}, {"warmup_ratio": 1.0},
])
def test_invalid_config_raises(bad):
    with pytest.raises(LeanrankError):
        TrainConfig(**bad)


def test_no_examples_raises(tiny_cross_encoder, tmp_path):
    with pytest.raises(LeanrankError, match="no training examples"):
        fit(tiny_cross_encoder(), [], TrainConfig(), tmp_path, progress=False, device="cpu")


# ----------------------------------------------------------------------------- build_examples


def test_build_examples(tiny_search, tiny_bm25):
    ds = tiny_search["train"]
    examples = build_examples(ds, tiny_bm25, bm25_negatives=3, random_negatives=2, seed=7)
    assert examples == build_examples(ds, tiny_bm25, bm25_negatives=3, random_negatives=2, seed=7)
    assert examples != build_examples(ds, tiny_bm25, bm25_negatives=3, random_negatives=2, seed=8)

    groups = ds.by_query()
    queries = list(groups)
    hits = tiny_bm25.search(queries, k=50)
    pids_by_title: dict[str, set[str]] = defaultdict(set)
    for pid, title in ds.titles.items():
        pids_by_title[title].add(pid)
    by_group: dict[int, list[PairExample]] = defaultdict(list)
    for e in examples:
        by_group[e.group].append(e)
    assert sorted(by_group) == list(range(len(queries)))

    for gi, q in enumerate(queries):
        rows = by_group[gi]
        assert all(e.query == q for e in rows)
        judged_ids = {j.product_id for j in groups[q]}
        n_judged = len(groups[q])
        # judged pairs first, target = gain / (3 - 1) on the Home Depot 1..3 scale
        for e, j in zip(rows[:n_judged], groups[q], strict=True):
            assert e.title == ds.titles[j.product_id]
            assert e.target == pytest.approx((j.label - 1.0) / 2.0)
            assert 0.0 <= e.target <= 1.0
        negatives = rows[n_judged:]
        pool = [pid for pid, _ in hits[gi] if pid not in judged_ids]
        n_hard = min(3, len(pool))
        assert len(negatives) == n_hard + 2
        pool_titles = {ds.titles[pid] for pid in pool}
        assert all(e.title in pool_titles for e in negatives[:n_hard])
        for e in negatives:
            assert e.target == 0.0
            assert pids_by_title[e.title] - judged_ids, f"negative {e.title!r} is judged for {q!r}"


def test_build_examples_bm25_depth_bounds_the_hard_negative_pool(tiny_search, tiny_bm25):
    ds = tiny_search["train"]
    queries = list(ds.by_query())
    for depth in (3, 50):
        hits = tiny_bm25.search(queries, k=depth)
        examples = build_examples(ds, tiny_bm25, bm25_negatives=2, random_negatives=0, bm25_depth=depth, seed=3)
        for gi, q in enumerate(queries):
            judged = {j.product_id for j in ds.by_query()[q]}
            pool = {ds.titles[pid] for pid, _ in hits[gi] if pid not in judged}
            negatives = [e for e in examples if e.group == gi][len(ds.by_query()[q]):]
            assert len(negatives) == min(2, len(pool))
            assert all(e.title in pool for e in negatives)


def test_build_examples_counts_without_bm25(tiny_search):
    ds = tiny_search["train"]
    examples = build_examples(ds, bm25=None, random_negatives=1, seed=0)
    assert len(examples) == len(ds.judgments) + len(ds.queries())
    zero_only = build_examples(ds, bm25=None, random_negatives=0)
    assert len(zero_only) == len(ds.judgments)
    assert Counter(e.target == 0.0 for e in examples)[True] >= len(ds.queries())


# ----------------------------------------------------------------------------- epoch_batches


@pytest.mark.parametrize("loss", ["bce", "listwise", "bce+listwise"])
def test_epoch_batches(examples, loss):
    plan = epoch_batches(examples, 8, loss, seed=1, epoch=0)
    assert plan == epoch_batches(examples, 8, loss, seed=1, epoch=0)
    assert plan != epoch_batches(examples, 8, loss, seed=1, epoch=1)
    assert plan != epoch_batches(examples, 8, loss, seed=2, epoch=0)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(examples)))  # every pair exactly once
    if loss == "bce":
        assert all(1 <= len(b) <= 8 for b in plan)
        assert sum(len(b) == 8 for b in plan) >= len(plan) - 1
    else:
        group_batches: dict[int, set[int]] = defaultdict(set)
        for bi, batch in enumerate(plan):
            for i in batch:
                group_batches[examples[i].group].add(bi)
        assert all(len(b) == 1 for b in group_batches.values())  # a list is never split
        for batch in plan:
            groups_in = {examples[i].group for i in batch}
            assert len(batch) <= 8 or len(groups_in) == 1


def test_listwise_oversized_group_is_kept_whole():
    ex = [PairExample("q", f"t{i}", float(i == 0), 0) for i in range(10)] + [
        PairExample("r", f"u{i}", float(i == 0), 1) for i in range(3)]
    plan = epoch_batches(ex, 4, "listwise", seed=0, epoch=0)
    assert sorted(map(sorted, plan)) == [list(range(10)), [10, 11, 12]]


def test_warmup_linear_decay():
    from leanrank.train.fit import warmup_linear_decay

    f = warmup_linear_decay(total=10, warmup=4)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(7) == pytest.approx(0.5) and f(10) == 0.0 and f(12) == 0.0
    assert warmup_linear_decay(total=3, warmup=0)(0) == 1.0
