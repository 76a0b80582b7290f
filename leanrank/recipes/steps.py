"""The registry of recipe step kinds (``KINDS``) and what a step function gets (``StepContext``).

A step function gets a ``StepContext`` (its resolved input folder, the folder to write, the
recipe's dataset) and its validated config; it writes the model into ``ctx.model_dir`` (a bench
writes its reports into ``ctx.work``) and returns a small summary for ``recipe-run.json``. The
kinds live in ``search_steps`` and ``rec_steps``.

Adding a step kind = a config dataclass + a function + one ``KINDS`` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.recipes import autotune_step
from leanrank.recipes import rec_steps as rec
from leanrank.recipes import search_steps as search
from leanrank.recipes.schema import FLOAT, ONNX, QUANTIZED, SEARCH_MODELS, SEQREC


@dataclass
class StepContext:
    step: str                      # the step's name
    dataset: str
    data_dir: str | None
    input: Path | None             # the input model folder (None: the step starts from nothing)
    work: Path                     # write here; renamed to <out>/<step> once the step succeeded
    models: dict[str, Path]        # model folders of the earlier steps, by step name
    root: Path | None              # the model the recipe starts from (a bench's default teacher)
    resume: bool = False           # ``work`` holds a failed attempt of this same step: continue it
    log: Callable[[str], None] = print

    @property
    def model_dir(self) -> Path:
        return self.work / "model"

    def ref(self, value: str) -> Path:
        """An earlier step's model folder, or a path."""
        return self.models.get(value) or Path(value)


@dataclass(frozen=True)
class Kind:
    config: type
    run: Callable[[StepContext, object], dict]
    input: str = "previous"        # previous (default: the step before) | optional (none unless given) | none
    accepts: tuple[str, ...] = (FLOAT,)                 # formats of the input model
    makes: str | None = FLOAT                           # format of the output model (None: no model)
    refs: tuple[str, ...] = ()                          # config fields that name earlier steps or folders
    resumable: bool = False                             # continues a failed attempt's checkpoints
    family: str = "search"                              # search or rec: which datasets it reads


KINDS: dict[str, Kind] = {
    "train": Kind(search.TrainStep, search.train, input="optional", resumable=True),
    "distill": Kind(search.DistillStep, search.distill, resumable=True),
    "prune": Kind(search.PruneStep, search.prune),
    "factorize": Kind(search.FactorizeStep, search.factorize),
    "quantize": Kind(search.QuantizeStep, search.quantize, accepts=(FLOAT, ONNX), makes=QUANTIZED),  # see .output
    "export": Kind(search.ExportStep, search.export, makes=ONNX),
    "autotune": Kind(autotune_step.AutotuneStep, autotune_step.autotune, resumable=True),   # the study continues
    "bench": Kind(search.BenchStep, search.bench, input="none", accepts=SEARCH_MODELS, makes=None,
                  refs=("models", "teacher")),
    "train_rec": Kind(rec.TrainRecStep, rec.train_rec, input="none", accepts=(), makes=SEQREC, resumable=True,
                      family="rec"),
    "item_table": Kind(rec.ItemTableStep, rec.item_table, accepts=(SEQREC,), makes=SEQREC, family="rec"),
    "distill_rec": Kind(rec.DistillRecStep, rec.distill_rec, accepts=(SEQREC,), makes=SEQREC, resumable=True,
                        family="rec"),
    "bench_rec": Kind(rec.BenchRecStep, rec.bench_rec, input="none", accepts=(SEQREC,), makes=None,
                      refs=("models", "teacher"), family="rec"),
}


def output_format(kind: str, config, given: str | None) -> str | None:
    """The format of the model a step makes from an input of format ``given`` (an error if it cannot)."""
    k = KINDS[kind]
    if given is not None and given not in k.accepts:
        raise LeanrankError(f"needs a {' or '.join(k.accepts)} model as input, got a {given} one")
    return config.output(given) if hasattr(config, "output") else k.makes

