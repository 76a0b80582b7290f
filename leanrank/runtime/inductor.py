"""int8 cross-encoders compiled by ``torch.compile`` (Inductor) on x86 CPUs.

PT2E quantization (``torchao``'s ``X86InductorQuantizer``: int8 weights per channel, int8
activations per tensor with ranges fixed by calibration) followed by
``torch.compile`` with constant folding ("freezing"): Inductor's x86 int8 path lowers the
quantized Linears to oneDNN int8 ``qlinear`` kernels with the quantize/dequantize around them
folded in, which made it the fastest int8 path of ``leanrank`` on a CPU with AVX-512 VNNI
(``benchmarks/results/homedepot-quantize.md``).

On disk the folder holds what ``load_inductor`` needs to rebuild the same compiled model: every
Linear weight as int8 codes + per-row scales (symmetric, range ±127, so re-quantizing the
dequantized weights gives back the same codes), the other tensors in float, the tokenizer, the
calibration pairs and ``leanrank.json``. Compilation happens when the folder is opened (seconds
to a minute per distinct input shape on 2 CPUs; sequence lengths are padded to a multiple of
``seq_multiple`` to keep the number of shapes small). It runs on the CPU even where CUDA exists.

>>> scorer = quantize_inductor(CrossEncoder.from_pretrained("runs/teacher"), InductorInt8Config(),
...                            calibration=train.sample_pairs(512, seed=2))
>>> scorer.save("runs/teacher-int8-inductor")
>>> load_inductor("runs/teacher-int8-inductor").score(["drill"], ["DeWalt cordless drill"])
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leanrank.core.batching import score_in_batches
from leanrank.core.errors import LeanrankError, require

SCHEME = "int8-inductor"
CALIBRATION_FILE = "calibration.json"
WEIGHTS_FILE = "model.safetensors"
_CODES, _SCALES = ".weight_int8", ".weight_scale"


@dataclass(frozen=True)
class InductorInt8Config:
    """``calibration_pairs``: how many of the given pairs fix the activation ranges;
    ``seq_multiple``: inputs are padded to a multiple of it (fewer shapes to compile)."""

    calibration_pairs: int = 512
    seq_multiple: int = 8

    def __post_init__(self):
        if self.calibration_pairs < 1:
            raise LeanrankError(f"calibration_pairs must be >= 1, got {self.calibration_pairs}")
        if not 1 <= self.seq_multiple <= 512:
            raise LeanrankError(f"seq_multiple must be in 1..512, got {self.seq_multiple}")


class _Logits(nn.Module):
    """Positional inputs → one logit per pair (what torch.export traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits.reshape(-1)


def round_linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Put every Linear weight on its int8 grid in place (w = q·s, |q| ≤ 127, s per row) and
    return the codes and scales as a state-dict fragment (``<fqn>.weight_int8/_scale``)."""
    from leanrank.compress.qmodules import quantize_symmetric

    stored = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            q, s = quantize_symmetric(module.weight, 8)
            with torch.no_grad():
                module.weight.copy_(q.float() * s[:, None])
            stored[name + _CODES], stored[name + _SCALES] = q.contiguous(), s.contiguous()
    return stored


@contextlib.contextmanager
def _quiet():      # torchao's own log lines are silenced package-wide in leanrank/__init__.py
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _quantizer():
    require("torchao", "torchao==0.18.0")
    from torchao.quantization.pt2e import PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    base = xiq.get_default_x86_inductor_quantization_config()
    weight = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric,
                              ch_axis=0, is_dynamic=False,
                              observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12))
    config = type(base)(base.input_activation, base.output_activation, weight, base.bias, base.is_qat)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(config)
    return quantizer


class InductorScorer:
    """``score(queries, titles)`` with the compiled int8 model; same tokenization as CrossEncoder."""

    def __init__(self, cross_encoder, config: InductorInt8Config, calibration: Sequence[tuple[str, str]],
                 codes: dict[str, torch.Tensor]):
        self.card, self.tokenizer, self.config = cross_encoder.card, cross_encoder.tokenizer, config
        self.calibration = [tuple(p) for p in calibration][: config.calibration_pairs]
        if not self.calibration:
            raise LeanrankError("int8-inductor needs calibration pairs (e.g. 512 train pairs)")
        self._float = cross_encoder.model.cpu().eval()
        self._codes = codes
        self.pairs = cross_encoder._cached_pairs()
        self.batch_size = 32
        self._compiled = self._build()

    @property
    def max_length(self) -> int:
        return self.card.max_length

    def _inputs(self, queries, titles) -> tuple[torch.Tensor, ...]:
        enc = self.pairs(list(queries), list(titles))
        length = enc["input_ids"].shape[1]
        m = self.config.seq_multiple
        padded = min(max(self.max_length, length), -(-length // m) * m)
        out = []
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            v = torch.from_numpy(np.ascontiguousarray(enc[key]))
            if padded > length:
                v = torch.nn.functional.pad(v, (0, padded - length))
            out.append(v)
        return tuple(out)

    def _build(self):
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = _quantizer()
        example = self._inputs(*zip(*self.calibration[:32]))
        batch, seq = (torch.export.Dim("batch", min=1, max=4096),
                      torch.export.Dim("seq", min=2, max=self._float.config.max_position_embeddings))
        dims = {name: {0: batch, 1: seq} for name in ("input_ids", "attention_mask", "token_type_ids")}
        with _quiet(), torch.no_grad():
            graph = torch.export.export(_Logits(self._float), example, dynamic_shapes=dims).module()
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(0, len(self.calibration), 32):
                prepared(*self._inputs(*zip(*self.calibration[i:i + 32])))
            converted = convert_pt2e(prepared)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        return torch.compile(converted)

    @torch.inference_mode()
    def score(self, queries: Sequence[str], titles: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        def run_batch(qs, ts):
            with _quiet():
                return self._compiled(*self._inputs(qs, ts)).float().numpy().reshape(-1)

        try:
            return score_in_batches(queries, titles, batch_size or self.batch_size, run_batch)
        except Exception as exc:
            if "CppCompileError" in type(exc).__name__ or "InductorError" in type(exc).__name__:
                raise LeanrankError(f"torch.compile could not build the int8 kernels ({type(exc).__name__}): "
                                    "Inductor needs a C++ compiler (g++) on PATH") from exc
            raise

    def predict_labels(self, logits: np.ndarray) -> np.ndarray:
        return self.card.predict_labels(logits)

    def parameters(self):
        return self._float.parameters()

    def save(self, directory: str | Path) -> Path:
        """Write int8 codes + scales, float rest, tokenizer, calibration and card (temp, then rename)."""
        from safetensors.torch import save_file

        from leanrank.core.io import atomic_dir

        linear = {k[: -len(_CODES)] for k in self._codes if k.endswith(_CODES)}
        state = {k: v.contiguous() for k, v in self._float.state_dict().items()
                 if not (k.endswith(".weight") and k[: -len(".weight")] in linear)}
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            save_file({**state, **self._codes}, str(tmp / WEIGHTS_FILE), metadata={"format": "leanrank-int8-inductor"})
            self._float.config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / CALIBRATION_FILE).write_text(json.dumps([list(p) for p in self.calibration], ensure_ascii=False))
            self.card.save(tmp)
        return directory


def quantize_inductor(cross_encoder, config: InductorInt8Config, calibration: Sequence[tuple[str, str]]
                      ) -> InductorScorer:
    """Quantize a float CrossEncoder (in place: its Linear weights go onto the int8 grid) and
    compile it; the card records the step."""
    if not calibration:
        raise LeanrankError("int8-inductor needs calibration pairs (e.g. 512 train pairs)")
    codes = round_linear_weights(cross_encoder.model)
    before = sum(p.numel() * p.element_size() for p in cross_encoder.model.parameters())
    float_bytes = sum(c.numel() * 4 for k, c in codes.items() if k.endswith(_CODES))
    after = before - float_bytes + sum(c.numel() * c.element_size() for c in codes.values())
    cross_encoder.card.add_step("quantize", scheme=SCHEME, config=asdict(config), runtime="torch.compile/inductor",
                                linear_layers=len(codes) // 2, bytes_before=before, bytes_after=after)
    return InductorScorer(cross_encoder, config, calibration, codes)


def _inductor_step(card) -> dict | None:
    return next((s for s in getattr(card, "steps", []) if s.get("step") == "quantize" and s.get("scheme") == SCHEME),
                None)


def is_inductor(card) -> bool:
    return _inductor_step(card) is not None


def load_inductor(path: str | Path) -> InductorScorer:
    """Open a folder written by ``InductorScorer.save`` and compile it again."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from leanrank.models.card import ModelCard
    from leanrank.models.cross_encoder import CrossEncoder, load_state_strict

    path = Path(path)
    card = ModelCard.load(path, kind="cross-encoder")
    step = _inductor_step(card)
    if step is None or not (path / WEIGHTS_FILE).exists() or not (path / CALIBRATION_FILE).exists():
        raise LeanrankError(f"{path}: not an {SCHEME} model folder (needs leanrank.json, {WEIGHTS_FILE}, "
                            f"{CALIBRATION_FILE})")
    tensors = load_file(str(path / WEIGHTS_FILE))
    codes = {k: v for k, v in tensors.items() if k.endswith((_CODES, _SCALES))}
    state = {k: v for k, v in tensors.items() if k not in codes}
    for key in [k for k in codes if k.endswith(_CODES)]:
        prefix = key[: -len(_CODES)]
        state[prefix + ".weight"] = codes[key].float() * codes[prefix + _SCALES][:, None]
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    load_state_strict(model, state, path)
    calibration = json.loads((path / CALIBRATION_FILE).read_text())
    ce = CrossEncoder(model.eval(), AutoTokenizer.from_pretrained(path), card)
    try:
        config = InductorInt8Config(**step.get("config", {}))
    except TypeError as exc:
        raise LeanrankError(f"{path}: leanrank.json records an {SCHEME} config this version cannot read ({exc})") from exc
    return InductorScorer(ce, config, calibration, codes)
