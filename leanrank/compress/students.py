"""Students initialised from a teacher: fewer layers, fewer heads, a narrower FFN or a narrower
hidden size — the shape is config, not code.

Layers are kept evenly spaced (``spread``) or from the bottom (``first``); heads and FFN neurons
by weight magnitude; hidden dimensions (the residual stream, embeddings to classifier) by the sum
of |γ|+|β| over every LayerNorm, so the few large "outlier" dimensions BERTs rely on are kept.
The result is an ordinary Hugging Face model (uniform shapes, stock-loadable).

>>> student = make_student(teacher, StudentConfig(num_layers=2, hidden_size=256))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass

import torch

from leanrank.compress.importance import magnitude
from leanrank.core.errors import LeanrankError
from leanrank.models.cross_encoder import CrossEncoder, build_skeleton, keep_layers, load_state_strict
from leanrank.models.structure import encoder_layers, head_size, recorded_structure


@dataclass(frozen=True)
class StudentConfig:
    num_layers: int | None = 2          # None = the teacher's
    hidden_size: int | None = None      # None = the teacher's; must be a multiple of the head size
    intermediate_size: int | None = None
    num_heads: int | None = None        # default: hidden_size / head size
    layer_pick: str = "spread"

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "intermediate_size", "num_heads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise LeanrankError(f"student {name} must be >= 1, got {v}")
        if self.layer_pick not in ("spread", "first"):
            raise LeanrankError(f"layer_pick must be 'spread' or 'first', got {self.layer_pick!r}")


def make_student(teacher: CrossEncoder, config: StudentConfig) -> CrossEncoder:
    """A new CrossEncoder whose weights are slices of ``teacher``'s (the teacher is untouched)."""
    if recorded_structure(teacher.card.steps):
        raise LeanrankError("make a student from an unpruned, unfactorized teacher")
    hidden, heads, inter = check_shape(teacher.model.config, config)
    tcfg = teacher.model.config
    work = copy.deepcopy(teacher)
    kept_layers = list(range(tcfg.num_hidden_layers))
    if config.num_layers is not None:
        kept_layers = keep_layers(work.model, config.num_layers, config.layer_pick)
    layers = encoder_layers(work.model)
    head_ids = [_top(s, heads) for s in magnitude(work.model, "heads")]
    ffn_ids = [_top(s, inter) for s in magnitude(work.model, "ffn")]
    dims = _top(_layernorm_score(work.model), hidden)
    state = _slice_state(work.model.state_dict(), dims, head_ids, ffn_ids, head_size(teacher.model))
    new_cfg = copy.deepcopy(work.model.config)
    new_cfg.update({"hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": inter,
                    "num_hidden_layers": len(layers)})
    model = build_skeleton(new_cfg, None)
    load_state_strict(model, state, "student")
    card = copy.deepcopy(teacher.card)
    card.steps = list(card.steps)
    card.add_step("student", config=asdict(config), kept_layers=kept_layers,
                  shape={"layers": len(layers), "hidden": hidden, "heads": heads, "intermediate": inter})
    card.metrics = {}
    return CrossEncoder(model, teacher.tokenizer, card)


def check_shape(tcfg, config: StudentConfig) -> tuple[int, int, int]:
    """(hidden, heads, intermediate) of the student of a teacher with HF config ``tcfg``, or an
    error naming what does not fit (callers check before any expensive work)."""
    size = tcfg.hidden_size // tcfg.num_attention_heads
    hidden = config.hidden_size or tcfg.hidden_size
    heads = config.num_heads or hidden // size
    inter = config.intermediate_size or tcfg.intermediate_size
    if hidden > tcfg.hidden_size or inter > tcfg.intermediate_size or heads > tcfg.num_attention_heads:
        raise LeanrankError(f"a student cannot be wider than its teacher ({tcfg.hidden_size} hidden, "
                            f"{tcfg.num_attention_heads} heads, {tcfg.intermediate_size} FFN)")
    if heads * size != hidden:
        raise LeanrankError(f"hidden_size {hidden} must equal num_heads × head size ({heads} × {size}); "
                            f"use a multiple of {size}")
    if config.num_layers is not None and config.num_layers > tcfg.num_hidden_layers:
        raise LeanrankError(f"num_layers {config.num_layers} > the teacher's {tcfg.num_hidden_layers}")
    return hidden, heads, inter


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores.float(), k).indices).values


def _layernorm_score(model) -> torch.Tensor:
    total = None
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            s = m.weight.detach().abs() + m.bias.detach().abs()
            total = s if total is None else total + s
    if total is None:
        raise LeanrankError("no LayerNorm found: cannot rank hidden dimensions")
    return total


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def _slice_state(state: dict, dims, head_ids, ffn_ids, size: int) -> dict:
    """Slice every BERT-style tensor to the kept hidden dims / heads / FFN neurons."""
    out = {}
    for name, t in state.items():
        m = _LAYER.search(name)
        li = int(m.group(1)) if m else None
        heads = torch.cat([torch.arange(h * size, (h + 1) * size) for h in head_ids[li].tolist()]) if m else None
        ffn = ffn_ids[li] if m else None
        if name.endswith("position_ids"):
            out[name] = t
        elif "embeddings" in name and name.endswith("embeddings.weight"):
            out[name] = t[:, dims]
        elif "LayerNorm" in name:
            out[name] = t[dims]
        elif re.search(r"attention\.self\.(query|key|value)\.weight$", name):
            out[name] = t[heads][:, dims]
        elif re.search(r"attention\.self\.(query|key|value)\.bias$", name):
            out[name] = t[heads]
        elif name.endswith("attention.output.dense.weight"):
            out[name] = t[dims][:, heads]
        elif name.endswith("intermediate.dense.weight"):
            out[name] = t[ffn][:, dims]
        elif name.endswith("intermediate.dense.bias"):
            out[name] = t[ffn]
        elif m and name.endswith("output.dense.weight"):
            out[name] = t[dims][:, ffn]
        elif name.endswith(("output.dense.bias", "pooler.dense.bias")):
            out[name] = t[dims]
        elif name.endswith("pooler.dense.weight"):
            out[name] = t[dims][:, dims]
        elif name.endswith("classifier.weight"):
            out[name] = t[:, dims]
        elif name.endswith("classifier.bias"):
            out[name] = t
        else:
            raise LeanrankError(f"cannot slice {name}: students are made from BERT-style encoders")
        out[name] = out[name].clone().contiguous()
    return out
