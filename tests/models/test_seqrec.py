"""SeqRec (SASRec / BERT4Rec): masking, padding, side information, losses, recommend, save/load."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from leanrank.core.errors import LeanrankError
from leanrank.models.seqrec import ItemEmbeddingTable, SeqRec, SeqRecConfig, title_embeddings

ATTRS = [[], [1, 2], [3], [], [2, 3, 4], [1], [4], [], [2], [3], [1, 4]]  # items 0..10


def make(seed: int = 0, **kw) -> SeqRec:
    torch.manual_seed(seed)
    base = dict(n_items=10, hidden=16, layers=2, heads=2, max_len=8, dropout=0.1)
    return SeqRec(SeqRecConfig(**{**base, **kw}))


def with_side(seed: int = 0, **kw) -> SeqRec:
    torch.manual_seed(seed)
    config = SeqRecConfig(n_items=10, hidden=16, layers=1, heads=2, max_len=8, n_attributes=5,
                          max_item_attributes=3, title_dim=6, **kw)
    return SeqRec(config, ATTRS, torch.randn(11, 6))


@pytest.mark.parametrize("kw, words", [
    ({"variant": "gru"}, "variant='gru'"), ({"hidden": 15, "heads": 2}, "multiple of heads"),
    ({"layers": 0}, "layers must be >= 1"), ({"loss": "bpr"}, "loss='bpr'"),
    ({"n_attributes": 3}, "both be 0"), ({"attribute_loss_weight": 0.5}, "needs attributes"),
    ({"dropout": 1.0}, "dropout"),
])
def test_config_validation(kw, words):
    with pytest.raises(LeanrankError, match=words):
        SeqRecConfig(**{"n_items": 10, **kw})


def test_sasrec_is_causal_and_bert4rec_is_not(one_thread):
    for variant, causal in (("sasrec", True), ("bert4rec", False)):
        model = make(variant=variant).eval()
        a = torch.tensor([[1, 2, 3, 4, 5, 6]])
        b = a.clone()
        b[0, 4] = 9
        with torch.no_grad():
            ha, hb = model.encode(a), model.encode(b)
        assert torch.equal(ha[0, :4], hb[0, :4]) == causal, variant
        assert not torch.allclose(ha[0, 4:], hb[0, 4:])


def test_padding_and_batch_mates_do_not_change_scores(one_thread):
    for variant in ("sasrec", "bert4rec"):
        model = make(variant=variant)
        alone = model.score_histories([[3, 1, 4]])
        batched = model.score_histories([[3, 1, 4], [5, 9, 2, 6, 5, 3, 5]])
        assert torch.allclose(alone[0], batched[0], atol=1e-5), variant
        assert alone.shape == (1, 11) and alone[0, 0] == float("-inf")


def test_long_histories_use_the_last_max_len_items(one_thread):
    model = make()
    long = [7, 7, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert torch.equal(model.score_histories([long]), model.score_histories([long[-8:]]))


def test_recommend_excludes_seen_and_pad(one_thread):
    model = make()
    history = [1, 2, 3, 4]
    top = model.recommend(history, k=20)
    assert len(top) == 6 and set(top) == {5, 6, 7, 8, 9, 10}
    scores = model.score_histories([history])[0]
    assert top == sorted(top, key=lambda i: -scores[i].item())
    everything = model.recommend(history, k=3, exclude_seen=False)
    assert everything == scores.topk(3).indices.tolist() and 0 not in everything


def test_item_vectors_add_attribute_mean_and_projected_title(one_thread):
    model = with_side()
    with torch.no_grad():
        got = model.item_vectors(torch.tensor([4, 3]))
        emb, attr = model.items.weight, model.attributes.weight
        title = model.title_proj(model.title_emb[4])
        want4 = emb[4] + (attr[2] + attr[3] + attr[4]) / 3 + title
        want3 = emb[3] + model.title_proj(model.title_emb[3])  # item 3 has no attributes
    assert torch.allclose(got[0], want4, atol=1e-6) and torch.allclose(got[1], want3, atol=1e-6)
    assert torch.equal(model.item_attr[4], torch.tensor([2, 3, 4]))
    assert isinstance(model.items, ItemEmbeddingTable) and model.items.full().shape == (11, 16)


def test_full_softmax_loss_is_catalog_cross_entropy(one_thread):
    model = make().eval()
    inputs, targets = model.training_batch([[1, 2, 3, 4], [5, 6, 7]])
    assert inputs.tolist() == [[1, 2, 3], [5, 6, 0]] and targets.tolist() == [[2, 3, 4], [6, 7, 0]]
    with torch.no_grad():
        h = model.encode(inputs)[targets > 0]
        logits = h @ model.items.weight.T
        logits[:, 0] = float("-inf")
        want = F.cross_entropy(logits, targets[targets > 0])
        assert torch.allclose(model.loss(inputs, targets), want, atol=1e-6)


def test_sampled_softmax_with_log_q(one_thread):
    model = make(loss="sampled", n_negatives=5)
    counts = torch.tensor([0, 10, 1, 1, 1, 1, 1, 1, 1, 1, 1.0])
    model.set_sampling_distribution(counts, power=1.0)
    assert torch.allclose(model.log_q[1:].exp().sum(), torch.tensor(1.0))
    assert torch.isclose(model.log_q[1].exp(), torch.tensor(10 / 19))
    inputs, targets = model.training_batch([[1, 2, 3, 4], [5, 6, 7]])
    loss = model.loss(inputs, targets)
    loss.backward()
    assert torch.isfinite(loss) and model.items.weight.grad is not None


def test_bert4rec_masks_at_least_one_item_per_sequence(one_thread):
    model = make(variant="bert4rec", mask_prob=0.01)
    torch.manual_seed(0)
    inputs, targets = model.training_batch([[1, 2, 3], [4, 5, 6, 7, 8]])
    masked = inputs == model.config.mask_id
    assert masked.any(1).all() and torch.equal(masked, targets > 0)
    original = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    assert torch.equal(targets[masked], original[masked])
    assert torch.equal(inputs[~masked], original[~masked])
    assert torch.isfinite(model.loss(inputs, targets))


def test_attribute_multitask_head_adds_weighted_bce(one_thread):
    model = with_side(attribute_loss_weight=0.5).eval()
    inputs, targets = model.training_batch([[1, 2, 4, 5], [6, 9, 10]])
    with torch.no_grad():
        total = model.loss(inputs, targets)
        h, t = model.encode(inputs)[targets > 0], targets[targets > 0]
        ce = F.cross_entropy(model.catalog_logits(h), t)
        multi_hot = torch.zeros(len(t), 5)
        for row, item in enumerate(t.tolist()):
            multi_hot[row, ATTRS[item]] = 1.0
        bce = F.binary_cross_entropy_with_logits(model.attr_head(h)[:, 1:], multi_hot[:, 1:])
    assert torch.allclose(total, ce + 0.5 * bce, atol=1e-5)


@pytest.mark.parametrize("variant", ["sasrec", "bert4rec"])
def test_save_load_round_trip_gives_identical_scores(tmp_path, one_thread, variant):
    model = with_side(variant=variant)
    histories = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 1, 2]]
    before = model.score_histories(histories)
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "leanrank.json", "model.safetensors"]
    card = json.loads((tmp_path / "m" / "leanrank.json").read_text(encoding="utf-8"))
    assert card["kind"] == "seqrec"
    loaded = SeqRec.load(tmp_path / "m")
    assert loaded.config == model.config
    assert torch.equal(loaded.score_histories(histories), before)
    assert torch.equal(loaded.title_emb, model.title_emb) and torch.equal(loaded.item_attr, model.item_attr)
    model.save(tmp_path / "m")  # overwriting an existing folder works
    with pytest.raises(LeanrankError, match="not a seqrec model folder"):
        SeqRec.load(tmp_path)


def test_side_information_errors():
    with pytest.raises(LeanrankError, match="title embeddings must be"):
        SeqRec(SeqRecConfig(n_items=10, title_dim=4), title_embeddings=torch.zeros(10, 4))
    with pytest.raises(LeanrankError, match="attribute ids must be in 1..4"):
        SeqRec(SeqRecConfig(n_items=3, n_attributes=5, max_item_attributes=2), [[], [7]])
    with pytest.raises(LeanrankError, match="history item ids must be in 1..10"):
        make().recommend([1, 11])
    with pytest.raises(LeanrankError, match="no item has a title"):
        title_embeddings(["", "", " "])


def test_title_embeddings_helper_uses_minilm(one_thread):
    vectors = title_embeddings(["", "Red Nail Polish", "", "BB Cream SPF 30"])
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert not vectors[0].any() and not vectors[2].any()
    assert torch.allclose(vectors[[1, 3]].norm(dim=1), torch.ones(2), atol=1e-4)
    model = SeqRec(SeqRecConfig(n_items=3, hidden=16, heads=2, title_dim=384), title_embeddings=vectors)
    assert torch.equal(model.title_emb, vectors)


def test_fast_dropout_keeps_the_expectation_and_is_off_in_eval():
    from leanrank.models.seqrec import Dropout

    torch.manual_seed(0)
    drop, x = Dropout(0.5), torch.ones(200_000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.5) < 0.01 and set(y.unique().tolist()) == {0.0, 2.0}
    assert abs(y.mean().item() - 1.0) < 0.02
    drop.eval()
    assert torch.equal(drop(x), x)
    assert Dropout(1.0)(x).abs().sum() == 0 and torch.equal(Dropout(0.0)(x), x)
