"""Architecture search: ``autotune(teacher_dir, splits, out_dir, config, space)`` (``leanrank autotune``).

An optuna multi-objective study (NSGA-II by default; TPE or random) maximises validation NDCG@10
and minimises the **measured** p50 latency of reranking one query's candidate list on this
machine. Each trial builds its architecture from the teacher (``search_space``), measures the
zero-shot NDCG first and is PRUNED when that is below ``prune_below`` × the teacher's NDCG —
before paying for fine-tuning (optuna's ``report``/pruners do not support multi-objective
studies, hence this rule). Survivors get ``finetune_steps`` of listwise distillation from the
teacher (scores cached once per study in ``out/transfer/``), then their per-layer quantization,
then NDCG and latency. An architecture already finished in the study is answered from it.

The study lives in ``sqlite:///<out>/study.db`` (or any RDB URL): re-running continues it until
``n_trials`` trials are COMPLETE or PRUNED, and several workers (``workers_safe``) may share it.
The report re-times the Pareto front side by side with the teacher and its plain quantized peers
(interleaved rounds, same protocol), writes ``out/pareto.json``, and rebuilds the chosen trial
from its params (same seed) into ``out/best/``. Only the study, the transfer cache and best/ are
on disk: no per-trial weights.

>>> result = autotune("runs/teacher/model", splits, "runs/autotune", AutotuneConfig(n_trials=40),
...                   SearchSpace.from_dict({"layers": [1, 2, 3], "quant": ["fp32", "int8"]}))  # doctest: +SKIP
>>> result["chosen"]["ndcg"], result["chosen"]["p50_ms"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from leanrank.compress.search_space import (
    AutotuneConfig,
    SearchSpace,
    arch_key,
    arch_of,
    build_float,
    dominates,
    pareto_front,
    quantize_blocks,
    select,
)
from leanrank.core.errors import LeanrankError, require

OPTUNA_PIN = "optuna==5.0.0"
PROTOCOL_KEYS = ("valid_queries", "latency_queries", "batch_size", "finetune_steps", "lr", "queries_per_batch",
                 "list_size", "transfer_queries", "prune_below", "seed", "threads")

__all__ = ["AutotuneConfig", "SearchSpace", "autotune", "open_study", "pareto_front", "select"]


def _optuna():
    optuna = require("optuna", OPTUNA_PIN)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(config: AutotuneConfig, out_dir: str | Path) -> str:
    return config.storage or f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def open_study(url: str, name: str, heartbeat: bool = False):
    """Create or load the study; SQLite waits 60 s on a lock (several workers on one file), and
    with ``heartbeat`` a dead worker's RUNNING trial is failed after 3 min and retried once."""
    optuna = _optuna()
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    if heartbeat:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        kwargs.update(heartbeat_interval=60, grace_period=180,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    storage = optuna.storages.RDBStorage(url, **kwargs)
    return optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"],
                               load_if_exists=True)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive file lock (set-up steps that two workers must not do at once)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_path(url: str, out: Path) -> Path:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.split(":///", 1)[1] + ".lock")
    return out / ".autotune.lock"


def _sampler(config: AutotuneConfig, seed: int):
    optuna = _optuna()
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


class _Bench:
    """What every trial shares: the teacher, the validator, the timed lists, the transfer set."""

    def __init__(self, teacher, splits, config: AutotuneConfig, out: Path, log):
        from leanrank.eval.protocol import build_rerank_tasks
        from leanrank.models.bm25 import BM25Index
        from leanrank.train.search import rerank_validator

        valid = splits["valid"]
        bm25 = BM25Index.build(valid.titles)
        self.teacher, self.splits, self.config, self.out, self.log = teacher, splits, config, out, log
        self.validate = rerank_validator(valid, bm25, config.valid_queries)
        tasks = build_rerank_tasks(valid, bm25, max_queries=config.latency_queries, seed=1)
        self.lists = [(t.query, [valid.titles[p] for p in t.product_ids]) for t in tasks]
        self.transfer = None

    def ndcg(self, scorer) -> float:
        return float(self.validate(scorer)["ndcg@10"])

    def latency(self, scorer) -> dict:
        from leanrank.eval.latency import query_latency

        return query_latency(lambda q, t: scorer.score(q, t, batch_size=self.config.batch_size), self.lists)

    def load_transfer(self) -> None:
        from leanrank.compress.transfer import TransferConfig, build_transfer

        if self.config.finetune_steps and self.transfer is None:
            tc = TransferConfig(max_queries=self.config.transfer_queries, dense=0, seed=self.config.seed)
            self.transfer = build_transfer(self.teacher, self.splits["train"], self.out / "transfer", tc,
                                           progress=False, log=self.log)

    def build(self, arch: dict, finetune: bool = True):
        """The trial's model: float student → listwise distillation → per-layer quantization."""
        model = build_float(self.teacher, arch)
        if finetune and self.config.finetune_steps:
            self.finetune(model, arch)
        return quantize_blocks(model, arch)

    def finetune(self, model, arch: dict) -> None:
        from leanrank.compress.distill import DistillConfig, distill

        c = self.config
        view = copy.copy(self.teacher)              # same weights, the student's max_length for tokenizing
        view.card = replace(self.teacher.card, max_length=arch["max_length"])
        cfg = DistillConfig(listwise=1.0, steps=c.finetune_steps, lr=c.lr, queries_per_batch=c.queries_per_batch,
                            list_size=c.list_size, eval_every=c.finetune_steps, checkpoint_every=c.finetune_steps,
                            seed=c.seed)
        with tempfile.TemporaryDirectory(dir=self.out, prefix=".trial-") as tmp:
            distill(view, model, self.transfer, cfg, tmp, progress=False)


