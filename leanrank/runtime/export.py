"""Export a cross-encoder to ONNX and quantize the graph with ONNX Runtime — every result gated
by parity on real pairs before anything is written.

>>> export_onnx(teacher, "runs/teacher-onnx", parity_pairs)            # fp32 graph
>>> ort_quantize("runs/teacher-onnx", "runs/teacher-ort-int8", parity_pairs)            # dynamic
>>> ort_quantize("runs/teacher-onnx", "runs/teacher-ort-qdq", parity_pairs, calibration=pairs)

The exporter is ``torch.onnx.export(..., dynamo=True)`` with dynamic batch and sequence axes
(the legacy TorchScript exporter gives a silently wrong graph with transformers 5). A folder
holds ``model.onnx``, the tokenizer, ``config.json`` and ``leanrank.json`` (lineage + parity).
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leanrank.core.errors import LeanrankError, require
from leanrank.core.modules import block_of
from leanrank.models.card import ModelCard
from leanrank.runtime.ort import ONNX_FILE, OrtScorer
from leanrank.runtime.parity import check_parity

Pairs = Sequence[tuple[str, str]]


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).logits.squeeze(-1)


def _split(pairs: Pairs) -> tuple[list[str], list[str]]:
    if not pairs:
        raise LeanrankError("parity needs real (query, title) pairs; got none")
    return [q for q, _ in pairs], [t for _, t in pairs]


@contextlib.contextmanager
def _staged(out_dir: Path, overwrite: bool):
    """A temp folder next to ``out_dir`` to assemble the result in; renamed into place only when
    the block succeeds. An existing ``out_dir`` is refused before any work, unless ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise LeanrankError(f"{out_dir} exists; choose another --out or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def export_onnx(model, out_dir: str | Path, parity_pairs: Pairs, max_abs: float = 1e-3,
                min_spearman: float = 0.999, overwrite: bool = False, fuse: bool = True) -> dict:
    """Export a float ``CrossEncoder`` to ``out_dir``; returns the parity numbers and
    ``fused_attention_blocks``.

    ``fuse`` replaces each self-attention block by one ORT ``Attention`` node
    (:func:`leanrank.runtime.fuse.fuse_attention`; ~10% faster fp32 here, and ``ort_quantize``
    makes it ``QAttention``). The saved graph, fused or not, is the one checked against PyTorch."""
    require("onnx", "onnx==1.23.2")
    require("onnxscript", "onnxscript")
    from leanrank.compress.quantize import is_quantized

    if is_quantized(model.card):
        raise LeanrankError("export the float model; quantize the ONNX graph with ort_quantize instead")
    queries, titles = _split(parity_pairs)
    model.model.eval()
    sample = model.tokenize(queries[:4] * 2, titles[:4] * 2)
    sample = {k: sample[k].cpu() for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=4096)
    dynamic = {k: {0: batch, 1: seq} for k in sample}
    wrapper = _Logits(copy.deepcopy(model.model).cpu().float()).eval()
    with _staged(Path(out_dir), overwrite) as tmp:
        path = tmp / ONNX_FILE
        program = torch.onnx.export(wrapper, (), kwargs=sample, dynamo=True, dynamic_shapes=dynamic,
                                    input_names=list(sample), output_names=["logits"], verbose=False)
        program.save(str(path))
        fused = _fuse(path, model.model.config) if fuse else 0
        card = copy.deepcopy(model.card)
        model.tokenizer.save_pretrained(tmp)
        model.model.config.save_pretrained(tmp)
        card.save(tmp)
        reference = model.score(queries, titles, batch_size=32)
        scores = OrtScorer(tmp).score(queries, titles)
        result = check_parity(reference, scores, "the exported ONNX graph", max_abs, min_spearman)
        card.add_step("export", format="onnx", exporter="torch.onnx.export(dynamo=True)",
                      opset=_opset(path), fused_attention_blocks=fused, parity_vs_torch=result)
        card.save(tmp)
    return {**result, "fused_attention_blocks": fused}


def _fuse(path: Path, config) -> int:
    """Fuse the attention blocks of the graph at ``path`` in place; returns how many were fused."""
    import onnx

    from leanrank.runtime.fuse import fuse_attention

    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    graph, fused = fuse_attention(onnx.load(str(path)), head_size)
    if fused:
        onnx.save(graph, str(path))
    return fused


def _has_fused_attention(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type == "Attention" and n.domain == "com.microsoft" for n in model.graph.node)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def linear_module_of(node) -> str | None:
    """The torch module path (``bert.encoder.layer.0.attention.self.query``) a node came from,
    read from the dynamo exporter's ``namespace`` metadata."""
    for prop in node.metadata_props:
        if prop.key == "namespace":
            parts = [p.split(":")[0].strip() for p in prop.value.split("/")]
            linears = [p for p, full in zip(parts, prop.value.split("/")) if "Linear" in full]
            if linears:
                return re.sub(r"^m\.", "", linears[-1])
    return None


