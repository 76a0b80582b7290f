"""Transfer data for distillation: teacher-scored candidate lists, cached to disk once.

Human labels are sparse (a few judged products per query), so each training query gets its
judged products plus candidates recalled from the whole catalog by BM25 and (optionally) a dense
bi-encoder, and the teacher scores them all. The scores go to ``DIR/transfer.jsonl`` one query
per line as they are computed, so an interrupted run resumes where it stopped, and every student
run reuses them.

>>> ts = build_transfer(teacher, splits["train"], "runs/transfer", max_queries=2000)  # doctest: +SKIP
>>> ts.lists[0].teacher.shape
(24,)
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json
from leanrank.data.search import SearchDataset

FILE, META = "transfer.jsonl", "transfer.meta.json"


@dataclass(frozen=True)
class TransferConfig:
    max_queries: int | None = 3000   # training queries scored (None = all)
    bm25: int = 16                   # BM25 candidates per query (unjudged ones)
    dense: int = 8                   # dense-recall candidates per query (0 = no dense recall)
    max_candidates: int = 32         # list length cap (judged products first)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bm25 < 0 or self.dense < 0:
            raise LeanrankError("bm25 and dense candidate counts must be >= 0")
        if self.max_candidates < 2:
            raise LeanrankError(f"max_candidates must be >= 2, got {self.max_candidates}")
        if self.max_queries is not None and self.max_queries < 1:
            raise LeanrankError(f"max_queries must be >= 1, got {self.max_queries}")


@dataclass
class CandidateList:
    query: str
    ids: list[str]         # product ids
    titles: list[str]
    targets: np.ndarray    # hard labels in [0, 1] (gain / max gain; 0 for unjudged)
    judged: np.ndarray     # bool
    teacher: np.ndarray    # teacher logits


@dataclass
class TransferSet:
    lists: list[CandidateList]
    meta: dict

    @property
    def pairs(self) -> int:
        return sum(len(c.titles) for c in self.lists)


def sample_queries(ds: SearchDataset, config: TransferConfig) -> list[str]:
    queries = ds.queries()
    if config.max_queries is not None and len(queries) > config.max_queries:
        queries = random.Random(config.seed).sample(queries, config.max_queries)
    return queries


def candidate_lists(ds: SearchDataset, queries: list[str], config: TransferConfig, bm25=None,
                    dense=None) -> list[dict]:
    """Unscored lists: judged products, then BM25 and dense hits not already in, up to the cap."""
    if not queries:
        return []
    groups = ds.by_query()
    bm25_hits = bm25.search(queries, k=config.bm25 + 8) if bm25 is not None and config.bm25 else None
    dense_hits = dense(queries, config.dense + 8) if dense is not None and config.dense else None
    span = ds.labels.label_max - ds.labels.label_min
    out = []
    for i, q in enumerate(queries):
        judged = {j.product_id: j.gain / span for j in groups[q]}
        ids = list(judged)[: config.max_candidates]
        for hits, n in ((bm25_hits, config.bm25), (dense_hits, config.dense)):
            extra = [pid for pid, _ in hits[i] if pid not in judged and pid not in ids][:n] if hits else []
            ids += extra[: max(config.max_candidates - len(ids), 0)]
        out.append({"query": q, "ids": ids, "targets": [judged.get(p, 0.0) for p in ids],
                    "judged": [p in judged for p in ids]})
    return out


def dense_recall(titles: dict[str, str], encoder_path=None, log=print):
    """``recall(queries, k)`` over the whole catalog with the MiniLM bi-encoder + FAISS (the
    catalog is encoded on the first call, so a finished transfer folder costs nothing)."""
    from leanrank.models.bi_encoder import BiEncoder, DenseIndex

    built: list = []

    def recall(queries, k):
        if not built:
            t0 = time.perf_counter()
            enc = BiEncoder.from_pretrained(encoder_path)
            built.extend([enc, DenseIndex.build(enc, titles)])
            log(f"dense index: {len(titles):,} products encoded in {time.perf_counter() - t0:.0f}s")
        return built[1].search(built[0].encode(queries), k=k)

    return recall


def build_transfer(teacher, ds: SearchDataset, directory: str | Path, config: TransferConfig = TransferConfig(),
                   bm25=None, dense=None, batch_size: int = 64, chunk: int = 64, progress: bool = True,
                   teacher_name: str = "", log=print) -> TransferSet:
    """Score the candidate lists with ``teacher`` into ``directory`` (resuming a partial file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"teacher": teacher_name, "teacher_sha1": fingerprint(teacher), "dataset": ds.name,
            "config": asdict(config)}
    meta_path = directory / META
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in ("teacher_sha1", "dataset", "config")} != \
                {k: meta[k] for k in ("teacher_sha1", "dataset", "config")}:
            raise LeanrankError(f"{directory} holds transfer scores of another teacher/dataset/config; "
                                "use a new folder or delete it")
    else:
        write_json(meta_path, meta)
    wanted = sample_queries(ds, config)
    done = _read_lines(directory / FILE)
    missing = [q for q in wanted if q not in done]
    if missing and bm25 is None:
        from leanrank.models.bm25 import BM25Index

        bm25 = BM25Index.build(ds.titles)
    todo = candidate_lists(ds, missing, config, bm25, dense)
    if done:
        log(f"transfer: {len(wanted) - len(missing)} of {len(wanted)} queries already scored in {directory}")
    bar = _bar(sum(len(c["ids"]) for c in todo)) if progress and todo else None
    t0 = time.perf_counter()
    with open(directory / FILE, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            qs = [c["query"] for c in part for _ in c["ids"]]
            ts = [ds.titles[p] for c in part for p in c["ids"]]
            scores = teacher.score(qs, ts, batch_size=batch_size)
            at = 0
            for c in part:
                n = len(c["ids"])
                line = {**c, "teacher": [round(float(x), 5) for x in scores[at : at + n]]}
                at += n
                f.write(json.dumps(line) + "\n")
                done[c["query"]] = line
            f.flush()
            if bar:
                bar[0].advance(bar[1], len(qs))
    if bar:
        bar[0].stop()
    if todo:
        seconds = time.perf_counter() - t0
        n = sum(len(c["ids"]) for c in todo)
        log(f"transfer: scored {n:,} pairs in {seconds:.0f}s ({n / seconds:.0f} pairs/s)")
        meta["scoring_pairs_per_s"] = round(n / seconds, 1)
        write_json(meta_path, {**json.loads(meta_path.read_text()), **meta})
    return TransferSet([_to_list(done[q], ds.titles) for q in wanted if q in done],
                       json.loads(meta_path.read_text()))


def fingerprint(model) -> str:
    """sha1 of the model's weights: scores cached for one teacher are never reused for another."""
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_transfer(directory: str | Path, titles: dict[str, str]) -> TransferSet:
    directory = Path(directory)
    if not (directory / META).exists():
        raise LeanrankError(f"{directory}: no transfer scores (run build_transfer / `leanrank distill` first)")
    lines = _read_lines(directory / FILE)
    return TransferSet([_to_list(x, titles) for x in lines.values()], json.loads((directory / META).read_text()))


def _to_list(line: dict, titles: dict[str, str]) -> CandidateList:
    return CandidateList(line["query"], list(line["ids"]), [titles[p] for p in line["ids"]],
                         np.asarray(line["targets"], dtype=np.float32), np.asarray(line["judged"], dtype=bool),
                         np.asarray(line["teacher"], dtype=np.float32))


def _read_lines(path: Path) -> dict[str, dict]:
    """Complete lines only: a line cut by a kill is dropped (and rewritten on resume)."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    text = path.read_text(encoding="utf-8")
    good = 0
    for raw in text.splitlines(keepends=True):
        if not raw.endswith("\n"):
            break
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            break
        out[line["query"]] = line
        good += len(raw.encode("utf-8"))
    if good < len(text.encode("utf-8")):
        with open(path, "r+b") as f:
            f.truncate(good)
    return out


def _bar(total: int):
    from rich.progress import Progress

    bar = Progress()
    task = bar.add_task("teacher scores", total=total)
    bar.start()
    return bar, task
