import numpy as np
import pytest
import torch

from leanrank.core.errors import LeanrankError
from leanrank.train.calibrate import fit_calibration

torch.set_num_threads(1)


def test_calibration_recovers_a_known_map_and_lowers_rmse():
    rng = np.random.default_rng(0)
    logits = rng.normal(-1.5, 1.0, 2000)
    labels = 1 + 2 / (1 + np.exp(-(0.7 * logits + 2.0))) + rng.normal(0, 0.05, 2000)
    cal = fit_calibration(logits, labels, 1.0, 3.0, iters=1500)
    assert cal["a"] == pytest.approx(0.7, abs=0.05)
    assert cal["b"] == pytest.approx(2.0, abs=0.1)
    assert cal["rmse_after"] < 0.06 < cal["rmse_before"]


def test_calibration_keeps_the_ranking(tiny_cross_encoder):
    ce = tiny_cross_encoder()
    ce.card.calibration = {"a": 0.5, "b": 1.0}
    logits = np.array([-2.0, 0.1, 3.0, -0.5])
    pred = ce.predict_labels(logits)
    assert list(np.argsort(pred)) == list(np.argsort(logits))
    assert ((pred >= 1) & (pred <= 3)).all()


def test_calibration_needs_data():
    with pytest.raises(LeanrankError, match="at least 10"):
        fit_calibration(np.zeros(3), np.ones(3), 1.0, 3.0)


def test_layer_pick_first_keeps_bottom_layers(tiny_cross_encoder):
    from leanrank.models.cross_encoder import keep_layers

    ce = tiny_cross_encoder(num_hidden_layers=4)
    first = ce.model.bert.encoder.layer[0]
    assert keep_layers(ce.model, 2, "first") == [0, 1]
    assert ce.model.bert.encoder.layer[0] is first and ce.model.config.num_hidden_layers == 2
    with pytest.raises(LeanrankError, match="layer pick"):
        keep_layers(ce.model, 1, "middle")


def test_isotonic_matches_sklearn_and_keeps_the_order():
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    from leanrank.models.card import ModelCard
    from leanrank.train.calibrate import fit_calibration

    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = np.clip(2 + 0.4 * x + 0.5 * rng.normal(size=400), 1, 3)
    x[:40] = x[40:80]                                  # ties in the logits, as sklearn sees them too
    iso = fit_calibration(x, y, 1.0, 3.0, method="isotonic")
    ref = IsotonicRegression(y_min=1, y_max=3, out_of_bounds="clip").fit(x, y)
    card = ModelCard(kind="cross-encoder", label_range=(1.0, 3.0), calibration=iso)
    grid = np.linspace(-4, 4, 301)
    np.testing.assert_allclose(card.predict_labels(grid), ref.predict(grid), atol=1e-9)
    assert np.all(np.diff(card.predict_labels(grid)) >= 0)            # monotone: rankings unchanged
    platt = fit_calibration(x, y, 1.0, 3.0)
    assert platt["method"] == "platt" and iso["rmse_after"] < platt["rmse_after"] < iso["rmse_before"]


def test_unknown_calibration_method_raises():
    import numpy as np
    import pytest

    from leanrank.core.errors import LeanrankError
    from leanrank.train.calibrate import fit_calibration

    with pytest.raises(LeanrankError, match="calibration method"):
        fit_calibration(np.arange(20.0), np.ones(20), 1.0, 3.0, method="spline")
