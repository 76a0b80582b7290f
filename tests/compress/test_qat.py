"""QAT: fake-quant layers train with fit, learn activation ranges, convert to real int8."""

import numpy as np
import pytest
import torch

from leanrank.compress.qat import FakeQuantLinear, convert_qat_, prepare_qat_
from leanrank.compress.qmodules import StaticInt8Linear
from leanrank.core.errors import LeanrankError
from leanrank.runtime.loading import load_scorer
from leanrank.runtime.parity import spearman
from leanrank.train.examples import build_examples
from leanrank.train.fit import TrainConfig, fit


def test_qat_trains_converts_and_reloads(tiny_cross_encoder, tiny_search, tmp_path, one_thread):
    model = tiny_cross_encoder(seed=2, initializer_range=0.2)
    with pytest.raises(LeanrankError, match="prepare_qat_"):
        convert_qat_(model)
    names = prepare_qat_(model)
    assert names and all(isinstance(model.get_submodule(n), FakeQuantLinear) for n in names)
    fq = model.get_submodule(names[0])
    with pytest.raises(LeanrankError, match="never saw"):
        convert_qat_(model)
    examples = build_examples(tiny_search["train"], seed=0)[:160]
    record = fit(model, examples, TrainConfig(max_steps=5, batch_size=16, lr=1e-4, log_every=1), tmp_path / "run",
                 progress=False)
    assert record["steps"] == 5 and int(fq.seen) == 5
    lo, hi = fq.act_range[0].tolist()
    assert lo < 0 < hi                             # learned a real input range
    q = [e.query for e in examples[:40]]
    t = [e.title for e in examples[:40]]
    fake = model.score(q, t)
    report = convert_qat_(model)
    assert all(isinstance(model.get_submodule(n), StaticInt8Linear) for n in report.swapped)
    real = model.score(q, t)
    assert spearman(fake, real) > 0.9             # the int8 model computes what QAT simulated
    model.save(tmp_path / "qat")
    np.testing.assert_allclose(load_scorer(tmp_path / "qat").score(q, t), real, atol=1e-5)
    assert torch.isfinite(torch.tensor(real)).all()
