"""distill: the student moves towards the teacher, every add-on trains, runs resume exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from leanrank.compress.distill import DistillConfig, distill, distill_chain, sample_batch
from leanrank.compress.distill_losses import listwise_kl
from leanrank.compress.students import StudentConfig, make_student
from leanrank.compress.transfer import CandidateList, TransferSet
from leanrank.core.errors import LeanrankError
from leanrank.runtime.parity import spearman

WIDE = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
WORDS = "drill paint roller bulb hose screw vac saw lamp fan tile rug sink tap nail glue".split()


def transfer_set(teacher, n_lists: int = 12, size: int = 10, seed: int = 0) -> TransferSet:
    rng = random.Random(seed)
    lists = []
    for i in range(n_lists):
        q = " ".join(rng.sample(WORDS, 2))
        titles = [" ".join(rng.sample(WORDS, 4)) for _ in range(size)]
        scores = teacher.score([q] * size, titles)
        judged = np.arange(size) < 3
        targets = np.where(judged, rng.random(), 0.0).astype(np.float32)
        lists.append(CandidateList(q, [f"p{i}-{j}" for j in range(size)], titles, targets, judged,
                                   scores.astype(np.float32)))
    return TransferSet(lists, {"teacher": "tiny"})


def mean_kl(student, data: TransferSet) -> float:
    s = torch.tensor(np.stack([student.score([c.query] * len(c.titles), c.titles) for c in data.lists]))
    t = torch.tensor(np.stack([c.teacher for c in data.lists]))
    return listwise_kl(s, t).item()


@pytest.fixture
def teacher(tiny_cross_encoder, one_thread):
    t = tiny_cross_encoder(**WIDE)
    with torch.no_grad():
        t.model.classifier.weight.mul_(20)          # a teacher with a real spread of scores
    return t


def test_listwise_distillation_brings_a_random_student_to_the_teacher(teacher, tiny_cross_encoder, tmp_path):
    data = transfer_set(teacher)
    student = tiny_cross_encoder(seed=5, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                 num_hidden_layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    before = mean_kl(student, data)
    weights = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    record = distill(teacher, student, data, DistillConfig(steps=60, lr=3e-3, queries_per_batch=4, list_size=6),
                     tmp_path / "run", progress=False)
    after = mean_kl(student, data)
    assert after < 0.5 * before, (before, after)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in weights.items())   # teacher untouched
    assert record["steps"] == 60 and record["train_pairs"] == 60 * 24
    assert student.card.steps[-1]["step"] == "distill"


def test_every_add_on_trains_and_projects_when_widths_differ(teacher, tmp_path):
    data = transfer_set(teacher)
    student = make_student(teacher, StudentConfig(num_layers=1, hidden_size=32))
    config = DistillConfig(steps=4, listwise=1, margin_mse=0.5, mse=0.1, soft=0.5, hard=0.5, temperature=2,
                           hidden=1, attention=1, multitask=0.5, curriculum=True, list_size=5, queries_per_batch=3)
    record = distill(teacher, student, data, config, tmp_path / "run", progress=False)
    assert set(record["final_losses"]) == {"listwise", "margin_mse", "mse", "soft", "hard", "hidden",
                                           "attention", "multitask"}
    assert all(np.isfinite(v) and v >= 0 for v in record["final_losses"].values())
    assert record["layer_map"] == [2]
    assert student.model.config._attn_implementation == teacher.model.config._attn_implementation == "sdpa"
    assert (tmp_path / "run" / "run.json").exists()


def test_best_validated_step_is_kept(teacher, tiny_cross_encoder, tmp_path):
    data = transfer_set(teacher)
    student = tiny_cross_encoder(seed=5, **WIDE)
    seen = {}

    def validate(model):
        step = len(seen) + 1
        seen[step] = {k: v.clone() for k, v in model.model.state_dict().items()}
        return {"ndcg@10": 1.0 / step}                       # the first evaluation is the best
    record = distill(teacher, student, data, DistillConfig(steps=6, eval_every=2, lr=1e-2), tmp_path / "r",
                     validate=validate, progress=False)
    assert record["best_step"] == 2 and [h["step"] for h in record["history"]] == [2, 4, 6]
    assert all(torch.equal(v, student.model.state_dict()[k]) for k, v in seen[1].items())


def test_an_interrupted_run_resumes_to_the_same_weights(teacher, tiny_cross_encoder, tmp_path):
    data = transfer_set(teacher)
    config = DistillConfig(steps=8, checkpoint_every=3, lr=1e-3, curriculum=True)
    full = tiny_cross_encoder(seed=5, **WIDE)
    distill(teacher, full, data, config, tmp_path / "a", progress=False)

    class Killed(Exception):
        pass

    def kill(step):
        if step == 7:
            raise Killed
    part = tiny_cross_encoder(seed=5, **WIDE)
    with pytest.raises(Killed):
        distill(teacher, part, data, config, tmp_path / "b", progress=False, on_step=kill)
    resumed = tiny_cross_encoder(seed=99, **WIDE)                 # weights come from the checkpoint
    record = distill(teacher, resumed, data, config, tmp_path / "b", progress=False, resume=True)
    assert record["steps"] == 8
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_curriculum_moves_to_the_teachers_top_candidates():
    teacher = np.arange(20, dtype=np.float32)[::-1].copy()        # candidate 0 is the teacher's best
    c = CandidateList("q", [str(i) for i in range(20)], ["t"] * 20, np.zeros(20, np.float32), np.zeros(20, bool),
                      teacher)
    config = DistillConfig(list_size=4, queries_per_batch=1, curriculum=True)
    rng = random.Random(0)
    late = [max(sample_batch([c], rng, config, 1.0)[0][1]) for _ in range(50)]
    early = [max(sample_batch([c], rng, config, 0.0)[0][1]) for _ in range(50)]
    assert max(late) < 8                                          # only the top 2 × list_size
    assert max(early) >= 15
    plain = DistillConfig(list_size=4, queries_per_batch=1)
    assert max(max(sample_batch([c], rng, plain, 1.0)[0][1]) for _ in range(50)) >= 15


def test_two_stage_chain_ends_with_the_last_shape(teacher, tmp_path):
    data = transfer_set(teacher)
    stages = [(StudentConfig(num_layers=2, hidden_size=48), DistillConfig(steps=3)),
              (StudentConfig(num_layers=1, hidden_size=32), DistillConfig(steps=3))]
    student, records = distill_chain(teacher, stages, data, tmp_path / "chain", progress=False, log=lambda *_: None)
    assert (student.model.config.num_hidden_layers, student.model.config.hidden_size) == (1, 32)
    assert records[1]["config"]["teacher_scores"] == "online"
    steps = [s["step"] for s in student.card.steps]
    assert steps.count("student") == 2 and steps.count("distill") == 2
    a = student.score([c.query for c in data.lists], [c.titles[0] for c in data.lists])
    assert np.isfinite(a).all() and spearman(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("bad, match", [
    ({"listwise": 0}, "at least one score loss"), ({"hidden": -1}, "finite"), ({"temperature": 0}, "temperature"),
    ({"list_size": 1}, "list_size"), ({"teacher_scores": "disk"}, "teacher_scores"), ({"steps": 0}, "steps"),
])
def test_config_is_validated(bad, match):
    with pytest.raises(LeanrankError, match=match):
        DistillConfig(**bad)


def test_from_dict_names_unknown_keys():
    with pytest.raises(LeanrankError, match="'alpha'"):
        DistillConfig.from_dict({"alpha": 0.5})
    assert DistillConfig.from_dict({"layer_map": [1, 2]}).layer_map == (1, 2)


def test_lists_shorter_than_list_size_are_an_error(teacher, tmp_path):
    data = transfer_set(teacher, size=4)
    with pytest.raises(LeanrankError, match="list_size"):
        distill(teacher, make_student(teacher, StudentConfig(num_layers=1)), data, DistillConfig(list_size=8),
                tmp_path / "r", progress=False)
