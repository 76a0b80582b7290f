"""Compressed item tables and sequential-recommender distillation on a learnable synthetic pattern."""

from __future__ import annotations

import pytest
import torch

from leanrank.compress.distill_rec import (
    RecDistillConfig,
    distill_rec,
    fold_teacher,
    kd_loss,
    student_from_teacher,
)
from leanrank.compress.item_table import ItemTableConfig, compress_item_table_, load_seqrec, nbytes
from leanrank.core.errors import LeanrankError
from leanrank.eval.fullrank import evaluate_next_item, model_scorer
from leanrank.models.seqrec import SeqRec, SeqRecConfig
from leanrank.train.rec import RecTrainConfig, train_rec
from tests.train.test_rec import pattern_dataset, tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    ds = pattern_dataset()
    teacher = tiny(hidden=32, dropout=0.0)
    train_rec(teacher, ds, RecTrainConfig(lr=5e-3, max_steps=150, epochs=100), tmp_path_factory.mktemp("t"),
              progress=False, validate=False)
    return ds, teacher


def ndcg(model, ds) -> float:
    split = ds.split()
    return evaluate_next_item(model_scorer(model), split.test_histories(), split.test_targets, ds.n_items)["ndcg@10"]


@pytest.mark.parametrize("kind, rank, max_drop", [("int8", None, 0.02), ("int4", None, 0.15), ("lowrank", 8, 0.15)])
def test_compressed_tables_are_smaller_and_keep_quality(trained, tmp_path, kind, rank, max_drop):
    ds, teacher = trained
    base = ndcg(teacher, ds)
    model = load_seqrec(teacher.save(tmp_path / "teacher"))
    report = compress_item_table_(model, ItemTableConfig(kind=kind, rank=rank))
    assert report["bytes_after"] < report["bytes_before"] == nbytes(teacher.items)
    assert ndcg(model, ds) >= base - max_drop
    ids = torch.tensor([[0, 3, 5]])
    assert model.items(ids)[0, 0].abs().sum() == 0 and model.items.full()[0].abs().sum() == 0
    reloaded = load_seqrec(model.save(tmp_path / kind))
    assert type(reloaded.items) is type(model.items)
    h = [[1, 2, 3], [7, 8]]
    assert torch.allclose(reloaded.score_histories(h), model.score_histories(h), atol=1e-5)
    with pytest.raises(LeanrankError, match="already compressed"):      # only a low-rank factor is quantized again
        compress_item_table_(model, ItemTableConfig(kind="lowrank", rank=4) if kind == "lowrank"
                             else ItemTableConfig(kind="int8"))


def test_lowrank_factor_stored_int8_is_smaller_keeps_quality_and_reloads(trained, tmp_path):
    from leanrank.compress.item_table import QuantizedLowRankItemTable

    ds, teacher = trained
    model = load_seqrec(teacher.save(tmp_path / "teacher"))
    compress_item_table_(model, ItemTableConfig(kind="lowrank", rank=8))
    lowrank_ndcg, lowrank_bytes = ndcg(model, ds), nbytes(model.items)
    factor_bytes = model.items.table.numel() * 4
    report = compress_item_table_(model, ItemTableConfig(kind="int8"))
    assert isinstance(model.items, QuantizedLowRankItemTable) and model.items.q.codes.dtype == torch.uint8
    # int8 codes + a float scale and zero per row (rank 8: 16 instead of 32 bytes a row)
    assert report["bytes_before"] == lowrank_bytes and report["bytes_after"] <= lowrank_bytes - 0.45 * factor_bytes
    assert ndcg(model, ds) >= lowrank_ndcg - 0.02
    assert model.items(torch.tensor([[0, 4]]))[0, 0].abs().sum() == 0 and model.items.full()[0].abs().sum() == 0
    reloaded = load_seqrec(model.save(tmp_path / "lowrank-int8"))
    assert type(reloaded.items) is QuantizedLowRankItemTable
    h = [[1, 2, 3], [7, 8]]
    assert torch.allclose(reloaded.score_histories(h), model.score_histories(h), atol=1e-5)


