"""Importance scores for pruning: weight magnitude, first-order Taylor, activations.

Every function returns scores where *higher means more important*:

- ``magnitude``: Lp norm of a structure's weights (no data needed);
- ``taylor``: |Σ w·∂L/∂w| over a structure's weights, summed over calibration batches (the
  first-order estimate of the loss change when the structure is removed; Molchanov et al.);
- ``activation``: mean |activation| of FFN neurons / heads on real calibration pairs, 1 − cos(in, out)
  for whole layers (how much a layer changes the representation), |w|·‖x‖ for single weights (Wanda).

Calibration is a sequence of ``(query, title, target)`` with targets in [0, 1] (the loss for
Taylor is BCE on them; activations ignore the target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from leanrank.core.errors import LeanrankError
from leanrank.models.structure import encoder_layers, head_size

CRITERIA = ("magnitude", "taylor", "activation")
TARGETS = ("heads", "ffn", "layers", "unstructured")


def _ffn_params(layer) -> list[tuple[torch.Tensor, int]]:
    """(tensor, axis of the neuron index) for every tensor one FFN neuron owns."""
    inter, out = layer.intermediate.dense, layer.output.dense
    return [(inter.weight, 0), (inter.bias, 0), (out.weight, 1)]


def _head_params(layer) -> list[tuple[torch.Tensor, int]]:
    s, o = layer.attention.self, layer.attention.output.dense
    return [(s.query.weight, 0), (s.query.bias, 0), (s.key.weight, 0), (s.key.bias, 0),
            (s.value.weight, 0), (s.value.bias, 0), (o.weight, 1)]


def _per_unit(values: list[tuple[torch.Tensor, int]], group: int) -> torch.Tensor:
    """Sum ``values`` (per-element tensors with their unit axis) into units of ``group`` rows."""
    total = None
    for t, axis in values:
        t = t if t.dim() == 2 else t.unsqueeze(1)
        per_row = t.sum(dim=1 - axis) if t.dim() == 2 else t
        per_unit = per_row.view(-1, group).sum(dim=1)
        total = per_unit if total is None else total + per_unit
    return total


def unit_weights(model: nn.Module, target: str) -> list[list[tuple[torch.Tensor, int]]]:
    layers = encoder_layers(model)
    if target == "ffn":
        return [_ffn_params(layer) for layer in layers]
    if target == "heads":
        return [_head_params(layer) for layer in layers]
    return [[(p, 0) for p in layer.parameters()] for layer in layers]


def _group(model: nn.Module, target: str) -> int:
    return head_size(model) if target == "heads" else 1


def magnitude(model: nn.Module, target: str, p: int = 1) -> list[torch.Tensor]:
    """Lp norm of each unit's weights (``layers``: one number per layer)."""
    out = []
    for params in unit_weights(model, target):
        if target == "layers":
            out.append(sum(t.detach().abs().pow(p).sum() for t, _ in params).pow(1 / p).view(1))
        else:
            out.append(_per_unit([(t.detach().abs().pow(p), a) for t, a in params], _group(model, target)).pow(1 / p))
    return out


def _batches(calibration: Sequence, batch_size: int):
    for i in range(0, len(calibration), batch_size):
        yield calibration[i: i + batch_size]


def taylor(ce, target: str, calibration: Sequence[tuple[str, str, float]], batch_size: int = 16) -> list[torch.Tensor]:
    """|Σ w·g| per unit and batch, summed over batches."""
    model = ce.model
    was_training = model.training
    model.eval()          # no dropout: the estimate is about the deployed function
    totals: list[torch.Tensor] | None = None
    try:
        for batch in _batches(list(calibration), batch_size):
            model.zero_grad(set_to_none=True)
            feats = ce.tokenize([b[0] for b in batch], [b[1] for b in batch])
            targets = torch.tensor([float(b[2]) for b in batch], device=ce.device)
            F.binary_cross_entropy_with_logits(ce(**feats).float(), targets).backward()
            scores = []
            for params in unit_weights(model, target):
                prods = [((t.detach() * t.grad) if t.grad is not None else torch.zeros_like(t), a) for t, a in params]
                if target == "layers":
                    scores.append(sum(x.sum() for x, _ in prods).abs().view(1))
                else:
                    scores.append(_per_unit(prods, _group(model, target)).abs())
            totals = scores if totals is None else [a + b for a, b in zip(totals, scores)]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return totals