def autotune(teacher_dir: str | Path, splits: dict, out_dir: str | Path, config: AutotuneConfig = AutotuneConfig(),
             space: SearchSpace = SearchSpace(), log=print, workers_safe: bool = False) -> dict:
    """Run (or continue) the study, then report: ``out/pareto.json`` and ``out/best/``.

    ``workers_safe``: this process is one of several workers sharing ``config.storage``: it runs
    trials only (no report); run once more without it to write the report."""
    import torch

    from leanrank.compress.transfer import fingerprint
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.models.structure import head_size

    optuna = _optuna()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    teacher = CrossEncoder.from_pretrained(teacher_dir)
    teacher.eval()
    space = space.resolved(teacher.model.config, teacher.card.max_length)
    size = head_size(teacher.model)
    bench = _Bench(teacher, splits, config, out, log)
    url = storage_url(config, out)
    setup = {"space": json.loads(json.dumps(asdict(space))), "teacher_sha1": fingerprint(teacher),
             "dataset": splits["valid"].name.split(":")[0], **{k: getattr(config, k) for k in PROTOCOL_KEYS}}
    with _locked(_lock_path(url, out)):
        study = open_study(url, config.study_name, heartbeat=workers_safe)
        _check_setup(study, setup, url)
        if "teacher_ndcg" not in study.user_attrs:
            log("validating the teacher ...")
            study.set_user_attr("teacher_ndcg", bench.ndcg(teacher))
        bench.load_transfer()
    teacher_ndcg = study.user_attrs["teacher_ndcg"]
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    left = config.n_trials - done
    log(f"study {config.study_name!r} in {url}: {done} trials done, {max(left, 0)} to go "
        f"(teacher NDCG@10 {teacher_ndcg:.4f})")
    if left > 0:
        seed = config.seed + len(study.trials) + (os.getpid() if workers_safe else 0)
        study.sampler = _sampler(config, seed % 2**31)
        objective = _objective(study, bench, space, size, teacher_ndcg)
        study.optimize(objective, n_trials=left, timeout=config.timeout_s, gc_after_trial=True,
                       callbacks=[optuna.study.MaxTrialsCallback(config.n_trials, states=done_states)])
    if workers_safe:
        return {"study": config.study_name, "storage": url, "trials": _counts(study)}
    return report(study, bench, space, out, url, log)


def _check_setup(study, setup: dict, url: str) -> None:
    """A resumed study must have been made with the same teacher, data, space and protocol."""
    old = study.user_attrs.get("setup")
    if old is None:
        study.set_user_attr("setup", setup)
        return
    for key in sorted(set(old) | set(setup)):
        if old.get(key) != setup.get(key):
            raise LeanrankError(f"study {study.study_name!r} in {url} was made with {key}={old.get(key)!r}, "
                                f"now {setup.get(key)!r}; use another --out / --storage / study name")


