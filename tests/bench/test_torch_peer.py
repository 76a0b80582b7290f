"""``leanrank.bench.quantize.torch_peer``: the torch ``quantize_dynamic`` peer the benchmarks share."""

from __future__ import annotations

import numpy as np
import torch

from leanrank.bench.quantize import torch_peer


def test_torch_peer_is_int8_on_disk_and_tracks_the_teacher(tiny_cross_encoder, tmp_path, one_thread):
    teacher = tiny_cross_encoder(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    peer = torch_peer(teacher, tmp_path / "work")
    assert (peer.name, peer.role, peer.backend, peer.rss_peer) == (
        "peer-torch-quantize_dynamic", "peer", "torch", "torch-dynamic")
    assert peer.scorer is not teacher and not any(
        isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in teacher.model.modules())   # teacher untouched
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in peer.scorer.model.modules())
    saved = peer.folder / "model.pt"
    fp32_bytes = sum(p.numel() * 4 for p in teacher.model.parameters())
    assert saved.is_file() and saved.stat().st_size < fp32_bytes
    queries = [f"query {i}" for i in range(16)]
    titles = [f"product title number {i * 7}" for i in range(16)]
    ref, got = teacher.score(queries, titles), peer.scorer.score(queries, titles)
    assert np.abs(ref - got).max() < 1e-2     # int8 weights: close to the teacher, not a different model
