"""ONNX Runtime scoring: the same ``score(queries, titles)`` as the torch CrossEncoder, with the
same tokenization (each text tokenized once, then cached) and length-bucketed batching, on an
explicit thread count.

>>> scorer = OrtScorer("runs/teacher-onnx")          # a folder written by export_onnx
>>> scorer.score(["cordless drill"], ["DeWalt 20V Cordless Drill Kit"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leanrank.core.batching import score_in_batches
from leanrank.core.errors import LeanrankError, require
from leanrank.models.card import ModelCard
from leanrank.models.pair_tokens import CachedPairTokenizer

ONNX_FILE = "model.onnx"


def session(model_path: str | Path, threads: int | None = None, optimization: str = "all"):
    """An ORT CPU (or CUDA, when present) session with graph optimisation and explicit threads."""
    ort = require("onnxruntime", "onnxruntime==1.31.1")
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise LeanrankError(f"optimization must be one of {', '.join(levels)}, got {optimization!r}")
    opts.graph_optimization_level = levels[optimization]
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(model_path), opts, providers=providers)


class OrtScorer:
    """Scores pairs with an ONNX cross-encoder folder (model.onnx + tokenizer + leanrank.json)."""

    def __init__(self, directory: str | Path, threads: int | None = None, batch_size: int = 32,
                 optimization: str = "all", onnx_file: str = ONNX_FILE):
        from transformers import AutoTokenizer

        self.directory = Path(directory)
        path = self.directory / onnx_file
        if not path.exists():
            raise LeanrankError(f"{self.directory}: no {onnx_file} (write one with `leanrank export`)")
        self.session = session(path, threads, optimization)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.card = ModelCard.load(self.directory, kind="cross-encoder")
        self.batch_size = batch_size
        self.pairs = CachedPairTokenizer(self.tokenizer, self.max_length)   # catalog titles repeat

    @property
    def max_length(self) -> int:
        return self.card.max_length

    def score(self, queries: Sequence[str], titles: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        def run_batch(qs, ts):
            enc = self.pairs(qs, ts)
            feeds = {k: enc[k] for k in self.input_names}
            return self.session.run(None, feeds)[0].reshape(-1)

        return score_in_batches(queries, titles, batch_size or self.batch_size, run_batch)

    def predict_labels(self, logits: np.ndarray) -> np.ndarray:
        """Logits → label scale (see ``ModelCard.predict_labels``)."""
        return self.card.predict_labels(logits)