def _objective(study, bench: _Bench, space: SearchSpace, size: int, teacher_ndcg: float):
    optuna = _optuna()
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial):
        t0 = time.perf_counter()
        arch = arch_of(space.suggest(trial), space, size)
        trial.set_user_attr("arch", arch)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        key = arch_key(arch)
        for prev in study.get_trials(deepcopy=False, states=finished):
            if prev.number != trial.number and arch_key(prev.user_attrs.get("arch", {})) == key:
                for k in ("ndcg_step0", "pruned", "p99_ms"):
                    if k in prev.user_attrs:
                        trial.set_user_attr(k, prev.user_attrs[k])
                trial.set_user_attr("duplicate_of", prev.number)
                bench.log(f"trial {trial.number}: same architecture as trial {prev.number}")
                if prev.state == optuna.trial.TrialState.PRUNED:
                    raise optuna.TrialPruned(prev.user_attrs.get("pruned", "duplicate of a pruned trial"))
                return tuple(prev.values)
        model = build_float(bench.teacher, arch)
        zero = bench.ndcg(model)
        trial.set_user_attr("ndcg_step0", zero)
        if zero < bench.config.prune_below * teacher_ndcg:
            why = f"zero-shot NDCG@10 {zero:.4f} < {bench.config.prune_below} x teacher {teacher_ndcg:.4f}"
            trial.set_user_attr("pruned", why)
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
            bench.log(f"trial {trial.number}: pruned ({why})")
            raise optuna.TrialPruned(why)
        if bench.config.finetune_steps:
            bench.finetune(model, arch)
        quantize_blocks(model, arch)
        ndcg = bench.ndcg(model) if bench.config.finetune_steps or set(arch["quant"]) != {"fp32"} else zero
        lat = bench.latency(model)
        trial.set_user_attr("p99_ms", lat["p99_ms"])
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        bench.log(f"trial {trial.number}: {_describe(arch)}: NDCG@10 {zero:.4f} -> {ndcg:.4f}, "
                  f"p50 {lat['p50_ms']:.1f} ms")
        return ndcg, lat["p50_ms"]

    return objective


def _describe(arch: dict) -> str:
    int8 = sum(q != "fp32" for q in arch["quant"])
    low = f" rank {arch['lowrank']}" if arch["lowrank"] < 1 else ""
    return (f"{arch['layers']}L h{arch['hidden']} {arch['heads']}heads ffn{arch['ffn']}{low} len{arch['max_length']} "
            f"{int8}/{arch['layers']} quantized")


def _counts(study) -> dict:
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def trial_records(study) -> list[dict]:
    """Every trial of the study as plain JSON (values only for COMPLETE ones)."""
    recs = []
    for t in study.trials:
        values = t.values if t.state.name == "COMPLETE" else None
        recs.append({"number": t.number, "state": t.state.name, "params": t.params,
                     "arch": t.user_attrs.get("arch"), "ndcg": values[0] if values else None,
                     "p50_ms": values[1] if values else None,
                     **{k: t.user_attrs.get(k) for k in ("p99_ms", "ndcg_step0", "pruned", "duplicate_of",
                                                         "seconds", "worker")}})
    return recs


def references(bench: _Bench, out: Path) -> dict:
    """The teacher and its peers as scorers: plain torch ``quantize_dynamic`` (every Linear), and
    ORT ``quantize_dynamic`` with its defaults when ``config.onnx_dir`` holds the exported teacher."""
    import torch

    teacher = bench.teacher
    peer = copy.deepcopy(teacher)
    peer.model = torch.ao.quantization.quantize_dynamic(peer.model, {torch.nn.Linear}, dtype=torch.qint8)
    refs = {"teacher-fp32": teacher, "peer-torch-quantize_dynamic": peer}
    if bench.config.onnx_dir:
        from leanrank.bench.quantize import _ort_peer
        from leanrank.runtime.loading import load_scorer

        dest = out / "ort-peer"
        if not (dest / "model.onnx").exists():
            _ort_peer(Path(bench.config.onnx_dir), dest)
        refs["peer-ort-quantize_dynamic"] = load_scorer(dest, threads=bench.config.threads)
    return refs


