"""The mixed-precision planner: measured sensitivities drive which blocks stay float."""

import pytest

from leanrank.compress.mixed import plan_mixed_precision, within
from leanrank.core.errors import LeanrankError

# a fake model whose validation metric drops by a fixed amount per quantized block
DROP = {"embeddings": 0.001, "layer.0": 0.010, "layer.1": 0.0005, "layer.2": 0.004}
BASE = 0.5


def build(float_blocks):
    return [b for b in DROP if b not in float_blocks]          # the quantized blocks


def evaluate(quantized_blocks):
    return BASE - sum(DROP[b] for b in quantized_blocks)


def test_plan_keeps_the_most_sensitive_blocks_float():
    plan = plan_mixed_precision(build, evaluate, list(DROP), BASE, budget=0.005)   # ≤ 0.0025 absolute
    assert plan.sensitivity["layer.0"] == pytest.approx(0.49)
    assert plan.float_blocks == ["layer.0", "layer.2"]
    assert plan.meets_budget and within(plan.metric, BASE, 0.005)
    assert [len(p["float_blocks"]) for p in plan.path] == [0, 1, 2]


def test_generous_budget_quantizes_everything_and_zero_budget_nothing():
    assert plan_mixed_precision(build, evaluate, list(DROP), BASE, budget=0.5).float_blocks == []
    strict = plan_mixed_precision(build, evaluate, list(DROP), BASE, budget=0.0)
    assert sorted(strict.float_blocks) == sorted(DROP) and not strict.meets_budget


def test_bad_inputs():
    with pytest.raises(LeanrankError, match="budget"):
        plan_mixed_precision(build, evaluate, list(DROP), BASE, budget=1.5)
    with pytest.raises(LeanrankError, match="block"):
        plan_mixed_precision(build, evaluate, [], BASE)
