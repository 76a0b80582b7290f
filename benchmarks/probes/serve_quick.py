"""Probe: one `leanrank serve` (single variant) on the Home Depot catalog, 40 warm-up + 400 searches at
concurrency 4 through `leanrank.bench.serve_loadtest.run_phase` (locust). Usage: VARIANT_DIR TAG [JSON overrides]."""
import json, sys
from pathlib import Path
from leanrank.bench.serve_loadtest import Server, server_config, run_phase, warm_up
from leanrank.data.registry import load_search_dataset
variant, tag = sys.argv[1], sys.argv[2]
over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
work = Path("runs/probe-serve/q") / tag
ds = load_search_dataset("homedepot", "/work/shared/data")
qs = ds.split()["test"].queries()
qf = Path("runs/probe-serve/queries.txt"); qf.write_text("\n".join(qs) + "\n")
cfg = server_config("v", variant, work, "homedepot", "/work/shared/data", 1000, 50, 8,
                    cache=Path("runs/serve-loadtest/cache"), dense_index=over.pop("dense_index", "fp16"))
for sec, vals in over.items():
    cfg[sec].update(vals)
with Server(cfg, work, log=lambda *_: None) as s:
    warm_up(s.url, qs[100:], n=40)
    r = run_phase(s.url, qf, work / "phase.json", 400, 90, 4, 0.1)
print(tag, r["qps"], r["p50_ms"], r["p99_ms"], json.dumps(r["server_timings_ms"])[:400])
