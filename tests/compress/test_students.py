"""make_student: slices of the teacher, stock-loadable, the right units kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leanrank.compress.students import StudentConfig, make_student
from leanrank.core.errors import LeanrankError
from leanrank.models.structure import encoder_layers

Q = ["cordless drill", "paint roller", "led bulb 60w", "garden hose"]
T = ["dewalt 20v drill kit", "wooster roller cover", "philips 60w led", "flexzilla hose 50 ft"]
WIDE = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=4,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_full_shape_student_scores_like_the_teacher(tiny_cross_encoder):
    teacher = tiny_cross_encoder(**WIDE)
    student = make_student(teacher, StudentConfig(num_layers=None))
    np.testing.assert_allclose(student.score(Q, T), teacher.score(Q, T), atol=1e-5)
    assert student.card.steps[-1]["step"] == "student"


def test_narrow_student_has_the_asked_shape_and_reloads_with_stock_transformers(tiny_cross_encoder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = tiny_cross_encoder(**WIDE)
    student = make_student(teacher, StudentConfig(num_layers=2, hidden_size=32, intermediate_size=48))
    cfg = student.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 32, 2, 48)
    layer = encoder_layers(student.model)[0]
    assert layer.attention.self.query.weight.shape == (32, 32)
    assert layer.intermediate.dense.weight.shape == (48, 32)
    assert student.card.steps[-1]["kept_layers"] == [0, 3]   # first and last
    folder = student.save(tmp_path / "s")
    stock = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    feats = student.tokenize(Q, T)
    with torch.no_grad():
        np.testing.assert_allclose(stock(**feats).logits.squeeze(-1).numpy(), student.score(Q, T), atol=1e-5)
    assert sum(p.numel() for p in student.model.parameters()) < sum(p.numel() for p in teacher.model.parameters())


def test_outlier_dimension_and_strong_head_are_kept(tiny_cross_encoder):
    teacher = tiny_cross_encoder(**WIDE)
    with torch.no_grad():
        for m in teacher.model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight[63] = 20.0                               # an "outlier" hidden dimension
        q = encoder_layers(teacher.model)[3].attention.self.query
        q.weight[48:64] *= 50                                     # head 3 of the last layer is big
    student = make_student(teacher, StudentConfig(num_layers=1, hidden_size=16, num_heads=1))
    ln = student.model.bert.embeddings.LayerNorm.weight
    assert ln.max().item() == pytest.approx(20.0)
    kept = student.model.bert.encoder.layer[0].attention.self.query.weight
    assert kept.abs().mean() > 10 * encoder_layers(teacher.model)[3].attention.self.query.weight[:48].abs().mean()


@pytest.mark.parametrize("bad, match", [
    ({"hidden_size": 40}, "multiple of 16"), ({"hidden_size": 128}, "wider"), ({"num_layers": 0}, ">= 1"),
    ({"intermediate_size": 256}, "wider"), ({"layer_pick": "random"}, "layer_pick"),
])
def test_bad_student_shapes_are_refused(tiny_cross_encoder, bad, match):
    teacher = tiny_cross_encoder(**WIDE)
    with pytest.raises(LeanrankError, match=match):
        make_student(teacher, StudentConfig(**bad))
