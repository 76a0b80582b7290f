"""Low-rank factorization, one verb: ``factorize_(model, config, filter_fn=None)``.

Each chosen ``nn.Linear`` (W: out×in) becomes ``LowRankLinear`` (in→r→out) from its truncated
SVD, W ≈ (U√S)(√S Vᵀ). The rank comes from retained spectral energy (``energy``: the smallest r
with Σᵢ≤ᵣ sᵢ² ≥ energy·Σ sᵢ²) or from a global budget (``param_ratio``: keep that fraction of the
chosen layers' weights, singular values picked model-wide by normalised energy per weight).
A layer is left alone when its rank would not reduce FLOPs (r·(in+out) ≥ in·out).
Word/item embedding tables factorize the same way into V×r + r×H (``embedding_rank``).

With ``calibration`` pairs the SVD is activation-aware (data whitening, as in SVD-LLM): with
G = Σ xxᵀ over the real tokens a layer sees and G = LLᵀ (Cholesky), the truncated SVD of W·L
gives W' = U_r S_r V_rᵀ L⁻¹, the rank-r matrix with the smallest error on the layer's *outputs*
‖(W − W')X‖ rather than on its weights; ranks are then allocated by those output spectra.

>>> report = factorize_(ce, FactorizeConfig(param_ratio=0.5))
>>> report.params_before, report.params_after
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from leanrank.core.errors import LeanrankError
from leanrank.core.modules import FilterFn, named_modules_of, set_module
from leanrank.models.layers import FactorizedEmbedding, LowRankLinear
from leanrank.models.structure import structure_of


@dataclass(frozen=True)
class FactorizeConfig:
    energy: float | None = None          # per-layer retained spectral energy, e.g. 0.9
    param_ratio: float | None = 0.5      # or: keep this fraction of the chosen layers' weights
    min_rank: int = 8
    embedding_rank: int | None = None    # factorize word-embedding tables to this rank
    calibration: tuple = ()              # (query, title, ...) pairs → activation-aware SVD
    damping: float = 1e-4                # added to G's diagonal, relative to its mean

    def __post_init__(self):
        object.__setattr__(self, "calibration", tuple(tuple(p) for p in self.calibration))
        if self.damping <= 0:
            raise LeanrankError(f"damping must be > 0, got {self.damping}")
        if (self.energy is None) == (self.param_ratio is None):
            raise LeanrankError("give exactly one of energy= or param_ratio=")
        if self.energy is not None and not 0.0 < self.energy < 1.0:
            raise LeanrankError(f"energy must be in (0, 1), got {self.energy}")
        if self.param_ratio is not None and not 0.0 < self.param_ratio < 1.0:
            raise LeanrankError(f"param_ratio must be in (0, 1), got {self.param_ratio}")
        if self.min_rank < 1:
            raise LeanrankError(f"min_rank must be >= 1, got {self.min_rank}")
        if self.embedding_rank is not None and self.embedding_rank < 1:
            raise LeanrankError(f"embedding_rank must be >= 1, got {self.embedding_rank}")


@dataclass
class FactorizeReport:
    ranks: dict[str, int]
    skipped: list[str]
    linear_params_before: int
    linear_params_after: int
    params_before: int
    params_after: int
    energy: dict[str, float]            # retained spectral energy per factorized layer

    def summary(self) -> dict:
        return {"layers": len(self.ranks), "skipped": len(self.skipped),
                "linear_params_before": self.linear_params_before, "linear_params_after": self.linear_params_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "mean_energy": round(sum(self.energy.values()) / max(len(self.energy), 1), 4)}


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Encoder Linear layers; the small score head and pooler stay dense."""
    return ".encoder." in f".{fqn}" and module.out_features >= 16


