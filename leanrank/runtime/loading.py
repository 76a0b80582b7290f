"""One way to open any leanrank model folder as a scorer: torch float, torch quantized or ONNX."""

from __future__ import annotations

from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.models.card import ModelCard
from leanrank.runtime.ort import ONNX_FILE


def load_scorer(path: str | Path, threads: int | None = None):
    """A scorer with ``score(queries, titles) -> np.ndarray`` for the folder at ``path``:
    ``OrtScorer`` when it holds ``model.onnx``, an ``InductorScorer`` for int8-inductor folders,
    a quantized ``CrossEncoder`` when its
    ``leanrank.json`` records a quantize step, else a float ``CrossEncoder``.

    >>> load_scorer("runs/teacher-ort-int8").score(["drill"], ["DeWalt cordless drill"])
    """
    path = Path(path)
    if not path.is_dir():
        raise LeanrankError(f"{path}: model directory not found")
    if (path / ONNX_FILE).exists():
        from leanrank.runtime.ort import OrtScorer

        return OrtScorer(path, threads=threads)
    from leanrank.compress.quantize import is_quantized, load_quantized
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.runtime.inductor import is_inductor, load_inductor

    card = ModelCard.load(path, kind="cross-encoder")
    if is_inductor(card):
        return load_inductor(path)
    if is_quantized(card):
        return load_quantized(path)
    return CrossEncoder.from_pretrained(path)