def report(study, bench: _Bench, space: SearchSpace, out: Path, url: str, log) -> dict:
    """Pareto front re-timed next to the references, ``pareto.json``, the chosen model in ``best/``."""
    from leanrank.core.io import write_json

    records = trial_records(study)
    complete = [r for r in records if r["state"] == "COMPLETE"]
    if not complete:
        write_json(out / "pareto.json", {"study": study.study_name, "storage": url, "counts": _counts(study),
                                         "front": [], "trials": records})
        raise LeanrankError(f"no complete trial in study {study.study_name!r} ({_counts(study)}); see "
                            f"{out / 'pareto.json'} (a lower prune_below or more trials)")
    front = [dict(p) for p in pareto_front(complete)]
    scorers = references(bench, out)
    refs = {name: {"name": name, "ndcg": study.user_attrs["teacher_ndcg"] if name == "teacher-fp32"
                   else bench.ndcg(s)} for name, s in scorers.items()}
    timed = {**scorers, **{f"trial-{p['number']}": bench.build(p["arch"], finetune=False) for p in front}}
    log(f"timing {len(front)} front points next to {len(refs)} references ({bench.config.latency_repeats} rounds) ...")
    p50s: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(bench.config.latency_repeats):
        for name, scorer in timed.items():
            p50s[name].append(bench.latency(scorer)["p50_ms"])
    for name, ref in refs.items():
        ref["p50_ms"] = statistics.median(p50s[name])
    for p in front:
        p["p50_ms_search"] = p["p50_ms"]
        p["p50_ms"] = statistics.median(p50s[f"trial-{p['number']}"])
    dominating = [p["number"] for p in front if all(dominates(p, r) for r in refs.values())]
    result = {"study": study.study_name, "storage": url, "objectives": ["valid ndcg@10 (max)", "p50 ms (min)"],
              "latency_protocol": {"lists": len(bench.lists), "batch_size": bench.config.batch_size,
                                   "rounds": bench.config.latency_repeats,
                                   "what": "one validation query's rerank candidates per call; median of rounds",
                                   "front": "p50_ms re-timed next to the references; p50_ms_search from the study"},
              "teacher_ndcg": study.user_attrs["teacher_ndcg"], "counts": _counts(study),
              "references": list(refs.values()), "front": front, "dominating_every_reference": dominating,
              "trials": records, "space": json.loads(json.dumps(asdict(space))), "config": asdict(bench.config)}
    write_json(out / "pareto.json", result)
    log(f"pareto front: {len(front)} of {len(complete)} complete trials; dominating every reference: "
        f"{dominating or 'none'}")
    c = bench.config
    pool = front if (c.max_p50_ms is not None or c.min_ndcg is not None or not dominating) else \
        [p for p in front if p["number"] in dominating]
    chosen = select(pool, c.max_p50_ms, c.min_ndcg)
    result["chosen"] = chosen
    result["best"] = str(save_best(study, bench, chosen, out, log))
    write_json(out / "pareto.json", result)
    return result


def save_best(study, bench: _Bench, chosen: dict, out: Path, log) -> Path:
    """Rebuild the chosen trial from its params into ``out/best`` (skipped when already there)."""
    from leanrank.models.card import ModelCard

    dest = out / "best"
    if (dest / "leanrank.json").exists():
        steps = ModelCard.load(dest, kind="cross-encoder").steps
        if steps and steps[-1].get("step") == "autotune" and steps[-1].get("trial") == chosen["number"] \
                and steps[-1].get("study") == study.study_name:
            return dest
    log(f"rebuilding trial {chosen['number']} ({_describe(chosen['arch'])}) into {dest} ...")
    bench.load_transfer()
    model = bench.build(chosen["arch"])
    ndcg = bench.ndcg(model)
    if abs(ndcg - chosen["ndcg"]) > 1e-3:
        log(f"note: the rebuilt model scores NDCG@10 {ndcg:.4f}, the trial {chosen['ndcg']:.4f}")
    model.card.add_step("autotune", study=study.study_name, trial=chosen["number"], params=chosen["params"],
                        arch=chosen["arch"], ndcg_trial=chosen["ndcg"], p50_ms=chosen["p50_ms"],
                        config=asdict(bench.config))
    model.card.metrics = {"valid_ndcg@10": ndcg}
    return model.save(dest)


def autotune_command(teacher: Path, out: Path, config_path: Path | None, dataset: str, data_dir, flags: dict,
                     workers_safe: bool = False, log=print) -> dict:
    """``leanrank autotune``: YAML sections ``space`` and ``search`` (flags win), validated first."""
    from leanrank.core.config import read_yaml_sections

    data = read_yaml_sections(config_path, ("space", "search"))
    space = SearchSpace.from_dict(data.get("space"))
    search = {**(data.get("search") or {}), **{k: v for k, v in flags.items() if v is not None}}
    if flags.get("max_p50_ms") is not None or flags.get("min_ndcg") is not None:
        search = {k: v for k, v in search.items() if k not in ("max_p50_ms", "min_ndcg") or flags.get(k) is not None}
    config = AutotuneConfig.from_dict(search)
    if not Path(teacher).is_dir():
        raise LeanrankError(f"{teacher}: teacher folder not found")
    from leanrank.data.registry import load_search_dataset

    splits = load_search_dataset(dataset, data_dir).split()
    result = autotune(teacher, splits, out, config, space, log=log, workers_safe=workers_safe)
    if "chosen" in result:
        c = result["chosen"]
        log(f"chosen: trial {c['number']} ({_describe(c['arch'])}), valid NDCG@10 {c['ndcg']:.4f}, "
            f"p50 {c['p50_ms']:.1f} ms; model: {result['best']}; front: {out / 'pareto.json'}")
    else:
        log(f"worker done: {result['trials']}")
    return result
