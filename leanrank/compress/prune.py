"""Pruning, one verb: ``prune_(model, config)``; structures are removed physically.

>>> from leanrank.compress.prune import PruneConfig, prune_
>>> report = prune_(ce, PruneConfig(target="ffn", amount=0.5, criterion="taylor", calibration=triples))
>>> report.params_before, report.params_after            # smaller Linear shapes, not masks
>>> ce.save("runs/ffn50")                                 # an ordinary HF folder (+ leanrank.json)

Targets: ``heads`` and ``ffn`` (per layer, ``scope="layer"``, or ranked across layers,
``scope="global"``), ``layers`` (whole encoder layers) and ``unstructured`` (single weights of the
encoder's Linear layers set to zero; ``CrossEncoder.save(sparse=True)`` stores them as values +
bit mask — smaller on disk, but no faster: dense kernels still multiply the zeros).
Criteria are in ``leanrank.compress.importance``. Gradual pruning (cubic schedule interleaved
with fine-tuning) is ``cubic_schedule`` + ``freeze_zeros_`` driven by a short loop (see the CLI).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from leanrank.compress import importance
from leanrank.core.errors import LeanrankError
from leanrank.models.structure import (
    encoder_layers,
    head_size,
    keep_heads,
    keep_neurons,
    set_encoder_layers,
    structure_of,
    sync_config,
)

SCOPES = ("layer", "global")


@dataclass(frozen=True)
class PruneConfig:
    """What to remove, how much, and by which importance criterion."""
    target: str = "ffn"                 # heads | ffn | layers | unstructured
    amount: float = 0.5                 # fraction of the target's units removed
    criterion: str = "magnitude"        # magnitude | taylor | activation
    scope: str = "layer"                # the same fraction in every layer, or ranked model-wide
    norm: int = 1                       # p of the Lp norm for ``magnitude``
    calibration: tuple[tuple[str, str, float], ...] = field(default=(), repr=False)
    batch_size: int = 16

    def __post_init__(self):
        if self.target not in importance.TARGETS:
            raise LeanrankError(f"target must be one of {', '.join(importance.TARGETS)}, got {self.target!r}")
        if self.criterion not in importance.CRITERIA:
            raise LeanrankError(f"criterion must be one of {', '.join(importance.CRITERIA)}, got {self.criterion!r}")
        if self.scope not in SCOPES:
            raise LeanrankError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if not 0.0 < self.amount < 1.0:
            raise LeanrankError(f"amount must be in (0, 1), got {self.amount}")
        if self.norm not in (1, 2):
            raise LeanrankError(f"norm must be 1 or 2, got {self.norm}")
        if self.criterion != "magnitude" and len(self.calibration) == 0:
            raise LeanrankError(f"the {self.criterion} criterion needs calibration=[(query, title, target), ...]")

    def record(self) -> dict:
        d = asdict(self)
        d["calibration"] = len(self.calibration)
        return d


@dataclass
class PruneReport:
    target: str
    criterion: str
    removed: dict                       # layer → removed unit ids (or weights count for unstructured)
    params_before: int
    params_after: int
    sparsity: float = 0.0               # unstructured: fraction of zeros in the pruned Linears
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        return {"target": self.target, "criterion": self.criterion, "params_before": self.params_before,
                "params_after": self.params_after, "sparsity": round(self.sparsity, 4)}


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    return int(sum((p != 0).sum().item() if nonzero else p.numel() for p in model.parameters()))


def prune_(ce, config: PruneConfig) -> PruneReport:
    """Prune the cross-encoder ``ce`` in place; records a ``prune`` step in ``ce.card``."""
    model = ce.model
    before = count_params(model, nonzero=config.target == "unstructured")
    scores = _scores(ce, config)
    if config.target == "unstructured":
        report = _unstructured(ce, config, scores, before)
    elif config.target == "layers":
        report = _drop_layers(model, config, scores, before)
    else:
        report = _units(model, config, scores, before)
    stock = sync_config(model)
    step = {"config": config.record(), **report.summary(), "stock_loadable": stock}
    if config.target != "unstructured":
        step["structure"] = structure_of(model)
    card = getattr(ce, "card", None)
    if card is not None:
        card.add_step("prune", **step)
    return report


def _scores(ce, config: PruneConfig):
    if config.target == "unstructured":
        return importance.weight_scores(ce, encoder_linears(ce.model), config.criterion, config.calibration,
                                        config.batch_size, config.norm)
    if config.criterion == "magnitude":
        return importance.magnitude(ce.model, config.target, config.norm)
    fn = importance.taylor if config.criterion == "taylor" else importance.activation
    return fn(ce, config.target, config.calibration, config.batch_size)


def encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The encoder layers' Linear modules (what unstructured pruning touches) by fqn."""
    prefix = model.base_model_prefix
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear and f"{prefix}.encoder." in f"{prefix}.{n}"
            and ".encoder.layer." in f".{n}"}


