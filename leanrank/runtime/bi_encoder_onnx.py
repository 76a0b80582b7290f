"""The bi-encoder (mean pooling + L2 norm included) as an ONNX Runtime graph, for serving: one
short query through ORT on one thread costs a fraction of the torch call, and its thread count
is its own (torch's is process-wide and shared with the reranker).

>>> folder = export_bi_encoder(BiEncoder.from_pretrained(), "runs/serve/encoder-onnx", texts)
>>> OrtBiEncoder(folder, threads=1).encode(["cordless drill"]).shape
(1, 384)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leanrank.core.batching import length_bucketed_batches
from leanrank.core.errors import LeanrankError, require
from leanrank.core.io import weights_digest, write_json
from leanrank.runtime.ort import ONNX_FILE, session

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Pooled(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


class OrtBiEncoder:
    """``encode(texts) -> unit vectors`` like :class:`leanrank.models.bi_encoder.BiEncoder`, on ORT."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        from transformers import AutoTokenizer

        self.directory = Path(directory)
        if not (self.directory / ONNX_FILE).exists():
            raise LeanrankError(f"{self.directory}: no {ONNX_FILE}")
        meta = _read_meta(self.directory)
        self.max_length, self.dim = int(meta["max_length"]), int(meta["dim"])
        self.session = session(self.directory / ONNX_FILE, threads)
        self._bulk = None          # a session on every thread, for catalog-sized inputs
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        self.source = str(self.directory)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        run = self.session.run
        if len(texts) > 4 * batch_size:           # a catalog, not a query: use all cores
            if self._bulk is None:
                self._bulk = session(self.directory / ONNX_FILE, None)
            run = self._bulk.run
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx in length_bucketed_batches([len(t) for t in texts], batch_size):
            enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="np")
            feeds = {k: np.asarray(enc[k], dtype=np.int64) for k in self.input_names}
            if "token_type_ids" in self.input_names and "token_type_ids" not in enc:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            out[idx] = run(None, feeds)[0]
        return out


def _read_meta(directory: Path) -> dict:
    import json

    path = directory / "bi_encoder.json"
    if not path.exists():
        raise LeanrankError(f"{directory}: no bi_encoder.json (write the folder with export_bi_encoder)")
    return json.loads(path.read_text())


def export_bi_encoder(encoder, out_dir: str | Path, parity_texts: Sequence[str], max_abs: float = 1e-4,
                      fuse: bool = True) -> Path:
    """Export ``encoder`` (a torch ``BiEncoder``) to ``out_dir`` and check every parity text's
    vector against torch (max abs difference ≤ ``max_abs``); a failing graph is not kept."""
    require("onnx", "onnx==1.23.2")
    require("onnxscript", "onnxscript")
    from leanrank.runtime.export import _fuse, _staged

    if not parity_texts:
        raise LeanrankError("bi-encoder export needs parity texts")
    encoder.model.eval()
    sample = encoder.tokenizer(list(parity_texts[:4]) * 2, truncation=True, max_length=encoder.max_length,
                               padding=True, return_tensors="pt")
    sample = {k: sample[k] if k in sample else torch.zeros_like(sample["input_ids"]) for k in INPUTS}
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=4096)
    with _staged(Path(out_dir), overwrite=True) as tmp:
        program = torch.onnx.export(_Pooled(encoder).cpu().float().eval(), (), kwargs=sample, dynamo=True,
                                    dynamic_shapes={k: {0: batch, 1: seq} for k in sample},
                                    input_names=list(INPUTS), output_names=["sentence_embedding"], verbose=False)
        program.save(str(tmp / ONNX_FILE))
        fused = _fuse(tmp / ONNX_FILE, encoder.model.config) if fuse else 0
        encoder.tokenizer.save_pretrained(tmp)
        meta = {"max_length": encoder.max_length, "dim": int(encoder.model.config.hidden_size),
                "source": str(getattr(encoder, "source", "")), "fused_attention_blocks": fused}
        write_json(tmp / "bi_encoder.json", meta)
        reference = encoder.encode(list(parity_texts))
        got = OrtBiEncoder(tmp, threads=1).encode(list(parity_texts))
        diff = float(np.abs(reference - got).max())
        if not diff <= max_abs:
            raise LeanrankError(f"the exported bi-encoder fails parity: max |diff| {diff:.2e} > {max_abs:.0e}")
        write_json(tmp / "bi_encoder.json", {**meta, "parity_max_abs_diff": diff, "parity_texts": len(parity_texts)})
    return Path(out_dir)


