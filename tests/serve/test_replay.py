"""Offline bandit replay on the embedded synthetic catalog, and ``leanrank bandit replay``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from leanrank.core.errors import LeanrankError
from leanrank.serve.replay import ArmRewards, NoisyOracle, ReplayConfig, run_replay, simulate


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    return run_replay("synthetic", config=ReplayConfig(requests=600, seed=1), out=out), out


def test_replay_on_synthetic_picks_the_noisy_oracle(replayed):
    result, out = replayed
    assert result["best_arm"] == "oracle"
    arms = result["arms"]
    assert arms["oracle"]["ndcg@10"] > arms["bm25"]["ndcg@10"] > arms["random"]["ndcg@10"]
    assert set(result["policies"]) == {"epsilon_greedy", "ucb1", "thompson", "linucb"}
    for policy, r in result["policies"].items():
        assert r["chosen_arm"] == "oracle" and r["converged_to_best"], policy
        assert r["final_shares"]["oracle"] > 0.85, (policy, r["final_shares"])
        assert r["regret_second_half"] < r["regret_first_half"] or policy == "epsilon_greedy"
        assert r["curve"]["requests"][-1] == 600
        assert r["curve"]["regret"][-1] == pytest.approx(r["cumulative_regret"], abs=1e-3)


def test_replay_writes_png_and_json(replayed):
    result, out = replayed
    assert (out / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "replay.json").read_text())
    assert on_disk["best_arm"] == "oracle" and on_disk["dataset"] == "synthetic" and on_disk["split"] == "valid"
    assert on_disk["policies"]["thompson"]["cumulative_regret"] == result["policies"]["thompson"]["cumulative_regret"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def table(ndcg, contexts=None) -> ArmRewards:
    ndcg = np.asarray(ndcg, dtype=float)
    arms = tuple(f"arm{i}" for i in range(ndcg.shape[1]))
    return ArmRewards(arms, [f"q{i}" for i in range(len(ndcg))], ndcg, np.array([1.0, 100.0][: len(arms)]),
                      contexts or [{"query": "q"}] * len(ndcg))


def test_simulate_clicks_latency_and_one_arm():
    rewards = table([[0.5, 0.6], [0.5, 0.6]])
    clicks = simulate(rewards, ReplayConfig(requests=300, policies=("thompson",), reward="click"))
    clicked = clicks["policies"]["thompson"]["mean_reward"] * 300
    assert clicks["best_arm"] == "arm1" and clicked == pytest.approx(round(clicked))  # 0/1 rewards
    slow = simulate(rewards, ReplayConfig(requests=300, policies=("ucb1",), latency_penalty_per_s=2.0))
    assert slow["best_arm"] == "arm0"  # 0.6 - 2 × 0.1 s < 0.5 - 2 × 0.001 s
    assert slow["arms"]["arm1"]["expected_reward"] == pytest.approx(0.4)
    single = simulate(table([[0.3], [0.7]]), ReplayConfig(requests=50, policies=("linucb", "ucb1")))
    assert all(r["cumulative_regret"] == 0.0 for r in single["policies"].values())


def test_noisy_oracle_without_noise_is_the_labels():
    oracle = NoisyOracle({("q", "good"): 2.0, ("q", "ok"): 1.0}, noise=0.0)
    assert oracle.score(["q", "q", "q"], ["ok", "good", "other"]).tolist() == [1.0, 2.0, 0.0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(requests=0), "requests"),
    (dict(policies=()), "at least one policy"),
    (dict(policies=("ucb1", "softmax")), "unknown bandit policy 'softmax'"),
    (dict(policies=("ucb1", "ucb1")), "repeat"),
    (dict(reward="dwell"), "ndcg or click"),
    (dict(epsilon=2.0), "epsilon"),
    (dict(latency_penalty_per_s=-1.0), "latency_penalty"),
    (dict(tail=0.0), "tail"),
])
def test_bad_replay_config(kwargs, match):
    with pytest.raises(LeanrankError, match=match):
        ReplayConfig(**kwargs)


def test_bad_arm_is_refused_before_loading(tmp_path):
    with pytest.raises(LeanrankError, match="arm small: .*model directory not found"):
        run_replay("synthetic", arms={"small": str(tmp_path / "missing")}, out=tmp_path)


def test_cli_replay_on_synthetic(tmp_path):
    from leanrank.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["bandit", "replay", "--requests", "150", "--policies", "ucb1,thompson",
                                      "--max-queries", "30", "--arm", "lex=bm25", "--arm", "labels=oracle",
                                      "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in ("lex", "labels (best)", "ucb1", "thompson", "chosen arm", "regret.png"):
        assert word in result.output, word
    assert json.loads((out / "replay.json").read_text())["arm_specs"] == {"lex": "bm25", "labels": "oracle"}


def test_cli_bad_options_are_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LEANRANK_DATA"}
    for args, words in [(["--policies", "ucb1,softmax"], "unknown bandit policy 'softmax'"),
                        (["--arm", "nodir"], "--arm must be NAME=DIR"),
                        (["--requests", "0"], "requests must be a positive integer")]:
        proc = subprocess.run([sys.executable, "-m", "leanrank.cli", "bandit", "replay", "--out", str(tmp_path),
                               *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error:") and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
