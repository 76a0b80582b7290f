"""Mean seconds per SASRec training step (length-bucketed batches of 128, steps 6-40 of an epoch).

    LEANRANK_DATA=../shared/data python benchmarks/steps/seqrec_step_time.py DATASET THREADS fp32|bf16 \
        [full|sampled NEGATIVES]
"""

import contextlib
import os
import statistics
import sys
import time

import torch

from leanrank.core.batching import length_bucketed_batches
from leanrank.data.sequences import load_sequence_dataset
from leanrank.train.rec import build_seqrec, train_examples

torch.set_num_threads(int(sys.argv[2]))
ds = load_sequence_dataset(sys.argv[1], os.environ.get("LEANRANK_DATA", "../shared/data"))
loss_flags = {"loss": sys.argv[4], "n_negatives": int(sys.argv[5])} if len(sys.argv) > 4 else {}
model = build_seqrec(ds, {"dropout": 0.5, **loss_flags}, attributes=True, log=lambda s: None)
examples = train_examples(ds, 50, "sasrec")
batches = length_bucketed_batches([len(e) for e in examples], 128, shuffle=True, seed=0)
optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
bf16 = sys.argv[3] == "bf16"
seconds = []
for batch in batches[:40]:
    t = time.perf_counter()
    inputs, targets = model.training_batch([examples[i] for i in batch])
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        loss = model.loss(inputs, targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    seconds.append(time.perf_counter() - t)
step = statistics.mean(seconds[5:])
print(sys.argv[1:], "steps/epoch", len(batches), "mean step s", step, "epoch s", step * len(batches))
