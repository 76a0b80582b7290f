"""``leanrank bench`` for sequential recommenders (folders whose leanrank.json says kind seqrec):
the teacher, every variant and the peers that apply to a SASRec-style model (plain
``torch.ao.quantization.quantize_dynamic`` of the teacher and bf16 autocast), in one process,
leave-one-out test targets, full ranking over the catalog with the history removed.

Speed is one recommendation request = one user's history scored against every item: users/s
at batch 256 and batch 1 (interleaved repeats after warm-up), p50/p99 ms per batch-1 request.
ONNX Runtime peers are not run: leanrank has no SeqRec exporter (said in the report).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from leanrank.core.errors import LeanrankError

COLUMNS = ("name", "role", "hr@10", "hr@10_ci95", "ndcg@10", "ndcg@10_ci95", "ndcg_vs_teacher", "ndcg@20",
           "users_per_s", "users_per_s_min", "users_per_s_max", "speedup", "users_per_s_b1", "p50_ms", "p99_ms",
           "size_mb", "size_ratio", "params", "flops_per_user", "quality_users")
REC_PEERS = ("torch-dynamic", "bf16-autocast")


class _RecEntry:
    def __init__(self, name: str, role: str, model, folder: Path | None, precision: str = "fp32", slow: bool = False):
        self.name, self.role, self.model, self.folder, self.precision, self.slow = name, role, model, folder, precision, slow
        self.extra: dict = {}

    def score(self, histories: Sequence[np.ndarray]):
        import torch

        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else torch.inference_mode()
        with torch.inference_mode(), ctx:
            return self.model.score_histories([np.asarray(h).tolist() for h in histories]).float()


def _ci(values: np.ndarray, seed: int = 0, n_boot: int = 1000) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _quality(entry: _RecEntry, histories, targets, n_items: int) -> dict:
    from leanrank.eval.fullrank import evaluate_next_item

    res = evaluate_next_item(entry.score, histories, targets, n_items)
    ranks = np.asarray(res["ranks"])
    hit10 = (ranks < 10).astype(float)
    ndcg10 = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {"hr@10": res["hr@10"], "hr@10_ci95": _ci(hit10), "ndcg@10": res["ndcg@10"], "ndcg@10_ci95": _ci(ndcg10),
            "ndcg@20": res["ndcg@20"], "quality_users": len(targets)}


def _flops(model, max_len: int) -> int | None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.score_histories([[1] * max_len])
        return int(counter.get_total_flops())
    except Exception:          # quantized kernels the counter does not know
        return None


def _weights(model) -> int:
    """Learned numbers held: every parameter, int8/int4 table buffer and packed int8 weight (frozen
    title vectors excluded), so quantized variants count the same weights as their float parent."""
    import torch

    total = 0
    for key, value in model.state_dict().items():
        if "title" in key:
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        total += sum(v.numel() for v in values if isinstance(v, torch.Tensor) and v.dtype != torch.int64)
    return total


def _speed(entries: list[_RecEntry], histories, repeats: int, log) -> None:
    from leanrank.eval.latency import query_latency

    big = list(histories[:256])
    rates = {e.name: [] for e in entries}
    rates_b1 = {e.name: [] for e in entries}
    for e in entries:
        e.score(big[:32])
    for r in range(repeats):
        log(f"throughput repeat {r + 1}/{repeats} ...")
        for e in entries:
            n = 64 if e.slow else len(big)
            t0 = time.perf_counter()
            e.score(big[:n])
            rates[e.name].append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for h in big[:32]:
                e.score([h])
            rates_b1[e.name].append(32 / (time.perf_counter() - t0))
    for e in entries:
        e.extra.update({"users_per_s": statistics.median(rates[e.name]), "users_per_s_min": min(rates[e.name]),
                        "users_per_s_max": max(rates[e.name]), "users_per_s_b1": statistics.median(rates_b1[e.name])})
        lat = query_latency(lambda _q, hs, s=e: s.score(hs), [("", [h]) for h in big[:100]])
        e.extra.update({"p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})


def bench_rec_models(models: Sequence[str | Path], *, dataset: str, data_dir, out_dir: Path,
                     teacher: str | Path | None = None, peers: Sequence[str] | bool = True, max_users: int | None = None,
                     slow_users: int = 2000, repeats: int = 3, command: str | None = None,
                     name: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Benchmark seqrec ``models`` (the first is the teacher unless ``teacher``) on the test targets."""
    import torch

    from leanrank.bench.html import write_report
    from leanrank.compress.item_table import load_seqrec, nbytes
    from leanrank.core.machine import machine_info, versions
    from leanrank.data.sequences import load_sequence_dataset

    t_start = time.perf_counter()
    paths = [Path(m) for m in models]
    teacher_dir = Path(teacher) if teacher else paths[0]
    peer_list = list(REC_PEERS) if peers is True else list(peers or [])
    unknown = sorted(set(peer_list) - set(REC_PEERS))
    if unknown:
        raise LeanrankError(f"unknown recommender peer {unknown[0]!r}; allowed: {', '.join(REC_PEERS)}")
    ds = load_sequence_dataset(dataset, data_dir)
    split = ds.split()
    histories, targets = split.test_histories(), np.asarray(split.test_targets)
    if max_users is not None and max_users < len(targets):
        pick = np.random.default_rng(0).choice(len(targets), max_users, replace=False)
        histories, targets = [histories[i] for i in pick], targets[pick]
    t_model = load_seqrec(teacher_dir)
    t_model.eval()
    entries = [_RecEntry("teacher-fp32", "teacher", t_model, teacher_dir)]
    if "torch-dynamic" in peer_list:
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(t_model), {torch.nn.Linear}, dtype=torch.qint8)
        entries.append(_RecEntry("peer-torch-quantize_dynamic", "peer", q, None))
    if "bf16-autocast" in peer_list:
        entries.append(_RecEntry("peer-bf16-autocast", "peer", t_model, None, precision="bf16", slow=True))
    taken = {e.name for e in entries}
    for p in paths:
        if p.resolve() == teacher_dir.resolve():
            continue
        label = p.name if p.name != "model" else p.parent.name
        while label in taken:
            label = f"{p.parent.name}-{label}"
        taken.add(label)
        model = load_seqrec(p)
        model.eval()
        entries.append(_RecEntry(label, "variant", model, p))

    rows = []
    for e in entries:
        log(f"quality: {e.name} ...")
        use = slice(0, slow_users) if e.slow else slice(None)
        row = {"name": e.name, "role": e.role, "backend": "torch",
               **_quality(e, histories[use], targets[use], ds.n_items)}
        if e.slow:
            row["teacher_ndcg@10_same_users"] = _quality(entries[0], histories[use], targets[use], ds.n_items)["ndcg@10"]
        rows.append(row)
    _speed(entries, histories, repeats, log)
    for e, row in zip(entries, rows):
        row.update(e.extra)
        model = e.model
        row["params"] = _weights(model)
        row["size_mb"] = round(nbytes(model) / 1e6, 3)
        if e.precision == "fp32" and e.name != "peer-torch-quantize_dynamic":      # the counter skips int8 kernels
            row["flops_per_user"] = _flops(model, model.config.max_len)
    teacher_row = rows[0]
    for row in rows:
        base = row.get("teacher_ndcg@10_same_users", teacher_row["ndcg@10"])
        row["ndcg_vs_teacher"] = row["ndcg@10"] / base if base else None
        row["speedup"] = row["users_per_s"] / teacher_row["users_per_s"]
        row["size_ratio"] = teacher_row["size_mb"] / row["size_mb"]
    doc = {
        "command": command or "leanrank bench " + " ".join(str(m) for m in models),
        "dataset": dataset, "split": "test (leave-one-out, last item)", "columns": list(COLUMNS),
        "protocol": {"ranking": f"full ranking over all {ds.n_items:,} items, history removed",
                     "users": len(targets), "slow_peer_users": slow_users,
                     "speed": f"{repeats} interleaved repeats after warm-up: batch 256 (64 for slow peers) and "
                              f"32 single-user requests; p50/p99 over 100 single-user requests; "
                              f"{torch.get_num_threads()} torch threads",
                     "size": "every parameter and buffer in memory (incl. frozen title vectors)",
                     "params": "learned numbers: parameters, quantized table rows and scales, packed int8 "
                               "weights (frozen title vectors excluded)",
                     "ci": "bootstrap 95% over users (1,000 resamples)",
                     "peers": "torch quantize_dynamic (Linear layers) and bf16 autocast of the teacher; no ONNX "
                              "Runtime peer: SeqRec has no ONNX exporter in leanrank"},
        "machine": machine_info(), "versions": versions(("leanrank", "torch", "numpy")), "rows": rows,
        "bar": {}, "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_report(doc, out_dir, x="users_per_s", y="ndcg@10", size="size_mb", stem=name)
    return doc
