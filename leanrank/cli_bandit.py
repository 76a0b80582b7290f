"""``leanrank bandit replay``: parse the options, run the replay, print its tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leanrank.core.errors import LeanrankError


def parse_arms(specs: Sequence[str] | None) -> dict[str, str] | None:
    """``["small=runs/student", "bm25=bm25"]`` → ``{"small": "runs/student", "bm25": "bm25"}``.

    >>> parse_arms(["a=runs/a", "lex=bm25"])
    {'a': 'runs/a', 'lex': 'bm25'}
    """
    if not specs:
        return None
    arms: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise LeanrankError(f"--arm must be NAME=DIR (or NAME=bm25|random|oracle), got {spec!r}")
        if name in arms:
            raise LeanrankError(f"--arm {name!r} given twice")
        arms[name] = value
    return arms


def parse_policies(text: str) -> tuple[str, ...]:
    """``"ucb1, thompson"`` → ``("ucb1", "thompson")`` (checked by ``ReplayConfig``).

    >>> parse_policies("ucb1, thompson")
    ('ucb1', 'thompson')
    """
    return tuple(p.strip() for p in text.split(",") if p.strip())


def replay_command(dataset: str, data_dir: Path | None, arm_specs: Sequence[str] | None, *, requests: int,
                   policies: str, reward: str, latency_penalty: float, epsilon: float, split: str,
                   max_queries: int | None, seed: int, out: Path, console=None) -> dict:
    """Validate everything, run ``run_replay`` and print the arm and policy tables."""
    from rich.console import Console

    from leanrank.serve.replay import ReplayConfig, run_replay

    config = ReplayConfig(requests=requests, policies=parse_policies(policies), seed=seed, reward=reward,
                          latency_penalty_per_s=latency_penalty, epsilon=epsilon)
    arms = parse_arms(arm_specs)
    console = console or Console()
    result = run_replay(dataset, data_dir, arms, config, out, split=split, max_queries=max_queries,
                        log=console.print)
    print_replay(result, console)
    return result


def print_replay(result: dict, console) -> None:
    """The arms (reward per query) and the policies (regret, final shares, chosen arm)."""
    from rich.table import Table

    k = result["config"]["k"]
    arms = Table(title=f"arms on {result['dataset']} {result['split']} ({result['queries']} queries)")
    for col in ("arm", f"NDCG@{k}", "ms/query", "expected reward"):
        arms.add_column(col, justify="left" if col == "arm" else "right")
    for name, a in result["arms"].items():
        star = " (best)" if name == result["best_arm"] else ""
        arms.add_row(name + star, f"{a[f'ndcg@{k}']:.3f}", f"{a['latency_ms']:.2f}", f"{a['expected_reward']:.3f}")
    console.print(arms)
    n = result["config"]["requests"]
    tail = result["config"]["tail"]
    table = Table(title=f"{n} simulated requests, reward {result['config']['reward']}; "
                        f"regret vs always {result['best_arm']}")
    table.add_column("policy", no_wrap=True)
    for col in ("regret", "1st half", "2nd half"):
        table.add_column(col, justify="right")
    table.add_column(f"final shares (last {tail:.0%})")
    table.add_column("chosen arm")
    for policy, r in result["policies"].items():
        shares = ", ".join(f"{a} {s:.0%}" for a, s in sorted(r["final_shares"].items(), key=lambda kv: -kv[1]))
        chosen = r["chosen_arm"] + ("" if r["converged_to_best"] else " (not best)")
        table.add_row(policy, f"{r['cumulative_regret']:.1f}", f"{r['regret_first_half']:.1f}",
                      f"{r['regret_second_half']:.1f}", shares, chosen)
    console.print(table)
    console.print(f"wrote {result['files']['json']} and {result['files']['plot']}")
