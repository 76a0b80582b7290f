"""``leanrank run``: recipe validation before any work, a tiny synthetic recipe end to end (lineage,
bench inputs), resume, ``--from``, changed configs and failed steps."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from leanrank.core.errors import LeanrankError
from leanrank.recipes import engine
from leanrank.recipes.engine import run_recipe
from leanrank.recipes.schema import load_recipe
from leanrank.recipes.steps import KINDS, Kind

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, one_thread) -> Path:
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, max_position_embeddings=64,
                                                initializer_range=0.2))
    return model.save(tmp_path_factory.mktemp("recipe") / "teacher")


def tiny_recipe(out: Path, teacher: Path, **changes) -> dict:
    """teacher (a folder) → pruned → onnx → int8 (ORT) → bench; ``changes`` update a step by name."""
    steps = [{"name": "pruned", "kind": "prune", "input": str(teacher), "amount": 0.5, "valid_queries": 3},
             {"name": "onnx", "kind": "export", "parity_size": 32},
             {"name": "int8", "kind": "quantize", "scheme": "ort-int8-dynamic", "min_spearman": 0.0},
             {"name": "bench", "kind": "bench", "peers": False, "max_queries": 5, "repeats": 1}]
    for step in steps:
        step.update(changes.get(step["name"], {}))
    return {"name": "tiny", "dataset": "synthetic", "out": str(out), "steps": steps}


class Calls:
    """Every step function call by kind, and the bench runner's arguments."""

    def __init__(self, monkeypatch):
        self.kinds: Counter = Counter()
        self.bench: list[dict] = []
        for name, kind in list(KINDS.items()):
            monkeypatch.setitem(KINDS, name, dataclasses.replace(kind, run=self._counting(name, kind.run)))
        monkeypatch.setattr("leanrank.bench.runner.bench_models", self._bench, raising=False)

    def _counting(self, name, run):
        def wrapped(ctx, config):
            self.kinds[name] += 1
            return run(ctx, config)
        return wrapped

    def _bench(self, models, *, out_dir, **kwargs):
        self.bench.append({"models": list(models), "out_dir": Path(out_dir), **kwargs})
        (Path(out_dir) / "results.json").write_text("{}")
        return {"bars": {"best_peer": None}}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, teacher_dir):
    out = tmp_path_factory.mktemp("first") / "out"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        calls = Calls(mp)
        run = run_recipe(tiny_recipe(out, teacher_dir), log=lines.append)
    return out, run, calls, lines


@pytest.fixture
def copy_of_first(first_run, tmp_path) -> Path:
    shutil.copytree(first_run[0], tmp_path / "out")
    return tmp_path / "out"


def card(folder: Path) -> dict:
    return json.loads((folder / "model" / "leanrank.json").read_text())


