"""Recipe step kinds for sequential recommendation: train_rec, item_table, distill_rec, bench_rec.

Frozen configs validated in ``__post_init__`` and one thin function each, as in ``search_steps``;
registered in ``leanrank.recipes.steps.KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from leanrank.core.errors import LeanrankError
from leanrank.recipes.schema import build

if TYPE_CHECKING:
    from leanrank.recipes.steps import StepContext

SEQREC_DERIVED = ("n_items", "n_attributes", "max_item_attributes", "title_dim")   # come from the dataset


def _rec_train(values: dict):
    from leanrank.train.rec import RecTrainConfig

    return build(RecTrainConfig, values, "train")


@dataclass(frozen=True)
class TrainRecStep:
    """A SASRec/BERT4Rec next-item recommender, as ``leanrank train rec``."""
    model: dict = field(default_factory=dict)    # SeqRecConfig: hidden, layers, heads, dropout, loss, ...
    train: dict = field(default_factory=dict)    # RecTrainConfig: lr, batch_size, max_seconds, valid_users, ...
    attributes: bool = True
    titles: bool = False

    def __post_init__(self) -> None:
        from leanrank.models.seqrec import SeqRecConfig

        derived = sorted(set(self.model) & set(SEQREC_DERIVED))
        if derived:
            raise LeanrankError(f"model.{derived[0]} comes from the dataset; leave it out")
        build(SeqRecConfig, {"n_items": 1, **self.model}, "model")
        _rec_train(self.train)


def train_rec(ctx: StepContext, c: TrainRecStep) -> dict:
    from leanrank.cli_rec import train_rec_command

    record = train_rec_command(ctx.dataset, ctx.data_dir, ctx.work, dict(c.model), dict(c.train),
                               attributes=c.attributes, titles=c.titles, resume=ctx.resume, log=ctx.log)
    return {"steps": record["steps"], **{f"{s}_ndcg@10": record[s]["ndcg@10"] for s in ("valid", "test")}}


@dataclass(frozen=True)
class ItemTableStep:
    """Compress a recommender's item table: int8 / int4 rows or low-rank (optionally fine-tuned)."""
    table: str = "int8"
    rank: int | None = None
    train: dict | None = None      # RecTrainConfig of a fine-tune after compression (low-rank)

    def __post_init__(self) -> None:
        from leanrank.compress.item_table import ItemTableConfig

        ItemTableConfig(kind=self.table, rank=self.rank)
        if self.train is not None:
            _rec_train(self.train)


def item_table(ctx: StepContext, c: ItemTableStep) -> dict:
    from leanrank.compress.item_table import ItemTableConfig, compress_item_table_, load_seqrec

    model = load_seqrec(ctx.input)
    report = compress_item_table_(model, ItemTableConfig(kind=c.table, rank=c.rank))
    if c.train is not None:
        from leanrank.data.sequences import load_sequence_dataset
        from leanrank.train.rec import train_rec as fit_rec

        fit_rec(model, load_sequence_dataset(ctx.dataset, ctx.data_dir), _rec_train(c.train), ctx.work / "run",
                resume=ctx.resume)
    model.save(ctx.model_dir)
    ctx.log(f"item table {c.table}: {report['bytes_before'] / 1e6:.2f} MB → {report['bytes_after'] / 1e6:.2f} MB")
    return {k: report[k] for k in ("bytes_before", "bytes_after")}


