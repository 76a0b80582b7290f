"""Peak resident memory of loading a model and scoring with it, measured in a fresh process
(one process per variant, so variants never inflate each other's numbers).

``python -m leanrank.eval.memory MODEL_DIR [--peer torch-dynamic]`` prints the peak RSS in MB.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

PAIRS = [("cordless drill", "DeWalt 20V MAX cordless drill driver kit with two batteries")] * 32


def peak_rss_mb(model_dir: str | Path, peer: str | None = None, threads: int = 2, timeout: int = 600) -> float:
    """Peak RSS (MB) of a child process that loads ``model_dir`` and scores 32 pairs twice."""
    cmd = [sys.executable, "-m", "leanrank.eval.memory", str(model_dir), "--threads", str(threads)]
    if peer:
        cmd += ["--peer", peer]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed for {model_dir}: {proc.stderr[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--peer", default=None, choices=[None, "torch-dynamic"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from leanrank.runtime.loading import load_scorer

    scorer = load_scorer(args.model_dir, threads=args.threads)
    if args.peer == "torch-dynamic":
        scorer.model = torch.ao.quantization.quantize_dynamic(scorer.model, {torch.nn.Linear}, dtype=torch.qint8)
    q, t = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    for _ in range(2):
        scorer.score(q, t)
    print(json.dumps({"peak_rss_mb": _vm_hwm_mb()}))


def _vm_hwm_mb() -> float:
    """This process's RSS high-water mark. ``/proc/self/status`` VmHWM is reset by exec, unlike
    ``ru_maxrss``, which a child started from a big parent inherits from the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    _main()