def _keep_per_layer(scores: list[torch.Tensor], amount: float, scope: str) -> list[list[int]]:
    """Unit ids to keep in each layer (always at least one per layer)."""
    if scope == "layer":
        return [sorted(s.argsort(descending=True)[: max(1, len(s) - round(amount * len(s)))].tolist())
                for s in scores]
    normed = [s / (s.sum() + 1e-12) for s in scores]       # layers have different scales
    flat = torch.cat(normed)
    n_keep = max(len(scores), flat.numel() - round(amount * flat.numel()))
    threshold = flat.sort(descending=True).values[n_keep - 1]
    keep = [sorted((s >= threshold).nonzero().flatten().tolist()) for s in normed]
    return [k or [int(s.argmax())] for k, s in zip(keep, normed)]


def _units(model: nn.Module, config: PruneConfig, scores, before: int) -> PruneReport:
    layers = encoder_layers(model)
    keep = _keep_per_layer([s.float().cpu() for s in scores], config.amount, config.scope)
    removed = {}
    size = head_size(model)
    for i, (layer, kept, s) in enumerate(zip(layers, keep, scores)):
        removed[i] = sorted(set(range(len(s))) - set(kept))
        if config.target == "heads":
            keep_heads(layer, kept, size)
        else:
            keep_neurons(layer, kept)
    return PruneReport(config.target, config.criterion, removed, before, count_params(model))


def _drop_layers(model: nn.Module, config: PruneConfig, scores, before: int) -> PruneReport:
    layers = encoder_layers(model)
    s = torch.cat([x.float().cpu() for x in scores])
    n_drop = min(len(layers) - 1, max(1, round(config.amount * len(layers))))
    drop = sorted(s.argsort()[:n_drop].tolist())
    set_encoder_layers(model, nn.ModuleList([m for i, m in enumerate(layers) if i not in drop]))
    return PruneReport("layers", config.criterion, {"dropped": drop}, before, count_params(model))


def _unstructured(ce, config: PruneConfig, scores: dict[str, torch.Tensor], before: int) -> PruneReport:
    linears = encoder_linears(ce.model)
    if config.scope == "global":
        normed = {n: s / (s.mean() + 1e-12) for n, s in scores.items()}
        flat = torch.cat([s.flatten() for s in normed.values()])
        k = max(1, round(config.amount * flat.numel()))
        threshold = flat.kthvalue(k).values
        masks = {n: s > threshold for n, s in normed.items()}
    else:
        masks = {}
        for n, s in scores.items():
            k = max(1, round(config.amount * s.numel()))
            masks[n] = s > s.flatten().kthvalue(k).values
    zeros = total = 0
    with torch.no_grad():
        for n, m in linears.items():
            m.weight.mul_(masks[n].to(m.weight.dtype))
            zeros += int((~masks[n]).sum())
            total += masks[n].numel()
    return PruneReport("unstructured", config.criterion, {"weights": zeros}, before,
                       count_params(ce.model, nonzero=True), zeros / max(total, 1), masks)


def freeze_zeros_(model: nn.Module, masks: dict[str, torch.Tensor]) -> list:
    """Keep pruned weights at zero while fine-tuning: gradients of masked weights are zeroed
    (AdamW then never moves them: zero moments, and decay of 0 is 0). Returns hook handles."""
    handles = []
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        keep = mask.to(weight.device, weight.dtype)
        handles.append(weight.register_hook(lambda g, keep=keep: g * keep))
    return handles


def cubic_schedule(final: float, stages: int, initial: float = 0.0) -> list[float]:
    """Zhu & Gupta's sparsity schedule s_t = s_f + (s_i − s_f)(1 − t/n)³ at t = 1..n."""
    if stages < 1:
        raise LeanrankError(f"stages must be >= 1, got {stages}")
    return [final + (initial - final) * (1 - t / stages) ** 3 for t in range(1, stages + 1)]


def stage_amount(previous: float, target: float) -> float:
    """The fraction of *remaining* units to remove to go from ``previous`` to ``target`` overall."""
    if math.isclose(previous, target) or target <= previous:
        return 0.0
    return (target - previous) / (1.0 - previous)