def _svd(weight: torch.Tensor, gram: torch.Tensor | None = None, damping: float = 1e-4
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W = U S Vh; with an input Gram matrix G, the SVD of W·L (G = LLᵀ) with Vh mapped back by L⁻¹,
    so that U_r S_r Vh_r is the best rank-r approximation of W on those inputs."""
    w = weight.detach().double()
    if gram is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u.float(), s.float(), vh.float()
    g = gram.double()
    g = g + damping * g.diagonal().mean().clamp(min=1e-12) * torch.eye(g.shape[0], dtype=g.dtype)
    chol = torch.linalg.cholesky(g)
    u, s, vh = torch.linalg.svd(w @ chol, full_matrices=False)
    vh = torch.linalg.solve_triangular(chol, vh, upper=False, left=False)      # Vh·L⁻¹
    return u.float(), s.float(), vh.float()


def _ranks_by_budget(spectra: dict[str, tuple[torch.Tensor, int, int]], ratio: float, min_rank: int) -> dict[str, int]:
    """Pick singular values model-wide by energy share per weight until the budget is spent."""
    budget = ratio * sum(i * o for _, i, o in spectra.values())
    ranks = {n: min_rank for n in spectra}
    spent = sum(min_rank * (i + o) for _, i, o in spectra.values())
    candidates = []
    for name, (s, i, o) in spectra.items():
        share = (s ** 2) / (s ** 2).sum()
        candidates += [(float(share[r]) / (i + o), name) for r in range(min_rank, len(s))]
    for _, name in sorted(candidates, reverse=True):
        _, i, o = spectra[name]
        if spent + i + o > budget:
            continue
        ranks[name] += 1          # candidates of one layer come in descending order of sᵢ
        spent += i + o
    return ranks


def factorize_(ce, config: FactorizeConfig, filter_fn: FilterFn | None = None) -> FactorizeReport:
    """Replace Linear layers (and optionally word embeddings) of ``ce`` with low-rank factors."""
    model = getattr(ce, "model", ce)
    before = sum(p.numel() for p in model.parameters())
    chosen = list(named_modules_of(model, nn.Linear, filter_fn or default_filter))
    if not chosen:
        raise LeanrankError("no Linear layer matched the filter; nothing to factorize")
    grams = {}
    if config.calibration:
        from leanrank.compress.importance import input_grams

        grams = input_grams(ce, dict(chosen), config.calibration)
    svds = {n: _svd(m.weight, grams.get(n), config.damping) for n, m in chosen}
    spectra = {n: (svds[n][1], m.in_features, m.out_features) for n, m in chosen}
    if config.energy is not None:
        ranks = {}
        for n, (s, _, _) in spectra.items():
            cum = (s ** 2).cumsum(0) / (s ** 2).sum()
            ranks[n] = max(config.min_rank, int((cum < config.energy).sum()) + 1)
    else:
        ranks = _ranks_by_budget(spectra, config.param_ratio, config.min_rank)
    done, skipped, energy = {}, [], {}
    lin_before = lin_after = 0
    for name, module in chosen:
        i, o, r = module.in_features, module.out_features, ranks[name]
        lin_before += i * o
        if r * (i + o) >= i * o:
            skipped.append(name)
            lin_after += i * o
            continue
        u, s, vh = svds.pop(name)
        root = s[:r].sqrt()
        new = LowRankLinear(i, o, r, module.bias is not None).to(module.weight.device, module.weight.dtype)
        with torch.no_grad():
            new.down.weight.copy_(root.unsqueeze(1) * vh[:r])
            new.up.weight.copy_(u[:, :r] * root.unsqueeze(0))
            if module.bias is not None:
                new.up.bias.copy_(module.bias)
        set_module(model, name, new)
        done[name] = r
        energy[name] = float((s[:r] ** 2).sum() / (s ** 2).sum())
        lin_after += r * (i + o)
    if config.embedding_rank is not None:
        _factorize_embeddings(model, config.embedding_rank, done, energy)
    report = FactorizeReport(done, skipped, lin_before, lin_after, before,
                             sum(p.numel() for p in model.parameters()), energy)
    card = getattr(ce, "card", None)
    if card is not None:
        record = {**asdict(config), "calibration": len(config.calibration)}    # the pair count, not the texts
        card.add_step("factorize", config=record, activation_aware=bool(config.calibration), **report.summary(),
                      structure=structure_of(model))
    return report


def _factorize_embeddings(model: nn.Module, rank: int, done: dict, energy: dict) -> None:
    for name, emb in list(named_modules_of(model, nn.Embedding)):
        if not name.endswith("word_embeddings") or rank >= emb.embedding_dim:
            continue
        u, s, vh = _svd(emb.weight)
        new = FactorizedEmbedding(emb.num_embeddings, emb.embedding_dim, rank, emb.padding_idx)
        with torch.no_grad():
            new.table.weight.copy_(u[:, :rank] * s[:rank])
            new.project.weight.copy_(vh[:rank].T)
        set_module(model, name, new)
        done[name] = rank
        energy[name] = float((s[:rank] ** 2).sum() / (s ** 2).sum())