def test_item_table_config_errors():
    for kw in ({"kind": "int2"}, {"kind": "lowrank"}, {"kind": "int8", "rank": 4}):
        with pytest.raises(LeanrankError):
            ItemTableConfig(**kw)


def test_kd_loss_is_zero_gradient_at_the_teacher_and_mixes_ce(trained):
    ds, teacher = trained
    inputs, targets = teacher.training_batch([s for s in ds.split().train[:16]])
    teacher.eval()
    pure_kl = kd_loss(teacher, alpha=1.0, temperature=2.0)(teacher, inputs, targets)
    assert pure_kl.abs().item() < 1e-5  # a model distilled against itself has nothing to learn
    ce = kd_loss(teacher, alpha=0.0, temperature=2.0)(teacher, inputs, targets)
    assert torch.isclose(ce, teacher.loss(inputs, targets), atol=1e-5)


def test_student_from_teacher_inherits_the_item_geometry(trained):
    ds, teacher = trained
    student = student_from_teacher(teacher, hidden=16, layers=1)
    assert student.config.hidden == 16 and student.config.n_attributes == 0
    t = teacher.item_vectors().detach()[1:]
    s = student.items.full().detach()[1:]
    # PCA keeps most of the teacher's pairwise similarity structure
    corr = torch.corrcoef(torch.stack([(t @ t.T).flatten(), (s @ s.T).flatten()]))[0, 1]
    assert corr > 0.8
    with pytest.raises(LeanrankError, match="wider"):
        student_from_teacher(teacher, hidden=64, layers=1)


def test_fold_teacher_bakes_side_information_into_a_plain_table_exactly():
    torch.manual_seed(0)
    n = 30
    attributes = [[1 + i % 4, 1 + (i * 7) % 4] for i in range(n + 1)]
    teacher = SeqRec(SeqRecConfig(n_items=n, hidden=16, layers=2, heads=2, max_len=8, dropout=0.0, n_attributes=5,
                                  max_item_attributes=2, title_dim=12),
                     item_attributes=attributes, title_embeddings=torch.randn(n + 1, 12)).eval()
    histories = [[1, 5, 9], [2, 3, 4, 7, 8, 30], [11]]
    folded = fold_teacher(teacher).eval()
    assert folded.config.n_attributes == 0 and folded.config.title_dim == 0 and folded.config.layers == 2
    assert nbytes(folded) < nbytes(teacher)
    with torch.no_grad():
        torch.testing.assert_close(folded.score_histories(histories), teacher.score_histories(histories))
        one = fold_teacher(teacher, [1]).eval()
        assert one.config.layers == 1
        torch.testing.assert_close(one.blocks[0].state_dict(), teacher.blocks[1].state_dict())
        # dropping a block changes the scores but keeps the folded item vectors
        assert not torch.allclose(one.score_histories(histories), teacher.score_histories(histories))
        torch.testing.assert_close(one.items.full(), folded.items.full())
    for bad in ([], [2], [0, 0]):
        with pytest.raises(LeanrankError, match="distinct indices"):
            fold_teacher(teacher, bad)


def test_distilled_student_beats_the_same_student_trained_on_labels(trained, tmp_path):
    ds, teacher = trained
    steps = RecTrainConfig(lr=5e-3, max_steps=40, epochs=100)
    results = {}
    for alpha in (0.0, 0.7):
        torch.manual_seed(0)
        student = tiny(hidden=8, heads=2, dropout=0.0)
        record = distill_rec(teacher, student, ds, RecDistillConfig(alpha=alpha, temperature=2.0, train=steps),
                             tmp_path / f"a{alpha}", progress=False)
        assert record["distill"]["alpha"] == alpha and student.card.steps[-1]["step"] == "distill"
        results[alpha] = ndcg(student, ds)
    assert results[0.7] > results[0.0] - 0.02
    assert results[0.7] > 0.3  # the pattern is learnable; popularity is far below
