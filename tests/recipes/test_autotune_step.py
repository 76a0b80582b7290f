"""The recipe's `autotune` step: validated before any work, the study's chosen model becomes the step's model."""

from __future__ import annotations

import json
import shutil

import pytest

from leanrank.core.errors import LeanrankError
from leanrank.recipes.engine import run_recipe
from leanrank.recipes.schema import load_recipe


def test_bad_space_or_search_key_fails_before_any_work(tmp_path):
    base = {"name": "r", "dataset": "synthetic", "out": str(tmp_path / "out")}
    with pytest.raises(LeanrankError, match="layerz"):
        load_recipe({**base, "steps": [{"name": "a", "kind": "autotune", "input": str(tmp_path),
                                        "space": {"layerz": [1]}}]})
    with pytest.raises(LeanrankError, match="sampler"):
        load_recipe({**base, "steps": [{"name": "a", "kind": "autotune", "input": str(tmp_path),
                                        "search": {"sampler": "grid"}}]})
    assert not (tmp_path / "out").exists()


def test_autotune_step_publishes_the_chosen_model(tiny_cross_encoder, tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    tiny_cross_encoder().save(teacher)
    seen = {}

    def fake_autotune(teacher_dir, splits, out_dir, config, space, log=print):
        seen.update(teacher=str(teacher_dir), trials=config.n_trials, layers=space.layers, out=str(out_dir))
        out_dir.mkdir(parents=True)
        shutil.copytree(teacher, out_dir / "best")
        (out_dir / "pareto.json").write_text(json.dumps({"front": [1]}))
        return {"best": str(out_dir / "best"), "front": [{"number": 3}], "dominating_every_reference": [],
                "chosen": {"number": 3, "ndcg": 0.5, "p50_ms": 12.0}}

    monkeypatch.setattr("leanrank.compress.search.autotune", fake_autotune)
    recipe = {"name": "r", "dataset": "synthetic", "out": str(tmp_path / "out"), "steps": [
        {"name": "at", "kind": "autotune", "input": str(teacher), "space": {"layers": [1, 2]},
         "search": {"n_trials": 4}}]}
    run = run_recipe(recipe, log=lambda _m: None)
    step = tmp_path / "out" / "at"
    assert seen["trials"] == 4 and tuple(seen["layers"]) == (1, 2) and seen["teacher"] == str(teacher)
    assert run["steps"][0]["status"] == "done" and run["steps"][0]["summary"]["chosen_trial"] == 3
    card = json.loads((step / "model" / "leanrank.json").read_text())
    assert card["parent"] == str(teacher) and card["steps"][-1]["kind"] == "autotune"
    assert json.loads((step / "pareto.json").read_text()) == {"front": [1]}
