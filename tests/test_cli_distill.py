"""``leanrank distill`` end to end in subprocesses (synthetic data, tiny teacher)."""

from __future__ import annotations

import json

import pytest
from test_cli_train_eval import assert_one_line_error, run


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, max_position_embeddings=64))
    return model.save(tmp_path_factory.mktemp("cld") / "teacher")


def test_two_stage_recipe_with_flags_and_resume(teacher_dir):
    out = teacher_dir.parent / "run"
    recipe = teacher_dir.parent / "distill.yaml"
    recipe.write_text("stages:\n  - {student: {num_layers: 1}}\n  - {student: {num_layers: 1, hidden_size: 16}}\n"
                      "distill: {steps: 4, list_size: 4, queries_per_batch: 2, hidden: 1.0}\n"
                      "transfer: {max_queries: 12, bm25: 6}\n")
    proc = run("distill", str(teacher_dir), "--out", str(out), "--config", str(recipe), "--dense", "0",
               "--losses", "listwise=1,margin_mse=0.5", "--valid-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stage 2/2" in proc.stdout and "best validation NDCG@10" in proc.stdout
    card = json.loads((out / "model" / "leanrank.json").read_text())
    distills = [s for s in card["steps"] if s["step"] == "distill"]
    assert len(distills) == 2
    assert distills[0]["config"]["margin_mse"] == 0.5 and distills[0]["config"]["hidden"] == 1.0
    assert distills[1]["config"]["teacher_scores"] == "online"
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (1, 16)
    assert len((out / "transfer" / "transfer.jsonl").read_text().splitlines()) == 12
    again = run("distill", str(teacher_dir), "--out", str(out), "--config", str(recipe), "--dense", "0")
    assert_one_line_error(again, "exists", "--overwrite")
    proc = run("eval", str(out / "model"), "--dataset", "synthetic", "--split", "valid", "--max-queries", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("yaml_text, flags, words", [
    ("student: {num_layer: 2}\n", [], ["'num_layer'", "num_layers"]),
    ("teacher: x\n", [], ["unknown section", "'teacher'"]),
    ("student: {num_layers: 1}\n", ["--losses", "ranknet=1"], ["ranknet", "listwise"]),
    ("student: {hidden_size: 20}\n", [], ["multiple of 16"]),
])
def test_bad_recipes_are_one_line_before_any_work(teacher_dir, tmp_path, yaml_text, flags, words):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml_text)
    proc = run("distill", str(teacher_dir), "--out", str(tmp_path / "o"), "--config", str(recipe), *flags)
    assert_one_line_error(proc, *words)
    assert not (tmp_path / "o" / "transfer").exists()


@pytest.mark.parametrize("name", ["distill-homedepot.yaml", "distill-two-stage.yaml"])
def test_shipped_recipes_validate(name):
    from pathlib import Path

    from leanrank.cli_distill import plan, read_config

    stages, transfer = plan(read_config(Path(__file__).resolve().parents[1] / "recipes" / name), {}, {}, {})
    assert stages[-1][0].hidden_size == 256 and stages[-1][1].steps == 2400
    assert transfer.max_queries == 3000


def test_served_student_config_validates():
    from pathlib import Path

    from leanrank.cli_distill import plan, read_config

    path = Path(__file__).resolve().parents[1] / "recipes" / "distill-2x128.yaml"
    stages, transfer = plan(read_config(path), {}, {}, {})
    assert (stages[-1][0].num_layers, stages[-1][0].hidden_size, stages[-1][0].intermediate_size) == (2, 128, 512)
    assert stages[-1][1].steps == 3000 and transfer.max_queries == 2000
