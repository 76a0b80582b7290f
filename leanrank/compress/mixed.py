"""Mixed precision by measured sensitivity: quantize one block at a time, measure the drop in
a validation metric, then keep the most sensitive blocks in float until a quality budget holds.

Backend-agnostic: ``build(float_blocks)`` returns a scorer with every block quantized except
``float_blocks`` (torch ``quantize_`` with a block filter, or ORT with excluded nodes);
``evaluate(scorer)`` returns validation NDCG@10 (never the test split).

>>> plan = plan_mixed_precision(build, evaluate, ["embeddings", "layer.0", ..., "layer.5"],
...                             baseline=0.512, budget=0.005)
>>> plan.float_blocks, plan.metric
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from leanrank.core.errors import LeanrankError


@dataclass
class MixedPlan:
    baseline: float                      # float model's validation metric
    budget: float                        # largest allowed relative loss (0.005 = 0.5%)
    sensitivity: dict[str, float]        # block → metric with only that block quantized
    float_blocks: list[str]              # the plan: blocks kept in float
    metric: float                        # validation metric of the plan
    meets_budget: bool
    path: list[dict] = field(default_factory=list)   # every plan tried, in order

    def to_dict(self) -> dict:
        return asdict(self)


def within(metric: float, baseline: float, budget: float) -> bool:
    return baseline - metric <= budget * baseline + 1e-12


def plan_mixed_precision(
    build: Callable[[list[str]], object],
    evaluate: Callable[[object], float],
    blocks: Sequence[str],
    baseline: float,
    budget: float = 0.005,
    log: Callable[[str], None] = lambda _m: None,
) -> MixedPlan:
    """Greedy plan: all blocks quantized, then float-back the most sensitive one at a time; the
    first plan within ``budget`` is the one with the fewest float blocks on that path (the
    fastest), not merely a plan that passes."""
    if not 0 <= budget < 1:
        raise LeanrankError(f"budget is a relative loss in [0, 1), got {budget}")
    blocks = list(blocks)
    if not blocks:
        raise LeanrankError("mixed precision needs at least one block")
    sensitivity = {}
    for b in blocks:
        sensitivity[b] = evaluate(build([x for x in blocks if x != b]))
        log(f"only {b} quantized: {sensitivity[b]:.4f} (float {baseline:.4f})")
    order = sorted(blocks, key=lambda b: sensitivity[b])        # lowest metric = most sensitive
    path = []
    for n_float in range(len(blocks) + 1):
        float_blocks = order[:n_float]
        metric = baseline if n_float == len(blocks) else evaluate(build(float_blocks))
        path.append({"float_blocks": float_blocks, "metric": metric})
        log(f"float {float_blocks or 'none'}: {metric:.4f}")
        if within(metric, baseline, budget):
            return MixedPlan(baseline, budget, sensitivity, float_blocks, metric,
                             n_float < len(blocks), path)
    raise AssertionError("unreachable: the all-float plan always meets the budget")