@torch.no_grad()
def activation(ce, target: str, calibration: Sequence[tuple[str, ...]], batch_size: int = 16) -> list[torch.Tensor]:
    """Mean |activation| per FFN neuron / head over real (non-padding) tokens; 1 − cos per layer."""
    model, layers = ce.model, encoder_layers(ce.model)
    size = head_size(model)
    sums = [None] * len(layers)
    state = {"mask": None, "tokens": 0}

    def tokens(x):                                   # (B, T, D) → (N, D) for non-padding tokens
        return x[state["mask"]]

    def ffn_hook(i):
        def hook(_m, _inp, out):
            v = tokens(out).abs().sum(0)
            sums[i] = v if sums[i] is None else sums[i] + v
        return hook

    def head_hook(i):
        def hook(_m, inp):
            x = tokens(inp[0])
            v = x.view(x.shape[0], -1, size).norm(dim=-1).sum(0)
            sums[i] = v if sums[i] is None else sums[i] + v
        return hook

    def layer_hook(i):
        def hook(_m, args, kwargs, out):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = out[0] if isinstance(out, tuple) else out
            v = (1 - F.cosine_similarity(tokens(hidden_in), tokens(hidden_out), dim=-1)).sum().view(1)
            sums[i] = v if sums[i] is None else sums[i] + v
        return hook

    handles = []
    for i, layer in enumerate(layers):
        if target == "ffn":
            handles.append(layer.intermediate.register_forward_hook(ffn_hook(i)))
        elif target == "heads":
            handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(i)))
        else:
            handles.append(layer.register_forward_hook(layer_hook(i), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(list(calibration), batch_size):
            feats = ce.tokenize([b[0] for b in batch], [b[1] for b in batch])
            state["mask"] = feats["attention_mask"].bool()
            state["tokens"] += int(state["mask"].sum())
            ce(**feats)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [s / max(state["tokens"], 1) for s in sums]


def input_grams(ce, linears: dict[str, nn.Linear], calibration: Sequence[tuple[str, ...]],
                batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Σ xxᵀ (in × in, float64) of each Linear's inputs over the non-padding tokens of ``calibration``."""
    if not calibration:
        raise LeanrankError("activation-aware factorization needs calibration pairs")
    model = ce.model
    grams = {n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for n, m in linears.items()}
    state = {"mask": None}

    def pre(name):
        def hook(_m, inp):
            x = inp[0][state["mask"]].double().cpu()
            grams[name] += x.T @ x
        return hook

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(pre(n)) for n, m in linears.items()]
    try:
        with torch.no_grad():
            for batch in _batches(list(calibration), batch_size):
                feats = ce.tokenize([b[0] for b in batch], [b[1] for b in batch])
                state["mask"] = feats["attention_mask"].bool()
                ce(**feats)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return grams


# ---------------------------------------------------------------------------- single weights
def weight_scores(ce, linears: dict[str, nn.Linear], criterion: str, calibration: Sequence = (),
                  batch_size: int = 16, p: int = 1) -> dict[str, torch.Tensor]:
    """Per-weight importance for unstructured pruning (same shape as each weight)."""
    if criterion == "magnitude":
        return {n: m.weight.detach().abs().pow(p) for n, m in linears.items()}
    model = ce.model
    sums = {n: torch.zeros_like(m.weight) for n, m in linears.items()}
    was_training = model.training
    model.eval()
    handles = []
    try:
        if criterion == "activation":
            norms = {n: torch.zeros(m.in_features, device=m.weight.device) for n, m in linears.items()}
            state = {"mask": None}

            def pre(name):
                def hook(_m, inp):
                    norms[name] += inp[0][state["mask"]].float().pow(2).sum(0)
                return hook

            handles = [m.register_forward_pre_hook(pre(n)) for n, m in linears.items()]
            with torch.no_grad():
                for batch in _batches(list(calibration), batch_size):
                    feats = ce.tokenize([b[0] for b in batch], [b[1] for b in batch])
                    state["mask"] = feats["attention_mask"].bool()
                    ce(**feats)
            return {n: m.weight.detach().abs() * norms[n].sqrt().unsqueeze(0) for n, m in linears.items()}
        for batch in _batches(list(calibration), batch_size):
            model.zero_grad(set_to_none=True)
            feats = ce.tokenize([b[0] for b in batch], [b[1] for b in batch])
            targets = torch.tensor([float(b[2]) for b in batch], device=ce.device)
            F.binary_cross_entropy_with_logits(ce(**feats).float(), targets).backward()
            for n, m in linears.items():
                if m.weight.grad is not None:
                    sums[n] += (m.weight.detach() * m.weight.grad).abs()
        return sums
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