def quantize_bi_encoder(src_dir: str | Path, out_dir: str | Path, parity_texts: Sequence[str],
                        min_cosine: float = 0.98) -> Path:
    """ORT dynamic int8 (per-channel weights, MatMulInteger/QAttention) of an exported bi-encoder
    folder; every parity text's int8 vector must keep cosine ≥ ``min_cosine`` with the float one,
    or the folder is not kept. Queries and catalog must then both be encoded by the int8 graph."""
    require("onnx", "onnx==1.23.2")
    import shutil
    import tempfile

    from leanrank.runtime.export import _staged, dynamic_int8, strip_value_info

    src_dir = Path(src_dir)
    meta = {**_read_meta(src_dir), "int8": "ort-dynamic-per-channel", "float_source": str(src_dir)}
    if not parity_texts:
        raise LeanrankError("bi-encoder quantization needs parity texts")
    with _staged(Path(out_dir), overwrite=True) as tmp, tempfile.TemporaryDirectory() as scratch:
        dynamic_int8(strip_value_info(src_dir / ONNX_FILE, Path(scratch) / "float.onnx"), tmp / ONNX_FILE)
        for f in src_dir.iterdir():
            if f.name not in (ONNX_FILE, "bi_encoder.json") and f.is_file():
                shutil.copy(f, tmp / f.name)
        write_json(tmp / "bi_encoder.json", meta)
        reference = OrtBiEncoder(src_dir, threads=1).encode(list(parity_texts))
        got = OrtBiEncoder(tmp, threads=1).encode(list(parity_texts))
        cos = (reference * got).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
        if not float(cos.min()) >= min_cosine:
            raise LeanrankError(f"the int8 bi-encoder fails parity: min cosine {cos.min():.4f} < {min_cosine}")
        write_json(tmp / "bi_encoder.json", {**meta, "parity_min_cosine": float(cos.min()),
                                             "parity_mean_cosine": float(cos.mean()),
                                             "parity_texts": len(parity_texts)})
    return Path(out_dir)


def onnx_bi_encoder(encoder, cache_root: str | Path, parity_texts: Sequence[str], threads: int | None = 1,
                    log=print, int8: bool = False) -> OrtBiEncoder:
    """An :class:`OrtBiEncoder` for ``encoder``, exported once into ``cache_root/<weights key>/``
    (and, with ``int8``, quantized once into ``<weights key>-int8/``)."""
    digest = weights_digest(getattr(encoder, "source", None), ("*.safetensors",))
    if digest is None:
        raise LeanrankError("the ONNX query encoder needs a bi-encoder loaded from a folder with safetensors")
    digest.update(f"|max_length={encoder.max_length}".encode())
    folder = Path(cache_root) / f"bi-encoder-{digest.hexdigest()[:16]}"
    if not (folder / "bi_encoder.json").exists():
        log(f"exporting the query encoder to ONNX ({folder}) ...")
        export_bi_encoder(encoder, folder, parity_texts)
    if int8:
        quantized = folder.with_name(folder.name + "-int8")
        if not (quantized / "bi_encoder.json").exists():
            log(f"quantizing the query encoder to int8 ({quantized}) ...")
            quantize_bi_encoder(folder, quantized, parity_texts)
        folder = quantized
    return OrtBiEncoder(folder, threads=threads)
