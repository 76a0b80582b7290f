"""Recipe step kinds for search (cross-encoders): train, distill, prune, factorize, quantize, export, bench.

Each kind is a frozen config (values checked in ``__post_init__``, so a recipe is validated before
any step runs) and one thin function that calls the library's folder-to-folder function, writes
``ctx.model_dir`` and returns a small summary. Registered in ``leanrank.recipes.steps.KINDS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from leanrank.core.errors import LeanrankError
from leanrank.recipes.schema import ONNX, QUANTIZED, build, choice

if TYPE_CHECKING:
    from leanrank.recipes.steps import StepContext


@dataclass(frozen=True)
class TrainStep:
    """Fine-tune a cross-encoder from MiniLM-L6 (or from ``input``), as ``leanrank train search``."""
    train: dict = field(default_factory=dict)    # TrainConfig: max_steps, max_seconds, lr, batch_size, ...
    setup: dict = field(default_factory=dict)    # SearchTrainSetup: num_layers, max_length, valid_queries, ...

    def __post_init__(self) -> None:
        self.configs(None)

    def configs(self, init: str | None):
        from leanrank.train.fit import TrainConfig
        from leanrank.train.search import SearchTrainSetup

        if "init" in self.setup:
            raise LeanrankError("give the starting model as the step's `input`, not setup.init")
        setup = build(SearchTrainSetup, {**self.setup, "init": init}, "setup")
        choice("setup.layer_pick", setup.layer_pick, ("spread", "first"))
        return build(TrainConfig, self.train, "train"), setup


def train(ctx: StepContext, c: TrainStep) -> dict:
    from leanrank.data.registry import load_search_dataset
    from leanrank.train.search import train_search

    config, setup = c.configs(str(ctx.input) if ctx.input else None)
    splits = load_search_dataset(ctx.dataset, ctx.data_dir).split()
    _, record = train_search(splits, ctx.work, config, setup, resume=ctx.resume)
    return {"steps": record["steps"], f"best_valid_{config.metric}": record.get(f"best_{config.metric}")}


@dataclass(frozen=True)
class DistillStep:
    """Distil ``input`` into a smaller student; the sections of ``leanrank distill --config``."""
    student: dict = field(default_factory=dict)     # StudentConfig: num_layers, hidden_size, ...
    distill: dict = field(default_factory=dict)     # DistillConfig: losses, steps, lr, ...
    transfer: dict = field(default_factory=dict)    # TransferConfig: max_queries, bm25, dense, ...
    stages: tuple = ()                              # or multi-stage: [{student, distill}, ...]
    valid_queries: int = 150

    def __post_init__(self) -> None:
        from leanrank.cli_distill import plan

        plan(self.sections(), {}, {}, {})

    def sections(self) -> dict:
        values = {"student": self.student, "distill": self.distill, "transfer": self.transfer,
                  "stages": list(self.stages)}
        return json.loads(json.dumps({k: v for k, v in values.items() if v}))   # tuples → lists


def distill(ctx: StepContext, c: DistillStep) -> dict:
    import yaml

    from leanrank.cli_distill import distill_model
    from leanrank.core.io import write_text

    config = ctx.work / "distill.yaml"     # distill_model reads `stages` from a file only
    write_text(config, yaml.safe_dump(c.sections(), sort_keys=False))
    summary = distill_model(ctx.input, ctx.work, ctx.dataset, ctx.data_dir, config, valid_queries=c.valid_queries,
                            resume=ctx.resume, log=ctx.log)
    return {"stages": summary["stages"]}


@dataclass(frozen=True)
class PruneStep:
    """Remove heads / FFN neurons / layers (or single weights), as ``leanrank prune``."""
    target: str = "ffn"
    amount: float = 0.5
    criterion: str = "magnitude"
    scope: str = "layer"
    heads_amount: float = 0.0
    stages: int = 1
    steps: int = 0                 # fine-tuning steps in all
    lr: float = 3e-5
    calibration_size: int = 256
    valid_queries: int = 150

    def __post_init__(self) -> None:
        from leanrank.compress.importance import CRITERIA
        from leanrank.compress.prune import PruneConfig

        PruneConfig(target=self.target, amount=self.amount, criterion="magnitude", scope=self.scope)
        choice("criterion", self.criterion, CRITERIA)
        if not 0.0 <= self.heads_amount < 1.0 or self.stages < 1 or self.steps < 0:
            raise LeanrankError("need 0 <= heads_amount < 1, stages >= 1 and steps >= 0")


def prune(ctx: StepContext, c: PruneStep) -> dict:
    from leanrank.cli_prune import prune_model

    summary = prune_model(ctx.input, ctx.model_dir, ctx.dataset, ctx.data_dir, **asdict(c), log=ctx.log)
    return {k: summary[k] for k in ("params_before", "params_after")}


@dataclass(frozen=True)
class FactorizeStep:
    """Truncated-SVD factorization of Linear layers, as ``leanrank factorize``."""
    param_ratio: float | None = 0.5
    energy: float | None = None
    embedding_rank: int | None = None
    steps: int = 0
    lr: float = 3e-5
    valid_queries: int = 150
    calibration_size: int = 512          # train pairs for activation-aware SVD; 0 = plain SVD

    def __post_init__(self) -> None:
        from leanrank.compress.factorize import FactorizeConfig

        FactorizeConfig(energy=self.energy, param_ratio=None if self.energy is not None else self.param_ratio,
                        embedding_rank=self.embedding_rank)


def factorize(ctx: StepContext, c: FactorizeStep) -> dict:
    from leanrank.cli_prune import factorize_model

    summary = factorize_model(ctx.input, ctx.model_dir, ctx.dataset, ctx.data_dir, **asdict(c), log=ctx.log)
    return {"valid_ndcg@10": summary["valid_ndcg@10"]}


@dataclass(frozen=True)
class QuantizeStep:
    """Quantize a torch folder (or, for ort-* and mixed, an exported one), as ``leanrank quantize``."""
    scheme: str = "int8-dynamic"
    calibration_size: int = 512
    observer: str = "percentile"
    group_size: int = 64
    budget: float = 0.005
    valid_queries: int = 150
    steps: int = 300               # int8-qat
    lr: float = 1e-5               # int8-qat
    min_spearman: float = 0.98

    def __post_init__(self) -> None:
        from leanrank.cli_compress import ALL_SCHEMES

        choice("scheme", self.scheme, ALL_SCHEMES)
        choice("observer", self.observer, ("minmax", "percentile"))

    def output(self, given: str) -> str:
        if self.scheme.startswith("ort-") and given != ONNX:
            raise LeanrankError(f"scheme {self.scheme} quantizes an exported model: put an export step before it")
        if given == ONNX and self.scheme not in ("mixed",) and not self.scheme.startswith("ort-"):
            raise LeanrankError(f"scheme {self.scheme} quantizes a torch model, and the input is ONNX; use ort-int8-*")
        return ONNX if given == ONNX else QUANTIZED


def quantize(ctx: StepContext, c: QuantizeStep) -> dict:
    from leanrank.cli_compress import quantize_model

    options = {k: v for k, v in asdict(c).items() if k != "scheme"}
    summary = quantize_model(ctx.input, c.scheme, ctx.model_dir, ctx.dataset, ctx.data_dir, **options, log=ctx.log)
    return {"parity": summary["parity"]} if "parity" in summary else {}


@dataclass(frozen=True)
class ExportStep:
    """ONNX export, refused when the graph fails parity with the torch model."""
    parity_size: int = 256
    fuse: bool = True                  # one ORT Attention node per attention block


def export(ctx: StepContext, c: ExportStep) -> dict:
    from leanrank.cli_compress import export_model

    result = export_model(ctx.input, ctx.model_dir, ctx.dataset, ctx.data_dir, c.parity_size, fuse=c.fuse,
                          log=ctx.log)
    return {k: result[k] for k in ("max_abs_diff", "spearman") if k in result}


@dataclass(frozen=True)
class BenchStep:
    """Every model side by side with the teacher, the usual peers and score ensembles
    (``leanrank.bench.runner``); ``publish`` also writes PUBLISH.json/.md/.html/.png."""
    models: tuple[str, ...] = ()   # earlier steps or folders; default: every earlier step's model
    teacher: str | None = None     # default: the model the recipe starts from
    peers: bool | tuple[str, ...] = True     # all, none, or some of leanrank.bench.runner.PEERS
    ensembles: tuple[str, ...] = ()          # mean, weighted, stacking
    members: tuple[str, ...] = ()            # ensemble members (entry names); default: every variant
    max_queries: int | None = 150
    valid_queries: int = 100                 # validation queries the ensembles are fitted on
    repeats: int = 3
    device: str = "cpu"
    rss: bool = True
    publish: str | None = None               # also write PUBLISH.json/.md/.html/.png (benchmarks/results/NAME)

    def __post_init__(self) -> None:
        from leanrank.bench.runner import PEERS

        for peer in self.peers if isinstance(self.peers, tuple) else ():
            choice("peers", peer, PEERS)
        for kind in self.ensembles:
            choice("ensembles", kind, ("mean", "weighted", "stacking"))
        choice("device", self.device, ("cpu", "cuda"))


def recipe_command(step: str) -> str:
    """What made a report: this process's ``leanrank run ...`` line and the step."""
    import shlex
    import sys

    return f"leanrank {shlex.join(sys.argv[1:])}  # recipe step {step}"


def bench(ctx: StepContext, c: BenchStep) -> dict:
    from pathlib import Path

    from leanrank.bench.runner import bench_models

    models = [ctx.ref(m) for m in c.models] or list(ctx.models.values())
    teacher = ctx.ref(c.teacher) if c.teacher else ctx.root
    doc = bench_models(models, dataset=ctx.dataset, data_dir=ctx.data_dir, out_dir=Path(c.publish).parent if c.publish else ctx.work,
                       teacher=teacher, peers=c.peers, max_queries=c.max_queries, repeats=c.repeats,
                       ensembles=c.ensembles, ensemble_members=c.members or None, valid_queries=c.valid_queries,
                       device=c.device, rss=c.rss, name=Path(c.publish).name if c.publish else None, work=ctx.work / "peers",
                       command=recipe_command(ctx.step), log=ctx.log)
    return {"models": [str(m) for m in models], "teacher": str(teacher), "bar": (doc or {}).get("bar")}
