"""distill under torchrun (2 CPU processes, gloo): both ranks end with the same student."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = r'''
import hashlib, json, random, sys

import numpy as np
import torch

torch.set_num_threads(1)
from transformers import BertConfig

from leanrank.compress.distill import DistillConfig, distill
from leanrank.compress.students import StudentConfig, make_student
from leanrank.compress.transfer import CandidateList, TransferSet
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.train.distributed import cleanup, init_distributed


def digest(model):
    flat = torch.cat([p.detach().reshape(-1) for p in model.model.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


out = sys.argv[1]
info = init_distributed()
torch.manual_seed(0)
teacher = CrossEncoder.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64, max_position_embeddings=64))
words = "drill paint roller bulb hose screw vac saw lamp fan".split()
rng = random.Random(0)
lists = []
for i in range(6):
    titles = [" ".join(rng.sample(words, 3)) for _ in range(6)]
    lists.append(CandidateList(f"q {i}", [str(j) for j in range(6)], titles, np.zeros(6, np.float32),
                               np.zeros(6, bool), teacher.score([f"q {i}"] * 6, titles).astype(np.float32)))
student = make_student(teacher, StudentConfig(num_layers=1, hidden_size=16))
initial = digest(student)
config = DistillConfig(steps=3, queries_per_batch=2, list_size=4, hidden=1.0, lr=1e-3)
record = distill(teacher, student, TransferSet(lists, {}), config, f"{out}/run", progress=False, device="cpu")
with open(f"{out}/rank{info.rank}.json", "w") as f:
    json.dump({"rank": info.rank, "world_size": record["world_size"], "steps": record["steps"],
               "pairs": record["train_pairs"], "initial": initial, "final": digest(student)}, f)
cleanup(info)
'''


def test_two_ranks_end_with_identical_students(torchrun, tmp_path: Path):
    proc = torchrun(SCRIPT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["steps"] == 3 for r in ranks)
    assert ranks[0]["pairs"] == 3 * 2 * 4 * 2                   # both ranks' batches counted
    assert ranks[0]["final"] == ranks[1]["final"] != ranks[0]["initial"]
