"""Recovery by distillation: a factorized model moves back towards its parent on the parent's cached
scores, the scores are computed once per parent, and bad settings are refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from leanrank.compress.factorize import FactorizeConfig, factorize_
from leanrank.compress.recover import RecoverConfig, recover_by_distillation
from leanrank.compress.transfer import TransferConfig, load_transfer
from leanrank.core.errors import LeanrankError


def kl_to_parent(parent, model, lists) -> float:
    from leanrank.compress.distill_losses import listwise_kl

    s = [torch.tensor(model.score([c.query] * len(c.titles), c.titles)) for c in lists]
    t = [torch.tensor(parent.score([c.query] * len(c.titles), c.titles)) for c in lists]
    return float(np.mean([listwise_kl(a[None], b[None]).item() for a, b in zip(s, t)]))


def test_recovery_brings_a_factorized_model_back_to_its_parent(tiny_cross_encoder, tiny_search, tmp_path, one_thread):
    parent = tiny_cross_encoder(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():
        parent.model.classifier.weight.mul_(300)         # a parent with a real spread of scores
    model = copy.deepcopy(parent)
    factorize_(model, FactorizeConfig(param_ratio=0.25, min_rank=2))
    train = tiny_search["train"]
    config = RecoverConfig(steps=60, lr=2e-3, transfer_queries=30, dense=False, evals=1, list_size=4)
    logs: list[str] = []
    record = recover_by_distillation(parent, model, train, tmp_path / "transfer", tmp_path / "run", config,
                                     progress=False, log=logs.append)
    lists = load_transfer(tmp_path / "transfer", train.titles).lists
    assert len(lists) == 30 and record["steps"] == 60
    factorized = copy.deepcopy(parent)
    factorize_(factorized, FactorizeConfig(param_ratio=0.25, min_rank=2))
    before, after = kl_to_parent(parent, factorized, lists), kl_to_parent(parent, model, lists)
    assert after < 0.7 * before, (before, after)
    assert model.card.steps[-1]["step"] == "distill"

    # a second model of the same parent reuses the cached scores: nothing is scored again
    logs.clear()
    recover_by_distillation(parent, factorized, train, tmp_path / "transfer", tmp_path / "run2",
                            RecoverConfig(steps=2, transfer_queries=30, dense=False, list_size=4), progress=False,
                            log=logs.append)
    assert any("30 of 30 queries already scored" in line for line in logs), logs


def test_cached_scores_of_another_parent_are_refused(tiny_cross_encoder, tiny_search, tmp_path, one_thread):
    train = tiny_search["train"]
    config = RecoverConfig(steps=1, transfer_queries=5, dense=False, list_size=2)
    recover_by_distillation(tiny_cross_encoder(seed=1), tiny_cross_encoder(seed=1), train, tmp_path / "t",
                            tmp_path / "r", config, progress=False, log=lambda *_: None)
    with pytest.raises(LeanrankError, match="another teacher"):
        recover_by_distillation(tiny_cross_encoder(seed=2), tiny_cross_encoder(seed=2), train, tmp_path / "t",
                                tmp_path / "r2", config, progress=False, log=lambda *_: None)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=0.0), dict(transfer_queries=0), dict(evals=0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(LeanrankError):
        RecoverConfig(**bad)
    assert TransferConfig(max_queries=RecoverConfig().transfer_queries).max_queries == 2000
