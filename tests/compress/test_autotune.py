"""autotune: the space is validated, params rebuild their model, the front is non-dominated, studies
resume and prune before fine-tuning, constraints choose or refuse, two workers share one SQLite file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leanrank.compress.search import AutotuneConfig, SearchSpace, autotune, open_study, pareto_front, select
from leanrank.compress.search_space import arch_of, build_float, dominates, quantize_blocks
from leanrank.core.errors import LeanrankError

WIDE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, vocab_size=30522,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
SPACE = {"layers": [1, 2], "hidden": [32, 64], "heads": [2, 4], "ffn": [32, 128], "lowrank": [1.0, 0.5],
         "quant": ["fp32", "int8"], "max_length": [16, 32]}
FAST = dict(sampler="random", valid_queries=8, latency_queries=3, latency_repeats=1, finetune_steps=2,
            queries_per_batch=2, list_size=4, transfer_queries=12, prune_below=0.0, threads=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher(one_thread):
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_config(BertConfig(**WIDE))
    with torch.no_grad():
        model.model.classifier.weight.mul_(20)          # a teacher with a real spread of scores
    return model


@pytest.fixture(scope="module")
def teacher_dir(teacher, tmp_path_factory):
    return teacher.save(tmp_path_factory.mktemp("autotune") / "teacher")


@pytest.mark.parametrize("values, key", [({"hidden": []}, "`hidden`"), ({"quant": ["int3"]}, "`quant`"),
                                         ({"lowrank": [0.0]}, "`lowrank`"), ({"layers": [1, 1]}, "`layers`"),
                                         ({"max_length": [16.5]}, "`max_length`"), ({"layerz": [1]}, "'layerz'"),
                                         ({"layer_pick": "random"}, "`layer_pick`")])
def test_space_errors_name_the_key(values, key):
    with pytest.raises(LeanrankError, match=key):
        SearchSpace.from_dict(values)


@pytest.mark.parametrize("values, key", [({"hidden": [40]}, "`hidden`: 40 is not a multiple of the head size 16"),
                                         ({"layers": [5]}, "`layers`: 5 exceeds the teacher's 4"),
                                         ({"ffn": [256]}, "`ffn`"), ({"max_length": [128]}, "`max_length`")])
def test_space_is_checked_against_the_teacher(teacher, values, key):
    with pytest.raises(LeanrankError, match=key):
        SearchSpace.from_dict(values).resolved(teacher.model.config)


def test_config_errors():
    for bad in ({"sampler": "grid"}, {"valid_queries": 0}, {"prune_below": -1}, {"max_p50_ms": 1, "min_ndcg": 0.5},
                {"trials": 3}):
        with pytest.raises(LeanrankError):
            AutotuneConfig.from_dict(bad)


def test_params_rebuild_the_exact_model_and_it_reloads(teacher, tmp_path):
    from leanrank.compress.qmodules import DynamicInt8Linear
    from leanrank.models.layers import LowRankLinear
    from leanrank.models.structure import encoder_layers, structure_of
    from leanrank.runtime.loading import load_scorer

    space = SearchSpace.from_dict(SPACE).resolved(teacher.model.config)
    params = {"layers": 2, "hidden": 64, "heads": 2, "ffn": 32, "lowrank": 0.5, "max_length": 16,
              "quant_0": "int8", "quant_1": "fp32"}
    arch = arch_of(params, space, head_size=16)
    model = quantize_blocks(build_float(teacher, arch), arch)
    s = structure_of(model.model)
    assert (s["num_layers"], s["heads"], s["intermediate"]) == (2, [2, 2], [32, 32])
    assert model.model.config.hidden_size == 64 and model.max_length == 16
    linears = lambda layer, kind: [m for m in layer.modules() if isinstance(m, kind)]  # noqa: E731
    first, second = encoder_layers(model.model)
    assert linears(first, DynamicInt8Linear) and not linears(first, torch.nn.Linear)
    assert not linears(second, DynamicInt8Linear) and linears(second, LowRankLinear)
    assert type(model.model.classifier) is torch.nn.Linear            # the score head stays float
    # heads above hidden / head size are capped, so the same model has one key
    assert arch_of({**params, "hidden": 32, "heads": 4}, space, 16)["heads"] == 2
    q, t = ["drill bit", "paint"], ["dewalt drill bit set", "white paint 1 gal"]
    again = load_scorer(model.save(tmp_path / "m"))
    np.testing.assert_allclose(again.score(q, t), model.score(q, t), atol=1e-5)


def test_pareto_front_is_non_dominated_and_complete():
    rng = random.Random(0)
    points = [{"number": i, "ndcg": round(rng.random(), 2), "p50_ms": round(rng.uniform(1, 10), 1)} for i in range(60)]
    front = pareto_front(points)
    assert front and all(not dominates(q, p) for p in front for q in points)
    rest = [p for p in points if p not in front]
    assert all(any(dominates(f, p) or (f["ndcg"], f["p50_ms"]) == (p["ndcg"], p["p50_ms"]) for f in front)
               for p in rest)
    assert [p["p50_ms"] for p in front] == sorted(p["p50_ms"] for p in front)


def test_select_under_constraints():
    pts = [{"number": 0, "ndcg": 0.50, "p50_ms": 9.0}, {"number": 1, "ndcg": 0.45, "p50_ms": 4.0},
           {"number": 2, "ndcg": 0.40, "p50_ms": 2.0}, {"number": 3, "ndcg": 0.47, "p50_ms": 6.0}]
    assert select(pts, max_p50_ms=6.0)["number"] == 3
    assert select(pts, max_p50_ms=5.0)["number"] == 1
    assert select(pts, min_ndcg=0.44)["number"] == 1
    assert select(pts)["number"] == 0
    with pytest.raises(LeanrankError, match=r"no trial has p50 <= 1.0 ms \(fastest: trial 2"):
        select(pts, max_p50_ms=1.0)
    with pytest.raises(LeanrankError, match="no trial has NDCG@10 >= 0.9"):
        select(pts, min_ndcg=0.9)


def _finished(out: Path) -> list[dict]:
    data = json.loads((out / "pareto.json").read_text())
    return [t for t in data["trials"] if t["state"] in ("COMPLETE", "PRUNED")]


def test_study_runs_reports_and_resumes(teacher_dir, tiny_search, tmp_path):
    from leanrank.runtime.loading import load_scorer

    out, lines = tmp_path / "run", []
    space = SearchSpace.from_dict(SPACE)
    first = autotune(teacher_dir, tiny_search, out, AutotuneConfig(n_trials=3, **FAST), space, log=lines.append)
    assert len(_finished(out)) == 3 and (out / "study.db").exists()
    complete = [t for t in first["trials"] if t["state"] == "COMPLETE"]
    search = [{**p, "p50_ms": p["p50_ms_search"]} for p in first["front"]]
    assert all(not dominates(t, p) for p in search for t in complete)
    assert {r["name"] for r in first["references"]} == {"teacher-fp32", "peer-torch-quantize_dynamic"}
    assert first["chosen"]["number"] in {p["number"] for p in first["front"]}
    card = json.loads((out / "best" / "leanrank.json").read_text())
    assert card["steps"][-1]["step"] == "autotune" and card["steps"][-1]["trial"] == first["chosen"]["number"]
    assert card["max_length"] == first["chosen"]["arch"]["max_length"]
    load_scorer(out / "best").score(["drill"], ["dewalt drill"])
    transfer_mtime = (out / "transfer" / "transfer.jsonl").stat().st_mtime_ns

    lines.clear()
    second = autotune(teacher_dir, tiny_search, out, AutotuneConfig(n_trials=5, **FAST), space, log=lines.append)
    assert any("3 trials done, 2 to go" in line for line in lines)
    assert not any("validating the teacher" in line for line in lines)          # cached in the study
    assert (out / "transfer" / "transfer.jsonl").stat().st_mtime_ns == transfer_mtime
    assert [t["number"] for t in _finished(out)] == [0, 1, 2, 3, 4]
    for t in second["trials"][3:]:                       # a repeated architecture is answered, not rerun
        twins = [o for o in second["trials"][: t["number"]] if o["arch"] == t["arch"]]
        assert (t["duplicate_of"] is not None) == bool(twins)

    with pytest.raises(LeanrankError, match=r"no trial has p50 <= 1e-06 ms"):
        autotune(teacher_dir, tiny_search, out, AutotuneConfig(n_trials=5, max_p50_ms=1e-6, **FAST), space,
                 log=lines.append)
    assert len(_finished(out)) == 5                        # the report was written before the refusal
    with pytest.raises(LeanrankError, match="was made with space="):
        autotune(teacher_dir, tiny_search, out, AutotuneConfig(n_trials=6, **FAST),
                 SearchSpace.from_dict({**SPACE, "layers": [1]}), log=lines.append)


def test_impossible_prune_below_prunes_every_trial_before_fine_tuning(teacher_dir, tiny_search, tmp_path,
                                                                     monkeypatch):
    import leanrank.compress.distill as distill_module

    def no_finetune(*_a, **_k):
        raise AssertionError("fine-tuning ran for a trial that should have been pruned")

    monkeypatch.setattr(distill_module, "distill", no_finetune)
    out = tmp_path / "pruned"
    config = AutotuneConfig(n_trials=3, **{**FAST, "prune_below": 5.0})
    with pytest.raises(LeanrankError, match="no complete trial"):
        autotune(teacher_dir, tiny_search, out, config, SearchSpace.from_dict(SPACE), log=lambda _m: None)
    trials = json.loads((out / "pareto.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["PRUNED"] * 3
    assert all(t["ndcg_step0"] is not None and "zero-shot NDCG@10" in t["pruned"] for t in trials)


def test_two_workers_share_one_sqlite_file(teacher_dir, tmp_path):
    out = tmp_path / "shared"
    recipe = tmp_path / "autotune.yaml"
    recipe.write_text(f"space: {json.dumps(SPACE)}\nsearch: {json.dumps({**FAST, 'transfer_queries': 8})}\n")
    cmd = [sys.executable, "-m", "leanrank.cli", "autotune", str(teacher_dir), "--out", str(out), "--config",
           str(recipe), "--trials", "6", "--workers-safe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p, *p.communicate(timeout=240)) for p in procs]
    for p, stdout, stderr in results:
        assert p.returncode == 0, stderr[-2000:]
        assert "worker done" in stdout and "database is locked" not in stderr
    assert not (out / "pareto.json").exists()               # workers only run trials
    study = open_study(f"sqlite:///{out / 'study.db'}", "autotune")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 6 <= len(finished) <= 7                          # a worker may finish one running trial late
    assert len(study.trials) == len(finished)
    workers = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in finished}
    assert workers == {p.pid for p, _, _ in results}        # the union of both workers' trials, in one study

    proc = subprocess.run([*cmd[:-1], "--max-p50-ms", "1000"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(finished)} trials done, 0 to go" in proc.stdout and "chosen: trial" in proc.stdout
    assert len(_finished(out)) == len(finished) and (out / "best" / "leanrank.json").exists()


def test_missing_optuna_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(LeanrankError, match=r"pip install optuna==5\.0\.0"):
        open_study("sqlite://", "x")


def test_cli_bad_config_is_one_line_exit_2(teacher_dir, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("space: {layerz: [1, 2]}\n")
    proc = subprocess.run([sys.executable, "-m", "leanrank.cli", "autotune", str(teacher_dir), "--out",
                           str(tmp_path / "o"), "--config", str(recipe)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown search space option 'layerz'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "leanrank.cli", "autotune", str(teacher_dir), "--out",
                           str(tmp_path / "o"), "--max-p50-ms", "5", "--min-ndcg", "0.4"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not both" in proc.stderr
