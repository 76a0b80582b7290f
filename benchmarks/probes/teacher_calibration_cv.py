"""Probe: Platt vs isotonic label map for the teacher's RMSE, by 5-fold cross-validation on the
validation split's judged pairs (folds by crc32 of the query). Writes teacher-calibration-cv.json.

    HF_HUB_OFFLINE=1 python benchmarks/probes/teacher_calibration_cv.py runs/teacher-homedepot-3/model
"""
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from leanrank.data.registry import load_search_dataset
from leanrank.models.card import label_map
from leanrank.models.cross_encoder import CrossEncoder
from leanrank.train.calibrate import fit_calibration

torch.set_num_threads(2)
model_dir = sys.argv[1]
valid = load_search_dataset("homedepot", "/work/shared/data").split()["valid"]
js = valid.judgments
x = np.asarray(CrossEncoder.from_pretrained(model_dir).score([j.query for j in js],
               [valid.titles[j.product_id] for j in js], batch_size=64), dtype=np.float64)
y = np.array([j.label for j in js])
fold = np.array([zlib.crc32(j.query.encode()) % 5 for j in js])
out = {"command": f"python benchmarks/probes/teacher_calibration_cv.py {model_dir}", "pairs": len(js), "folds": {}}
for method in ("platt", "isotonic"):
    rmse = []
    for f in range(5):
        tr, te = fold != f, fold == f
        c = fit_calibration(x[tr], y[tr], 1.0, 3.0, method=method)
        p = label_map(c, x[te], 1.0, 3.0)
        rmse.append(round(float(np.sqrt(np.mean((p - y[te]) ** 2))), 4))
    out["folds"][method] = {"rmse": rmse, "mean": round(float(np.mean(rmse)), 4)}
print(json.dumps(out["folds"]))
Path("benchmarks/probes/teacher-calibration-cv.json").write_text(json.dumps(out, indent=2) + "\n")
