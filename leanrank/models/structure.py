"""Physical surgery on BERT-style encoders, and rebuilding restructured models from their card.

Heads, FFN neurons and layers are *removed* (smaller Linear shapes), not masked. What a model
directory needs to be rebuilt is recorded as ``structure`` in the ``prune``/``factorize`` steps of
its ``leanrank.json``:

- ``heads``: kept heads per layer; ``intermediate``: FFN width per layer;
- ``low_rank``: ``{fqn: rank}`` for Linear layers replaced by ``LowRankLinear``;
- ``embeddings``: ``{fqn: rank}`` for tables replaced by ``FactorizedEmbedding``.

Uniform FFN widths and layer drops are written into the HF config itself, so such folders also
load with stock ``transformers``. Transformers 5 dropped ``prune_heads``/``pruned_heads``: a
folder with removed heads or per-layer widths loads through ``CrossEncoder.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from leanrank.core.errors import LeanrankError
from leanrank.models.layers import FactorizedEmbedding, LowRankLinear

STRUCTURE_STEPS = ("prune", "factorize")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of an HF model (``model.bert.encoder.layer``)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    try:
        return base.encoder.layer
    except AttributeError as exc:
        raise LeanrankError(f"cannot find encoder layers in {type(model).__name__}") from exc


def set_encoder_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    getattr(model, model.base_model_prefix).encoder.layer = layers
    model.config.num_hidden_layers = len(layers)


def head_size(model: nn.Module) -> int:
    return model.config.hidden_size // model.config.num_attention_heads


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``keep`` output rows (dim 0) or input columns (dim 1)."""
    keep = keep.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, keep).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[keep])
    return new


def keep_heads(layer: nn.Module, heads: Sequence[int], size: int) -> None:
    """Keep only ``heads`` (ids among the layer's current heads) of one encoder layer."""
    attn = layer.attention
    n = attn.self.query.out_features // size
    heads = sorted(set(int(h) for h in heads))
    if not heads:
        raise LeanrankError("a layer must keep at least one attention head (drop the layer instead)")
    if heads[0] < 0 or heads[-1] >= n:
        raise LeanrankError(f"head ids must be in 0..{n - 1}, got {heads}")
    idx = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])
    for name in ("query", "key", "value"):
        setattr(attn.self, name, _slice_linear(getattr(attn.self, name), idx, 0))
    attn.output.dense = _slice_linear(attn.output.dense, idx, 1)
    attn.self.num_attention_heads = len(heads)
    attn.self.all_head_size = len(heads) * size


def keep_neurons(layer: nn.Module, neurons: Sequence[int]) -> None:
    """Keep only these FFN intermediate neurons of one encoder layer."""
    idx = torch.as_tensor(sorted(set(int(i) for i in neurons)), dtype=torch.long)
    if len(idx) == 0:
        raise LeanrankError("a layer must keep at least one FFN neuron")
    layer.intermediate.dense = _slice_linear(layer.intermediate.dense, idx, 0)
    layer.output.dense = _slice_linear(layer.output.dense, idx, 1)


def structure_of(model: nn.Module) -> dict:
    """Per-layer head counts and FFN widths, plus low-rank/factorized modules, as recorded in cards."""
    size = head_size(model)
    layers = encoder_layers(model)
    low_rank = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    tables = {n: m.rank for n, m in model.named_modules() if isinstance(m, FactorizedEmbedding)}
    return {"num_layers": len(layers),
            "heads": [_out_features(layer.attention.self.query) // size for layer in layers],
            "intermediate": [_out_features(layer.intermediate.dense) for layer in layers],
            "low_rank": low_rank, "embeddings": tables}


def _out_features(module: nn.Module) -> int:
    return module.out_features


def sync_config(model: nn.Module) -> bool:
    """Write uniform FFN width / layer count into the HF config; True when stock-loadable
    (every layer keeps all heads, one FFN width, and no low-rank modules)."""
    s = structure_of(model)
    model.config.num_hidden_layers = s["num_layers"]
    if len(set(s["intermediate"])) == 1:
        model.config.intermediate_size = s["intermediate"][0]
    return (len(set(s["intermediate"])) == 1 and all(h == model.config.num_attention_heads for h in s["heads"])
            and not s["low_rank"] and not s["embeddings"])


def apply_structure(model: nn.Module, structure: dict) -> None:
    """Reshape a freshly built model (from its config) to a recorded ``structure`` (weights are
    placeholders; the caller loads the saved tensors next)."""
    layers = encoder_layers(model)
    size = head_size(model)
    heads, widths = structure.get("heads", []), structure.get("intermediate", [])
    if len(heads) not in (0, len(layers)) or len(widths) not in (0, len(layers)):
        raise LeanrankError(f"recorded structure has {len(heads)} layers of heads, the config {len(layers)}")
    for layer, h, w in zip(layers, heads or [None] * len(layers), widths or [None] * len(layers)):
        if h is not None and h != layer.attention.self.query.out_features // size:
            keep_heads(layer, range(h), size)
        if w is not None and w != layer.intermediate.dense.out_features:
            keep_neurons(layer, range(w))
    for fqn, rank in structure.get("low_rank", {}).items():
        old = model.get_submodule(fqn)
        _set(model, fqn, LowRankLinear(old.in_features, old.out_features, rank, old.bias is not None))
    for fqn, rank in structure.get("embeddings", {}).items():
        old = model.get_submodule(fqn)
        _set(model, fqn, FactorizedEmbedding(old.num_embeddings, old.embedding_dim, rank, old.padding_idx))


def recorded_structure(steps: list[dict]) -> dict | None:
    """The structure of the last prune/factorize step of a card (``None`` when there is none)."""
    found = [s["structure"] for s in steps if s.get("step") in STRUCTURE_STEPS and "structure" in s]
    return found[-1] if found else None


def _set(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


# ---------------------------------------------------------------------------- sparse storage
SPARSE_VALUES, SPARSE_MASK = ".__sparse_values", ".__sparse_mask"


def pack_sparse(state: dict[str, torch.Tensor], min_sparsity: float = 0.3) -> dict[str, torch.Tensor]:
    """Store 2-D tensors that are at least ``min_sparsity`` zeros as (non-zero values, bit mask):
    4·nnz + numel/8 bytes instead of 4·numel. Other tensors pass through unchanged."""
    import numpy as np

    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if t.dim() == 2 and t.is_floating_point() and (t == 0).float().mean().item() >= min_sparsity:
            mask = (t != 0).flatten().cpu().numpy()
            out[name + SPARSE_VALUES] = t.flatten()[torch.from_numpy(mask)].contiguous()
            bits = torch.from_numpy(np.packbits(mask))
            out[name + SPARSE_MASK] = torch.cat([torch.tensor(list(t.shape), dtype=torch.int64).view(torch.uint8), bits])
        else:
            out[name] = t
    return out


def unpack_sparse(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_sparse`` (dense tensors with the zeros back in place)."""
    import numpy as np

    out = {k: v for k, v in state.items() if not k.endswith((SPARSE_VALUES, SPARSE_MASK))}
    for key in [k for k in state if k.endswith(SPARSE_VALUES)]:
        name = key[: -len(SPARSE_VALUES)]
        packed = state[name + SPARSE_MASK]
        shape = tuple(packed[:16].view(torch.int64).tolist())
        numel = shape[0] * shape[1]
        mask = torch.from_numpy(np.unpackbits(packed[16:].numpy())[:numel].astype(bool))
        dense = torch.zeros(numel, dtype=state[key].dtype)
        dense[mask] = state[key]
        out[name] = dense.view(shape)
    return out