def matmul_blocks(onnx_path: str | Path) -> dict[str, str]:
    """MatMul/Gemm/Attention node name → block (``layer.3``, ``classifier``...) of the Linear it computes."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    out = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Attention"):
            module = linear_module_of(node)
            if module is not None:
                out[node.name] = "classifier" if module.endswith("classifier") else block_of(module)
    return out


def strip_value_info(src: Path, dst: Path) -> Path:
    """Copy of an ONNX graph without ``value_info``: stale shapes there break ORT's quantizer."""
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def dynamic_int8(plain: Path, out: Path, per_channel: bool = True, reduce_range: bool = False,
                 nodes_to_exclude: Sequence[str] = ()) -> None:
    """ORT dynamic int8 (MatMulInteger; a fused Attention node becomes QAttention) of a graph
    passed through :func:`strip_value_info`; the rest stays float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(plain), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                     reduce_range=reduce_range, nodes_to_exclude=list(nodes_to_exclude),
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def ort_quantize(src_dir: str | Path, out_dir: str | Path, parity_pairs: Pairs, *,
                 calibration: Pairs = (), method: str = "minmax", per_channel: bool = True,
                 reduce_range: bool = False, exclude_blocks: Sequence[str] = ("classifier",),
                 min_spearman: float = 0.98, overwrite: bool = False) -> dict:
    """ORT int8 of an exported folder: dynamic (MatMulInteger) without ``calibration``, static QDQ
    with it (``method``: minmax, percentile or entropy). Blocks in ``exclude_blocks`` stay float
    (the mixed-precision plan). Parity is checked against the float graph on real pairs."""
    require("onnx", "onnx==1.23.2")
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src_dir = Path(src_dir)
    src = src_dir / ONNX_FILE
    if not src.exists():
        raise LeanrankError(f"{src_dir}: no {ONNX_FILE}; run `leanrank export` first")
    queries, titles = _split(parity_pairs)
    if calibration and _has_fused_attention(src):
        # ORT's calibrator cannot type the tensors after a contrib Attention node, so ranges go
        # missing downstream (seen on the MiniLM teacher: "Histogram has not been collected")
        raise LeanrankError(f"{src_dir} has fused attention; static (calibrated) int8 needs the plain graph: "
                            "export with `leanrank export --no-fuse` (dynamic int8 works on either)")
    blocks = matmul_blocks(src)
    exclude = [n for n, b in blocks.items() if b in set(exclude_blocks)]
    card = ModelCard.load(src_dir, kind="cross-encoder")
    with _staged(Path(out_dir), overwrite) as stage, tempfile.TemporaryDirectory() as scratch:
        plain = strip_value_info(src, Path(scratch) / "float.onnx")
        out = stage / ONNX_FILE
        if calibration:
            methods = {"minmax", "percentile", "entropy"}
            if method not in methods:
                raise LeanrankError(f"method must be one of {', '.join(sorted(methods))}, got {method!r}")
            reader = _CalibrationReader(src_dir, calibration)
            quantize_static(str(plain), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, op_types_to_quantize=["MatMul", "Gemm"],
                            calibrate_method=_calibrate_method(method),
                            extra_options={"CalibTensorRangeSymmetric": False,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT})
        else:
            dynamic_int8(plain, out, per_channel=per_channel, reduce_range=reduce_range, nodes_to_exclude=exclude)
        for f in [*src_dir.glob("tokenizer*"), src_dir / "config.json"]:
            if f.exists():
                shutil.copy(f, stage / f.name)
        card.save(stage)
        reference = OrtScorer(src_dir).score(queries, titles)
        scores = OrtScorer(stage).score(queries, titles)
        kind = "static QDQ int8" if calibration else "dynamic int8"
        result = check_parity(reference, scores, f"the ORT {kind} graph", None, min_spearman)
        card.add_step("quantize", scheme="ort-int8-static" if calibration else "ort-int8-dynamic",
                      config={"per_channel": per_channel, "reduce_range": reduce_range,
                              "method": method if calibration else None, "calibration_size": len(calibration),
                              "exclude_blocks": list(exclude_blocks), "excluded_nodes": len(exclude)},
                      parity_vs_float_graph=result)
        card.save(stage)
    return result


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


class _CalibrationReader:
    """Feeds tokenized calibration pairs to ORT's static quantizer, batch by batch."""

    def __init__(self, src_dir: Path, pairs: Pairs, batch_size: int = 32):
        from onnxruntime.quantization import CalibrationDataReader  # noqa: F401  (protocol only)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src_dir)
        card = ModelCard.load(src_dir, kind="cross-encoder")
        pairs = list(pairs)
        self.batches = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            # fixed length: ORT's histogram calibrators stack activations across batches
            enc = tok([q for q, _ in chunk], [t for _, t in chunk], truncation=True, max_length=card.max_length,
                      padding="max_length", return_tensors="np")
            self.batches.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
        self._it = iter(self.batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.batches)
