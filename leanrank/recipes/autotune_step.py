"""Recipe step kind ``autotune``: an architecture search from ``input`` (``leanrank autotune``); the
step's model is the study's chosen model (``best/``), and ``pareto.json`` stays in the step folder.

    - name: autotune
      kind: autotune
      input: runs/teacher-homedepot/model
      space: {layers: [1, 2, 3], hidden: [384, 256], quant: [fp32, int8]}
      search: {n_trials: 12, finetune_steps: 150}
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leanrank.recipes.steps import StepContext


@dataclass(frozen=True)
class AutotuneStep:
    """``space`` and ``search`` are the sections of ``leanrank autotune --config`` (validated here)."""
    space: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.configs()

    def configs(self):
        from leanrank.compress.search_space import AutotuneConfig, SearchSpace

        plain = json.loads(json.dumps({"space": self.space, "search": self.search}))     # tuples → lists
        return SearchSpace.from_dict(plain["space"]), AutotuneConfig.from_dict(plain["search"])


def autotune(ctx: StepContext, c: AutotuneStep) -> dict:
    from leanrank.compress.search import autotune as run_search
    from leanrank.data.registry import load_search_dataset

    space, config = c.configs()
    splits = load_search_dataset(ctx.dataset, ctx.data_dir).split()
    result = run_search(ctx.input, splits, ctx.work / "study", config, space, log=ctx.log)
    shutil.copytree(result["best"], ctx.model_dir)
    shutil.copy(ctx.work / "study" / "pareto.json", ctx.work / "pareto.json")
    chosen = result["chosen"]
    return {"chosen_trial": chosen["number"], "valid_ndcg@10": chosen["ndcg"], "p50_ms": chosen["p50_ms"],
            "front": len(result["front"]), "dominating_every_reference": len(result["dominating_every_reference"])}
