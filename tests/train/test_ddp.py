"""DDP under torchrun (2 CPU processes, gloo): every rank ends with the same trained weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

torch.set_num_threads(1)

SCRIPT = r'''
import hashlib, json, sys

import torch

torch.set_num_threads(1)
from transformers import BertConfig

from leanrank.models.cross_encoder import CrossEncoder
from leanrank.train.distributed import cleanup, init_distributed
from leanrank.train.examples import PairExample
from leanrank.train.fit import TrainConfig, fit


def digest(model):
    flat = torch.cat([p.detach().reshape(-1) for p in model.model.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


out = sys.argv[1]
info = init_distributed()
torch.manual_seed(0)
model = CrossEncoder.from_config(BertConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    vocab_size=30522, max_position_embeddings=64))
initial = digest(model)
titles = ["cordless drill kit", "paint roller cover", "led light bulb 4-pack", "area rug gray 5 ft.",
          "pull-down kitchen faucet chrome", "ceiling fan with light", "drill bit set 21-piece",
          "battery pack 20V MAX"]
examples = [PairExample(f"query {i % 4}", f"{titles[i % 8]} model {i}", float(i % 3 == 0), i % 4)
            for i in range(32)]
config = TrainConfig(batch_size=4, epochs=1, lr=1e-3, warmup_ratio=0.0, checkpoint_every=1000, seed=0)
record = fit(model, examples, config, f"{out}/run", validate=None, progress=False, device="cpu")
with open(f"{out}/rank{info.rank}.json", "w") as f:
    json.dump({"rank": info.rank, "world_size": info.world_size, "steps": record["steps"],
               "record_world_size": record["world_size"], "initial": initial, "final": digest(model)}, f)
cleanup(info)
'''


def test_ddp_two_cpu_ranks_end_with_identical_weights(torchrun, tmp_path: Path):
    proc = torchrun(SCRIPT, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == r["record_world_size"] == 2 for r in ranks)
    # 32 pairs / batch 4 = 8 micro-batches, split over 2 ranks: 4 optimizer steps each
    assert [r["steps"] for r in ranks] == [4, 4]
    assert ranks[0]["final"] == ranks[1]["final"]        # gradients were all-reduced
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] != ranks[0]["initial"]      # and training happened
    run = json.loads((tmp_path / "run" / "run.json").read_text())  # written by rank 0 only
    assert run["world_size"] == 2 and run["steps"] == 4 and run["train_pairs"] == 32
