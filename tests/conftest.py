"""Shared fixtures: a tiny random-init cross-encoder (fast on one CPU thread) and a tiny catalog."""

from __future__ import annotations

import pytest

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=30522, max_position_embeddings=64)


@pytest.fixture
def tiny_cross_encoder():
    """A factory: ``tiny_cross_encoder(seed=0, **bert_overrides)`` → a fresh, seeded CrossEncoder.

    Random weights on a 2-layer, 32-wide BERT (dropout 0.1 unless overridden); the tokenizer is
    the packaged MiniLM one. The same seed and overrides always give the same weights.
    """
    import torch
    from transformers import BertConfig

    from leanrank.models.cross_encoder import CrossEncoder

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return CrossEncoder.from_config(BertConfig(**{**TINY_BERT, **overrides}))

    return make


@pytest.fixture(scope="session")
def tiny_search():
    """A small synthetic search catalog split by query: {"train", "valid", "test"} SearchDatasets."""
    from leanrank.data.synthetic import SyntheticConfig, make_catalog

    cat = make_catalog(SyntheticConfig(n_products=300, n_queries=80, judged_per_query=6, n_users=10))
    return cat.search.split()


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (tests share 2 CPUs), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(script_text)``: run a script under ``torch.distributed.run`` with 2 CPU ranks
    (gloo, one thread each, free loopback port) and ``tmp_path`` as its only argument."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    def run(script: str, timeout: int = 240) -> subprocess.CompletedProcess:
        path = tmp_path / "ddp_script.py"
        path.write_text(script)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("WORLD_SIZE", None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(port), str(path), str(tmp_path)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=Path(__file__).resolve().parents[1])

    return run