@dataclass(frozen=True)
class DistillRecStep:
    """A recommender without side information, initialised from ``input`` and distilled.

    ``init: pca`` (default): a narrower student (``student: {hidden, layers, ...}``) whose item table
    is the PCA of the teacher's item vectors. ``init: fold``: the teacher's width, its item vectors
    (side information included) as a plain table, and the teacher blocks listed in
    ``student: {keep: [i, ...]}`` (default all)."""
    student: dict | None = None      # pca default {hidden: 32, layers: 2, heads: 2}; fold default {} (all blocks)
    init: str = "pca"
    alpha: float = 0.5
    temperature: float = 1.0
    train: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config()
        inits = {"pca": ("hidden", "layers", "heads", "ffn", "dropout", "seed"),   # student_from_teacher's
                 "fold": ("keep",)}                                               # fold_teacher's
        if self.init not in inits:
            raise LeanrankError(f"init {self.init!r} is not one of {', '.join(inits)}")
        allowed = inits[self.init]
        unknown = sorted(set(self.shape) - set(allowed))
        if unknown:
            raise LeanrankError(f"unknown student option {unknown[0]!r} for init {self.init}; "
                                f"allowed: {', '.join(allowed)}")
        if self.init == "pca" and not {"hidden", "layers"} <= set(self.shape):
            raise LeanrankError("student needs hidden and layers")
        keep = self.shape.get("keep")
        if keep is not None and not (isinstance(keep, list | tuple) and keep
                                     and all(isinstance(i, int) and i >= 0 for i in keep)):
            raise LeanrankError(f"student keep must be a non-empty list of teacher block indices, got {keep!r}")

    @property
    def shape(self) -> dict:
        """The student options in effect (the init's default when ``student`` is not given)."""
        if self.student is not None:
            return dict(self.student)
        return {"hidden": 32, "layers": 2, "heads": 2} if self.init == "pca" else {}

    def config(self):
        from leanrank.compress.distill_rec import RecDistillConfig

        return RecDistillConfig(alpha=self.alpha, temperature=self.temperature, train=_rec_train(self.train))


def distill_rec(ctx: StepContext, c: DistillRecStep) -> dict:
    from leanrank.compress.distill_rec import distill_rec as run
    from leanrank.compress.distill_rec import fold_teacher, student_from_teacher
    from leanrank.compress.item_table import load_seqrec
    from leanrank.data.sequences import load_sequence_dataset

    teacher = load_seqrec(ctx.input)
    if c.init == "fold":
        student = fold_teacher(teacher, c.shape.get("keep"))
    else:
        student = student_from_teacher(teacher, **c.shape)
    ds = load_sequence_dataset(ctx.dataset, ctx.data_dir)
    record = run(teacher, student, ds, c.config(), ctx.work / "run", resume=ctx.resume)
    student.save(ctx.model_dir)
    return {"steps": record["steps"], "best_step": record["best_step"]}


@dataclass(frozen=True)
class BenchRecStep:
    """The teacher, every recommender and the peers side by side (``leanrank.bench.runner_rec``):
    full-ranking HR/NDCG@10 with CIs, users/s, p50/p99, size; ``publish`` writes PUBLISH.json/.md/.html/.png."""
    models: tuple[str, ...] = ()
    teacher: str | None = None
    peers: bool | tuple[str, ...] = True     # all, none, or some of leanrank.bench.runner_rec.REC_PEERS
    max_users: int | None = None
    repeats: int = 3
    publish: str | None = None               # also write PUBLISH.json/.md/.html/.png (benchmarks/results/NAME)

    def __post_init__(self) -> None:
        from leanrank.bench.runner_rec import REC_PEERS

        for peer in self.peers if isinstance(self.peers, tuple) else ():
            if peer not in REC_PEERS:
                raise LeanrankError(f"peers: unknown peer {peer!r}; allowed: {', '.join(REC_PEERS)}")


def bench_rec(ctx: StepContext, c: BenchRecStep) -> dict:
    from pathlib import Path

    from leanrank.bench.runner_rec import bench_rec_models
    from leanrank.recipes.search_steps import recipe_command

    teacher = ctx.ref(c.teacher) if c.teacher else ctx.root
    models = [teacher, *(m for m in ([ctx.ref(m) for m in c.models] or ctx.models.values()) if m != teacher)]
    doc = bench_rec_models(models, dataset=ctx.dataset, data_dir=ctx.data_dir, out_dir=Path(c.publish).parent if c.publish else ctx.work,
                           peers=c.peers, max_users=c.max_users, repeats=c.repeats, name=Path(c.publish).name if c.publish else None,
                           command=recipe_command(ctx.step), log=ctx.log)
    return {"rows": [{k: r.get(k) for k in ("name", "ndcg@10", "size_mb", "users_per_s")} for r in doc["rows"]]}