def run_ids(out: Path) -> dict:
    return {s: json.loads((out / s / "step.json").read_text())["run_id"] for s in ("pruned", "onnx", "int8", "bench")}


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("change, words", [
    ({"pruned": {"amout": 0.3}}, ["step 'pruned' (prune)", "'amout'", "amount", "criterion", "input"]),
    ({"pruned": {"amount": "half"}}, ["step 'pruned'", "amount must be a number", "'half'"]),
    ({"pruned": {"criterion": "luck"}}, ["step 'pruned'", "criterion", "magnitude, taylor, activation"]),
    ({"onnx": {"kind": "exprot"}}, ["step 'onnx'", "unknown kind 'exprot'", "prune", "export", "bench", "train_rec"]),
    ({"onnx": {"input": "nosuch"}}, ["step 'onnx'", "'nosuch'", "neither an earlier step (pruned)"]),
    ({"onnx": {"input": "int8"}}, ["step 'onnx'", "'int8' does not come before"]),
    ({"int8": {"input": "pruned"}}, ["step 'int8'", "ort-int8-dynamic", "export step before it"]),
    ({"bench": {"models": ["pruned", "bench"]}}, ["step 'bench'", "models", "'bench'"]),
    ({"bench": {"peers": ["ort-dynamic", "tensorrt"]}}, ["step 'bench'", "peers", "'tensorrt'", "torch-dynamic"]),
])
def test_bad_recipe_fails_before_any_work(tmp_path, teacher_dir, monkeypatch, change, words):
    calls = Calls(monkeypatch)
    with pytest.raises(LeanrankError) as err:
        run_recipe(tiny_recipe(tmp_path / "out", teacher_dir, **change), log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not calls.kinds and not (tmp_path / "out").exists()


def test_recipe_level_errors(tmp_path, teacher_dir):
    good = tiny_recipe(tmp_path / "out", teacher_dir)
    with pytest.raises(LeanrankError, match="unknown recipe key 'stpes'; allowed: name, dataset"):
        load_recipe({**good, "stpes": []})
    with pytest.raises(LeanrankError, match="used twice"):
        load_recipe({**good, "steps": good["steps"] + [good["steps"][1]]})
    with pytest.raises(LeanrankError, match="not a search dataset"):
        load_recipe({**good, "dataset": "beauty"})
    with pytest.raises(LeanrankError, match="needs an input"):
        load_recipe({**good, "steps": [{"name": "p", "kind": "prune"}]})
    with pytest.raises(LeanrankError, match="unknown train option 'lrr'; allowed: .*lr"):
        load_recipe({**good, "steps": [{"name": "t", "kind": "train", "train": {"lrr": 1}}]})
    (tmp_path / "bad.yaml").write_text("steps: [\n")
    with pytest.raises(LeanrankError, match="bad.yaml: not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    recipe = load_recipe({**good, "steps": [{"name": "t", "kind": "train", "train": {"lr": "3e-5"}}]})
    assert recipe.steps[0].config.configs(None)[0].lr == 3e-5     # YAML's 3e-5 is a string; read as a number


# ------------------------------------------------------------------------------ a recipe end to end
def test_each_step_writes_a_model_with_its_lineage(first_run, teacher_dir):
    out, run, calls, lines = first_run
    assert [s["status"] for s in run["steps"]] == ["done"] * 4
    assert calls.kinds == {"prune": 1, "export": 1, "quantize": 1, "bench": 1}
    parents = {s: card(out / s)["parent"] for s in ("pruned", "onnx", "int8")}
    assert parents == {"pruned": str(teacher_dir), "onnx": str(out / "pruned" / "model"),
                       "int8": str(out / "onnx" / "model")}
    steps = card(out / "int8")["steps"]
    assert [s["step"] for s in steps] == ["prune", "recipe", "export", "recipe", "quantize", "recipe"]
    recipe_steps = [s for s in steps if s["step"] == "recipe"]
    assert [s["recipe_step"] for s in recipe_steps] == ["pruned", "onnx", "int8"]
    assert {s["recipe"] for s in recipe_steps} == {"tiny"}
    assert len({s["recipe_hash"] for s in recipe_steps}) == 1
    assert recipe_steps[-1]["config"]["scheme"] == "ort-int8-dynamic"
    assert (out / "int8" / "model" / "model.onnx").is_file()
    record = json.loads((out / "recipe-run.json").read_text())
    assert [(s["name"], s["status"]) for s in record["steps"]] == [(n, "done") for n in ("pruned", "onnx", "int8",
                                                                                         "bench")]
    assert all(s["seconds"] is not None and s["output"] == str(out / s["name"]) for s in record["steps"])
    assert not list(out.glob(".*"))                       # no partial folder left behind
    assert any(line.startswith("[4/4] bench (bench): done") for line in lines)


def test_bench_step_gets_every_earlier_model_and_the_teacher(first_run, teacher_dir):
    out, _, calls, _ = first_run
    (call,) = calls.bench
    assert call["models"] == [out / "pruned" / "model", out / "onnx" / "model", out / "int8" / "model"]
    assert call["teacher"] == teacher_dir and call["dataset"] == "synthetic"
    assert call["peers"] is False and call["max_queries"] == 5 and call["repeats"] == 1
    assert (out / "bench" / "results.json").is_file() and (out / "bench" / "step.json").is_file()


def test_bench_models_and_teacher_can_be_named(tmp_path, teacher_dir, monkeypatch):
    recipe = load_recipe(tiny_recipe(tmp_path / "out", teacher_dir, bench={"models": ["int8"], "teacher": "pruned"}))
    ctx = engine._context(recipe, recipe.steps[-1], tmp_path / "w", False, print)
    ctx.work.mkdir()
    calls = Calls(monkeypatch)
    KINDS["bench"].run(ctx, recipe.steps[-1].config)
    assert calls.bench[0]["models"] == [tmp_path / "out" / "int8" / "model"]
    assert calls.bench[0]["teacher"] == tmp_path / "out" / "pruned" / "model"


def test_second_run_skips_every_finished_step(first_run, copy_of_first, teacher_dir, monkeypatch):
    before = run_ids(copy_of_first)
    mtime = (copy_of_first / "pruned" / "model" / "leanrank.json").stat().st_mtime_ns
    calls, lines = Calls(monkeypatch), []
    run = run_recipe(tiny_recipe(copy_of_first, teacher_dir), log=lines.append)
    assert not calls.kinds and run_ids(copy_of_first) == before
    assert (copy_of_first / "pruned" / "model" / "leanrank.json").stat().st_mtime_ns == mtime
    assert [s["status"] for s in run["steps"]] == ["skipped"] * 4
    assert sum("finished earlier" in line and "skipped" in line for line in lines) == 4


def test_from_step_reruns_that_step_and_the_ones_after(copy_of_first, teacher_dir, monkeypatch):
    before = run_ids(copy_of_first)
    calls = Calls(monkeypatch)
    run = run_recipe(tiny_recipe(copy_of_first, teacher_dir), from_step="int8", log=lambda _: None)
    assert calls.kinds == {"quantize": 1, "bench": 1}
    after = run_ids(copy_of_first)
    assert after["pruned"] == before["pruned"] and after["onnx"] == before["onnx"]
    assert after["int8"] != before["int8"] and after["bench"] != before["bench"]
    assert [s["status"] for s in run["steps"]] == ["skipped", "skipped", "done", "done"]
    with pytest.raises(LeanrankError, match="no step 'nope'; steps: pruned, onnx, int8, bench"):
        run_recipe(tiny_recipe(copy_of_first, teacher_dir), from_step="nope")


def test_changed_config_reruns_that_step_and_everything_after(copy_of_first, teacher_dir, monkeypatch):
    calls = Calls(monkeypatch)
    changed = tiny_recipe(copy_of_first, teacher_dir, int8={"min_spearman": 0.1})
    plan = run_recipe(changed, dry_run=True, log=lambda _: None)
    assert [s["status"] for s in plan["steps"]] == ["skipped", "skipped", "would run", "would run"]
    assert not calls.kinds
    run_recipe(changed, log=lambda _: None)
    assert calls.kinds == {"quantize": 1, "bench": 1}
    assert card(copy_of_first / "int8")["steps"][-1]["config"]["min_spearman"] == 0.1
    run_recipe(changed, log=lambda _: None)                 # and now it is finished
    assert calls.kinds == {"quantize": 1, "bench": 1}


def test_failed_step_is_not_marked_done_and_is_redone(tmp_path, teacher_dir, monkeypatch):
    recipe = tiny_recipe(tmp_path / "out", teacher_dir)
    recipe["steps"] = recipe["steps"][:1]
    prune = KINDS["prune"]

    def half_then_fail(ctx, config):
        ctx.model_dir.mkdir(parents=True)
        (ctx.model_dir / "leanrank.json").write_text("{}")
        raise RuntimeError("killed mid-step")

    monkeypatch.setitem(KINDS, "prune", dataclasses.replace(prune, run=half_then_fail))
    with pytest.raises(RuntimeError, match="killed mid-step"):
        run_recipe(recipe, log=lambda _: None)
    out = tmp_path / "out"
    assert not (out / "pruned").exists()
    assert not list(out.rglob("step.json"))
    record = json.loads((out / "recipe-run.json").read_text())
    assert record["steps"][0]["status"] == "failed" and record["steps"][0]["error"] == "killed mid-step"
    monkeypatch.setitem(KINDS, "prune", prune)
    run = run_recipe(recipe, log=lambda _: None)
    assert run["steps"][0]["status"] == "done" and (out / "pruned" / "step.json").is_file()
    assert card(out / "pruned")["steps"][0]["step"] == "prune"
    assert not (out / ".pruned.partial").exists()


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    value: int = 0


def test_failed_training_step_continues_its_partial_folder(tmp_path, monkeypatch):
    seen = []

    def fake_train(ctx, config):
        seen.append(ctx.resume)
        (ctx.work / "checkpoint").mkdir(exist_ok=True)
        if len(seen) == 1:
            raise KeyboardInterrupt
        ctx.model_dir.mkdir()
        (ctx.model_dir / "leanrank.json").write_text(json.dumps({"kind": "cross-encoder", "parent": "scratch"}))
        (ctx.model_dir / "config.json").write_text("{}")
        return {"value": config.value}

    monkeypatch.setitem(KINDS, "fake", Kind(FakeConfig, fake_train, input="optional", resumable=True))
    recipe = {"name": "fake", "dataset": "synthetic", "out": str(tmp_path / "out"),
              "steps": [{"name": "t", "kind": "fake", "value": 1}]}
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, log=lambda _: None)
    run_recipe(recipe, log=lambda _: None)
    assert seen == [False, True]                            # the same key: continue the attempt
    recipe["steps"][0]["value"] = 2
    run_recipe(recipe, log=lambda _: None)
    assert seen == [False, True, False]                     # a new config starts afresh
    assert card(tmp_path / "out" / "t")["parent"] == "scratch"
    assert card(tmp_path / "out" / "t")["steps"][-1]["config"] == {"value": 2}


# ------------------------------------------------------------------------------ the command line
def test_cli_bad_recipe_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from leanrank.cli import main

    path = tmp_path / "r.yaml"
    path.write_text("dataset: synthetic\nsteps:\n  - {name: t, kind: train, train: {max_stpes: 3}}\n")
    monkeypatch.setattr(sys, "argv", ["leanrank", "run", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "step 't' (train)" in err and "'max_stpes'" in err and "max_steps" in err


def test_cli_dry_run_prints_the_plan(first_run, copy_of_first, teacher_dir, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from leanrank.cli import app

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(copy_of_first, teacher_dir, int8={"min_spearman": 0.2})))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[1/4] pruned (prune): finished earlier" in result.output
    assert "[3/4] int8 (quantize): would run" in result.output and "config changed" in result.output
    assert "would run" in result.output and "skipped" in result.output      # the summary table
    result = CliRunner().invoke(app, ["run", str(path), "--from", "nope"])
    assert isinstance(result.exception, LeanrankError)


# ------------------------------------------------------------------------------ recommendation
def test_rec_recipe_teacher_item_table_student_bench(tmp_path, one_thread):
    fast = {"max_steps": 3, "epochs": 1, "valid_users": 20}
    recipe = {"name": "rec", "dataset": "synthetic", "out": str(tmp_path / "out"), "steps": [
        {"name": "teacher", "kind": "train_rec", "model": {"hidden": 16, "layers": 1, "heads": 2}, "train": fast},
        {"name": "teacher-int8", "kind": "item_table", "table": "int8"},
        {"name": "student", "kind": "distill_rec", "input": "teacher", "student": {"hidden": 8, "layers": 1},
         "train": fast},
        {"name": "folded", "kind": "distill_rec", "input": "teacher", "init": "fold", "student": {"keep": [0]},
         "train": fast},
        {"name": "bench", "kind": "bench_rec"}]}
    run_recipe(recipe, log=lambda _: None)
    out = tmp_path / "out"
    assert card(out / "teacher-int8")["parent"] == str(out / "teacher" / "model")
    assert [s["step"] for s in card(out / "teacher-int8")["steps"]] == ["train", "recipe", "item_table", "recipe"]
    assert card(out / "student")["parent"] == str(out / "teacher" / "model")
    rows = json.loads((out / "bench" / "results.json").read_text())["rows"]
    assert [(r["name"], r["role"]) for r in rows] == [
        ("teacher-fp32", "teacher"), ("peer-torch-quantize_dynamic", "peer"), ("peer-bf16-autocast", "peer"),
        ("teacher-int8", "variant"), ("student", "variant"), ("folded", "variant")]
    by = {r["name"]: r for r in rows}
    assert by["teacher-int8"]["size_mb"] < by["teacher-fp32"]["size_mb"] > by["student"]["size_mb"]
    assert by["student"]["users_per_s"] > 0 and by["student"]["p50_ms"] <= by["student"]["p99_ms"]
    assert by["folded"]["size_mb"] > by["student"]["size_mb"]     # teacher width (16) vs hidden 8
    assert "| teacher-int8 | variant |" in (out / "bench" / "report.md").read_text()
    assert (out / "bench" / "report.html").is_file() and (out / "bench" / "pareto.png").is_file()


def test_rec_step_errors_name_the_key(tmp_path):
    base = {"name": "rec", "dataset": "synthetic", "out": str(tmp_path / "out")}
    cases = [({"name": "t", "kind": "train_rec", "model": {"n_items": 5}}, "model.n_items comes from the dataset"),
             ({"name": "t", "kind": "train_rec", "model": {"hiden": 5}}, "unknown model option 'hiden'; allowed: "),
             ({"name": "t", "kind": "train_rec", "train": {"lr": "fast"}}, "train.lr must be a number, got 'fast'"),
             ({"name": "t", "kind": "item_table", "input": "t0"}, "'t0' is neither an earlier step"),
             ({"name": "t", "kind": "prune", "input": "x", "dataset": "beauty"}, "'beauty' is not a search dataset"),
             ({"name": "t", "kind": "distill_rec", "input": "x", "init": "zip"}, "init 'zip' is not one of pca, fold"),
             ({"name": "t", "kind": "distill_rec", "input": "x", "init": "fold", "student": {"hidden": 8}},
              "unknown student option 'hidden' for init fold; allowed: keep"),
             ({"name": "t", "kind": "distill_rec", "input": "x", "init": "fold", "student": {"keep": 1}},
              "student keep must be a non-empty list")]
    for step, words in cases:
        with pytest.raises(LeanrankError) as err:
            load_recipe({**base, "dataset": step.pop("dataset", "synthetic"), "steps": [step]})
        assert words in str(err.value) and "step 't'" in str(err.value), str(err.value)
    with pytest.raises(LeanrankError, match="needs a seqrec model as input, got a float one"):
        load_recipe({**base, "dataset": "synthetic", "steps": [
            {"name": "t", "kind": "train", "train": {"max_steps": 1}},
            {"name": "q", "kind": "item_table"}]})


def test_a_new_model_in_the_input_folder_reruns_the_steps_reading_it(teacher_dir, tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    recipe = tiny_recipe(tmp_path / "out", teacher)
    recipe["steps"] = recipe["steps"][:1]
    calls = Calls(monkeypatch)
    run_recipe(recipe, log=lambda _: None)
    run_recipe(recipe, log=lambda _: None)
    assert calls.kinds == {"prune": 1}
    retrained = json.loads((teacher / "leanrank.json").read_text())
    retrained["created"] = "later"
    (teacher / "leanrank.json").write_text(json.dumps(retrained))
    lines = []
    run_recipe(recipe, log=lines.append)
    assert calls.kinds == {"prune": 2} and "its input folder changed" in lines[0]
