"""Transfer data: the right candidates, the teacher's exact scores, resumable caching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leanrank.compress.transfer import TransferConfig, build_transfer, load_transfer
from leanrank.core.errors import LeanrankError
from leanrank.models.bm25 import BM25Index


class CountingTeacher:
    """Wraps a CrossEncoder and counts the pairs it scores."""

    def __init__(self, ce):
        self.ce, self.model, self.pairs = ce, ce.model, 0

    def score(self, queries, titles, batch_size=64):
        self.pairs += len(queries)
        return self.ce.score(queries, titles, batch_size=batch_size)


def test_lists_hold_judged_then_recalled_products_with_teacher_scores(tiny_cross_encoder, tiny_search, tmp_path):
    train = tiny_search["train"]
    teacher = CountingTeacher(tiny_cross_encoder())
    dense = lambda queries, k: [[(pid, 1.0) for pid in list(train.titles)[:k]] for _ in queries]  # noqa: E731
    config = TransferConfig(max_queries=10, bm25=4, dense=3, max_candidates=64)
    ts = build_transfer(teacher, train, tmp_path / "t", config, bm25=BM25Index.build(train.titles), dense=dense,
                        progress=False, log=lambda *_: None)
    assert len(ts.lists) == 10 and teacher.pairs == ts.pairs
    groups = train.by_query()
    for c in ts.lists:
        gains = {j.product_id: j.gain for j in groups[c.query]}
        n_judged = len(gains)
        assert c.judged[:n_judged].all() and not c.judged[n_judged:].any()
        assert len(c.ids) == len(set(c.ids)) == len(c.titles) <= n_judged + 4 + 3
        span = train.labels.label_max - train.labels.label_min
        assert sorted(c.targets[:n_judged]) == pytest.approx(sorted(g / span for g in gains.values()))
        assert (c.targets[n_judged:] == 0).all()
        assert len(c.titles) > n_judged                          # recalled candidates were added
        np.testing.assert_allclose(c.teacher, teacher.ce.score([c.query] * len(c.titles), c.titles), atol=1e-4)


def test_resume_scores_only_what_is_missing(tiny_cross_encoder, tiny_search, tmp_path):
    train = tiny_search["train"]
    config = TransferConfig(max_queries=12, bm25=3, dense=0)
    first = build_transfer(CountingTeacher(tiny_cross_encoder()), train, tmp_path / "t", config, chunk=4,
                           progress=False, log=lambda *_: None)
    path = tmp_path / "t" / "transfer.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20])          # killed mid-line after 5 queries
    teacher = CountingTeacher(tiny_cross_encoder())
    again = build_transfer(teacher, train, tmp_path / "t", config, chunk=4, progress=False, log=lambda *_: None)
    assert teacher.pairs == sum(len(c.titles) for c in first.lists[5:]) or teacher.pairs == sum(
        len(c.titles) for c in first.lists if c.query not in {json.loads(x)["query"] for x in lines[:5]})
    assert [c.query for c in again.lists] == [c.query for c in first.lists]
    for a, b in zip(again.lists, first.lists):
        np.testing.assert_allclose(a.teacher, b.teacher, atol=1e-4)
    assert len(path.read_text().splitlines()) == 12
    loaded = load_transfer(tmp_path / "t", train.titles)
    assert loaded.pairs == first.pairs
    teacher = CountingTeacher(tiny_cross_encoder())
    build_transfer(teacher, train, tmp_path / "t", config, progress=False, log=lambda *_: None)
    assert teacher.pairs == 0                                    # a finished folder costs nothing


def test_a_folder_of_another_config_is_refused(tiny_cross_encoder, tiny_search, tmp_path):
    train = tiny_search["train"]
    build_transfer(tiny_cross_encoder(), train, tmp_path / "t", TransferConfig(max_queries=3, dense=0),
                   progress=False, log=lambda *_: None)
    with pytest.raises(LeanrankError, match="another teacher"):
        build_transfer(tiny_cross_encoder(), train, tmp_path / "t", TransferConfig(max_queries=4, dense=0),
                       progress=False, log=lambda *_: None)
    with pytest.raises(LeanrankError, match="no transfer scores"):
        load_transfer(tmp_path / "nothing", train.titles)


@pytest.mark.parametrize("bad", [{"bm25": -1}, {"max_candidates": 1}, {"max_queries": 0}])
def test_config_is_validated(bad):
    with pytest.raises(LeanrankError):
        TransferConfig(**bad)
