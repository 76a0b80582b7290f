"""What ``leanrank autotune`` searches over, and how one point of it becomes a model.

A trial's params (``layers``, ``hidden``, ``heads``, ``ffn``, ``lowrank``, ``max_length`` and
``quant_0`` … ``quant_{max layers - 1}``) map to an *architecture* (``arch_of``: heads capped at
``hidden / head size``, only the kept layers' quant choices), and an architecture to a model
(``build_float`` then ``quantize_blocks``): the teacher sliced by ``make_student`` (layers, hidden
dims, FFN neurons), heads pruned by magnitude down to ``heads`` per layer, low-rank SVD at
``lowrank`` of the encoder's Linear weights (1.0 = none), inputs truncated at ``max_length``
tokens, then each encoder layer in its own scheme (``fp32`` or ``int8`` = dynamic int8 …).
Everything is deterministic, so a trial is rebuilt from its params; nothing per trial is kept.

>>> space = SearchSpace.from_dict({"layers": [1, 2, 3], "hidden": [384, 256], "quant": ["fp32", "int8"]})
>>> arch = arch_of({"layers": 2, "hidden": 256, "heads": 12, "quant_0": "int8", "quant_1": "fp32"},
...                space.resolved(teacher.model.config), head_size=32)      # doctest: +SKIP
>>> model = quantize_blocks(build_float(teacher, arch), arch)              # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace

from leanrank.core.config import from_mapping
from leanrank.core.errors import LeanrankError

QUANT_ALIASES = {"fp32": "fp32", "int8": "int8-dynamic", "int8-dynamic": "int8-dynamic",
                 "int8-weight": "int8-weight", "int4-weight": "int4-weight"}
SAMPLERS = ("nsga2", "tpe", "random")


@dataclass(frozen=True)
class SearchSpace:
    """Choices per dimension; ``None`` = only the teacher's own value."""
    layers: tuple[int, ...] | None = None          # encoder layers kept
    hidden: tuple[int, ...] | None = None          # hidden size (a multiple of the head size)
    heads: tuple[int, ...] | None = None           # attention heads per layer (capped at hidden / head size)
    ffn: tuple[int, ...] | None = None             # FFN width
    lowrank: tuple[float, ...] = (1.0,)            # kept fraction of encoder Linear weights (1.0 = no SVD)
    quant: tuple[str, ...] = ("fp32",)             # per encoder layer: fp32, int8, int8-weight, int4-weight
    max_length: tuple[int, ...] | None = None      # tokens per (query, title) pair
    layer_pick: str = "spread"                     # which layers make_student keeps: spread | first

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "layer_pick" or value is None:
                continue
            if not isinstance(value, tuple) or not value:
                raise LeanrankError(f"search space `{f.name}`: expected a non-empty list of choices, got {value!r}")
            if len(set(value)) != len(value):
                raise LeanrankError(f"search space `{f.name}`: duplicate choices in {list(value)}")
            if f.name == "quant":
                bad = [q for q in value if q not in QUANT_ALIASES]
                if bad:
                    raise LeanrankError(f"search space `quant`: unknown scheme {bad[0]!r}; "
                                        f"allowed: {', '.join(QUANT_ALIASES)}")
            elif f.name == "lowrank":
                if not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in value):
                    raise LeanrankError(f"search space `lowrank`: fractions in (0, 1] (1.0 = none), got {list(value)}")
            elif not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise LeanrankError(f"search space `{f.name}`: choices must be integers >= 1, got {list(value)}")
        if self.layer_pick not in ("spread", "first"):
            raise LeanrankError(f"search space `layer_pick`: 'spread' or 'first', got {self.layer_pick!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> SearchSpace:
        return from_mapping(cls, values, "search space")

    def resolved(self, tcfg, max_length: int = 48) -> SearchSpace:
        """Teacher defaults filled in (``max_length``: the teacher's) and every choice checked
        against the teacher's HF config."""
        size = tcfg.hidden_size // tcfg.num_attention_heads
        limits = {"layers": tcfg.num_hidden_layers, "hidden": tcfg.hidden_size, "heads": tcfg.num_attention_heads,
                  "ffn": tcfg.intermediate_size, "max_length": tcfg.max_position_embeddings}
        own = {"layers": tcfg.num_hidden_layers, "hidden": tcfg.hidden_size, "heads": tcfg.num_attention_heads,
               "ffn": tcfg.intermediate_size, "max_length": max_length}
        space = replace(self, **{k: (v,) for k, v in own.items() if getattr(self, k) is None})
        for key, limit in limits.items():
            over = [v for v in getattr(space, key) if v > limit]
            if over:
                raise LeanrankError(f"search space `{key}`: {over[0]} exceeds the teacher's {limit}")
        odd = [h for h in space.hidden if h % size]
        if odd:
            raise LeanrankError(f"search space `hidden`: {odd[0]} is not a multiple of the head size {size}")
        return space

    def suggest(self, trial) -> dict:
        """Ask an optuna trial for one point (every ``quant_i`` is always asked: a fixed space)."""
        params = {k: trial.suggest_categorical(k, list(getattr(self, k)))
                  for k in ("layers", "hidden", "heads", "ffn", "lowrank", "max_length")}
        for i in range(max(self.layers)):
            params[f"quant_{i}"] = trial.suggest_categorical(f"quant_{i}", list(self.quant))
        return params


@dataclass(frozen=True)
class AutotuneConfig:
    """How the study runs (``leanrank autotune --config`` section ``search``)."""
    sampler: str = "nsga2"                  # nsga2 | tpe | random
    n_trials: int = 40                      # total COMPLETE + PRUNED trials of the study
    population: int = 16                    # NSGA-II population size
    timeout_s: float | None = None          # stop starting trials after this many seconds
    valid_queries: int = 150                # validation rerank queries for NDCG@10
    latency_queries: int = 30               # validation rerank lists timed per model
    latency_repeats: int = 3                # interleaved rounds when timing the front + references
    batch_size: int = 32                    # one query's candidates are scored at this batch size
    finetune_steps: int = 200               # listwise distillation steps per trial (0 = zero-shot)
    lr: float = 3e-4
    queries_per_batch: int = 8
    list_size: int = 8
    transfer_queries: int = 1000            # training queries scored once by the teacher
    prune_below: float = 0.25               # prune when zero-shot NDCG < prune_below × teacher NDCG (0 = off)
    seed: int = 0
    threads: int | None = None              # torch threads (default: torch's)
    storage: str | None = None              # default sqlite:///<out>/study.db
    study_name: str = "autotune"
    onnx_dir: str | None = None             # exported teacher: adds the ORT quantize_dynamic peer
    max_p50_ms: float | None = None         # choose the best NDCG with p50 <= this
    min_ndcg: float | None = None           # or the fastest with NDCG >= this

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise LeanrankError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        for name in ("valid_queries", "latency_queries", "latency_repeats", "batch_size", "queries_per_batch",
                     "transfer_queries"):
            if getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_trials < 0 or self.finetune_steps < 0:
            raise LeanrankError("n_trials and finetune_steps must be >= 0")
        if self.population < 2 or self.list_size < 2:
            raise LeanrankError("population and list_size must be >= 2")
        if not self.prune_below >= 0:
            raise LeanrankError(f"prune_below is a fraction of the teacher's NDCG (>= 0), got {self.prune_below}")
        if self.max_p50_ms is not None and self.min_ndcg is not None:
            raise LeanrankError("give max_p50_ms or min_ndcg, not both")

    @classmethod
    def from_dict(cls, values: dict | None) -> AutotuneConfig:
        return from_mapping(cls, values, "autotune")


def arch_of(params: dict, space: SearchSpace, head_size: int) -> dict:
    """The architecture a trial's params stand for (what is built, and the duplicate key)."""
    hidden, layers = params["hidden"], params["layers"]
    return {"layers": layers, "hidden": hidden, "heads": min(params["heads"], hidden // head_size),
            "ffn": params["ffn"], "lowrank": float(params["lowrank"]), "max_length": params["max_length"],
            "quant": [QUANT_ALIASES[params.get(f"quant_{i}", "fp32")] for i in range(layers)],
            "layer_pick": space.layer_pick}


def arch_key(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


def build_float(teacher, arch: dict):
    """The float student of ``arch`` (sliced, heads pruned, factorized; ``max_length`` set)."""
    from leanrank.compress.factorize import FactorizeConfig, factorize_
    from leanrank.compress.prune import PruneConfig, prune_
    from leanrank.compress.students import StudentConfig, make_student

    student = make_student(teacher, StudentConfig(num_layers=arch["layers"], hidden_size=arch["hidden"],
                                                   intermediate_size=arch["ffn"], layer_pick=arch["layer_pick"]))
    full = student.model.config.num_attention_heads
    if arch["heads"] < full:
        prune_(student, PruneConfig(target="heads", amount=(full - arch["heads"]) / full))
    if arch["lowrank"] < 1.0:
        factorize_(student, FactorizeConfig(param_ratio=arch["lowrank"]))
    student.card.max_length = arch["max_length"]
    return student


def quantize_blocks(model, arch: dict):
    """Quantize each encoder layer with its scheme, in place (the pooler and score head stay float)."""
    from leanrank.compress.quantize import make_config, quantize_
    from leanrank.core.modules import block_of

    for scheme in sorted(set(arch["quant"]) - {"fp32"}):
        blocks = {f"layer.{i}" for i, q in enumerate(arch["quant"]) if q == scheme}
        quantize_(model, make_config(scheme), lambda _m, fqn, blocks=blocks: block_of(fqn) in blocks)
    return model


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as good on both objectives (NDCG up, p50 down) and better on one."""
    return (a["ndcg"] >= b["ndcg"] and a["p50_ms"] <= b["p50_ms"]
            and (a["ndcg"] > b["ndcg"] or a["p50_ms"] < b["p50_ms"]))


def pareto_front(points: list[dict]) -> list[dict]:
    """The non-dominated points (``ndcg``, ``p50_ms``), fastest first; exact duplicates kept once."""
    front, seen = [], set()
    for p in sorted(points, key=lambda p: (p["p50_ms"], -p["ndcg"])):
        if (p["ndcg"], p["p50_ms"]) in seen or any(dominates(q, p) for q in points):
            continue
        seen.add((p["ndcg"], p["p50_ms"]))
        front.append(p)
    return front


def select(points: list[dict], max_p50_ms: float | None = None, min_ndcg: float | None = None) -> dict:
    """Best NDCG with p50 <= ``max_p50_ms``, or the fastest with NDCG >= ``min_ndcg`` (ties: the
    other objective); with neither, the best NDCG. An error names the closest miss."""
    if not points:
        raise LeanrankError("no complete trial to choose from")
    if max_p50_ms is not None:
        ok = [p for p in points if p["p50_ms"] <= max_p50_ms]
        if not ok:
            fast = min(points, key=lambda p: p["p50_ms"])
            raise LeanrankError(f"no trial has p50 <= {max_p50_ms} ms (fastest: trial {fast['number']}, "
                                f"{fast['p50_ms']:.2f} ms at NDCG@10 {fast['ndcg']:.4f})")
        return max(ok, key=lambda p: (p["ndcg"], -p["p50_ms"]))
    if min_ndcg is not None:
        ok = [p for p in points if p["ndcg"] >= min_ndcg]
        if not ok:
            best = max(points, key=lambda p: p["ndcg"])
            raise LeanrankError(f"no trial has NDCG@10 >= {min_ndcg} (best: trial {best['number']}, "
                                f"{best['ndcg']:.4f} at {best['p50_ms']:.2f} ms)")
        return min(ok, key=lambda p: (p["p50_ms"], -p["ndcg"]))
    return max(points, key=lambda p: (p["ndcg"], -p["p50_ms"]))
