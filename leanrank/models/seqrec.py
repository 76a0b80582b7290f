"""Sequential recommenders: a SASRec-style causal Transformer and a BERT4Rec-style bidirectional
masked one behind one interface (``SeqRec``), with optional side information.

Items are ids 1..n_items (0 = padding; BERT4Rec adds a [MASK] row n_items + 1). An item's vector
is its ``ItemEmbeddingTable`` row, plus the mean of its attribute embeddings, plus a Linear
projection of a frozen title embedding when given; the same vectors score the output over the
whole catalog. Sequences are right-padded and positions count from the first item of the
window, so a causal model's outputs never depend on later items or on padding.

>>> model = SeqRec(SeqRecConfig(n_items=100, hidden=32, layers=1, heads=2, max_len=20))
>>> len(model.recommend([3, 7, 9], k=5))
5
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from leanrank.core.errors import LeanrankError
from leanrank.models.card import ModelCard

VARIANTS = ("sasrec", "bert4rec")
LOSSES = ("full", "sampled")


@dataclass(frozen=True)
class SeqRecConfig:
    n_items: int
    variant: str = "sasrec"
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    ffn: int | None = None               # feed-forward width (default 4 * hidden)
    n_attributes: int = 0                # attribute vocabulary (0 = no attribute side information)
    max_item_attributes: int = 0         # attributes kept per item
    title_dim: int = 0                   # frozen title embedding width (0 = no titles)
    attribute_loss_weight: float = 0.0   # multi-task head: predict the target item's attributes
    loss: str = "full"                   # full softmax over the catalog, or sampled with log-Q
    n_negatives: int = 256               # sampled softmax: shared negatives per batch
    mask_prob: float = 0.2               # bert4rec: fraction of items masked in training

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise LeanrankError(f"variant={self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.loss not in LOSSES:
            raise LeanrankError(f"loss={self.loss!r} is not one of {', '.join(LOSSES)}")
        for name in ("n_items", "hidden", "layers", "heads", "max_len", "n_negatives"):
            if getattr(self, name) < 1:
                raise LeanrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise LeanrankError(f"hidden={self.hidden} must be a multiple of heads={self.heads}")
        for name in ("n_attributes", "max_item_attributes", "title_dim", "attribute_loss_weight"):
            if getattr(self, name) < 0:
                raise LeanrankError(f"{name} must be >= 0, got {getattr(self, name)}")
        if (self.n_attributes > 0) != (self.max_item_attributes > 0):
            raise LeanrankError("n_attributes and max_item_attributes must both be 0 or both > 0")
        if self.attribute_loss_weight > 0 and not self.n_attributes:
            raise LeanrankError("attribute_loss_weight > 0 needs attributes (n_attributes > 0)")
        if not 0 <= self.dropout < 1 or not 0 < self.mask_prob < 1:
            raise LeanrankError(f"need 0 <= dropout < 1 and 0 < mask_prob < 1, got {self.dropout}, {self.mask_prob}")

    @property
    def mask_id(self) -> int:
        return self.n_items + 1


class ItemEmbeddingTable(nn.Module):
    """The item id → vector table (row 0 = padding). Compression swaps this module for an
    int8 or low-rank table with the same two methods."""

    def __init__(self, n_rows: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_rows, dim) * 0.02)
        with torch.no_grad():
            self.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, padding_idx=0)

    def full(self) -> torch.Tensor:
        """Every row, [n_rows, dim]."""
        return self.weight


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a mask from ``torch.rand`` (same distribution): on CPU, ``bernoulli_``
    (which ``F.dropout`` uses) is slower (29 vs 18 ms on a [128, 50, 256] activation,
    benchmarks/results/artifacts/seqrec-step-times.json) and was the top self-time op of a step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block with an explicit attention mask (True = may attend)."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ff1, self.ff2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))


class SeqRec(nn.Module):
    """SASRec (``variant="sasrec"``) or BERT4Rec (``"bert4rec"``) over item-id sequences.

    ``item_attributes`` (per item id, attribute ids >= 1) and ``title_embeddings``
    ([n_items + 1, title_dim] float, frozen) are stored as buffers, so a saved model is complete.
    """

    def __init__(self, config: SeqRecConfig, item_attributes: Sequence[Sequence[int]] | None = None,
                 title_embeddings: torch.Tensor | None = None, card: ModelCard | None = None):
        super().__init__()
        c = self.config = config
        rows = c.n_items + (2 if c.variant == "bert4rec" else 1)
        self.items = ItemEmbeddingTable(rows, c.hidden)
        self.positions = nn.Embedding(c.max_len, c.hidden)
        self.drop = Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.hidden, c.heads, c.ffn or 4 * c.hidden, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.hidden)
        nn.init.normal_(self.positions.weight, std=0.02)
        if c.n_attributes:
            self.attributes = nn.Embedding(c.n_attributes, c.hidden, padding_idx=0)
            nn.init.normal_(self.attributes.weight, std=0.02)
            with torch.no_grad():
                self.attributes.weight[0].zero_()
            self.register_buffer("item_attr", _attribute_table(item_attributes, rows, c))
            self.attr_head = nn.Linear(c.hidden, c.n_attributes) if c.attribute_loss_weight > 0 else None
        if c.title_dim:
            if title_embeddings is None:
                title_embeddings = torch.zeros(c.n_items + 1, c.title_dim)  # filled by load()
            if tuple(title_embeddings.shape) != (c.n_items + 1, c.title_dim):
                raise LeanrankError(f"title embeddings must be [{c.n_items + 1}, {c.title_dim}], "
                                    f"got {list(title_embeddings.shape)}")
            titles = torch.zeros(rows, c.title_dim)
            titles[: c.n_items + 1] = title_embeddings.float()
            self.register_buffer("title_emb", titles)
            self.title_proj = nn.Linear(c.title_dim, c.hidden)
        self.register_buffer("log_q", torch.full((rows,), -math.log(c.n_items)), persistent=False)
        self.card = card or ModelCard(kind="seqrec", max_length=c.max_len)

    # ------------------------------------------------------------------ representations
    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors (table row + attribute mean + projected title) for ``ids``, or all rows."""
        e = self.items(ids) if ids is not None else self.items.full()
        if self.config.n_attributes:
            attr = self.item_attr if ids is None else self.item_attr[ids]
            # mean of the non-padding attribute rows (zeros for none), without materialising
            # [items, attributes, hidden]: Sports items have up to 37 attributes
            pooled = F.embedding_bag(attr.reshape(-1, attr.shape[-1]), self.attributes.weight, mode="mean",
                                     padding_idx=0)
            e = e + pooled.view(*attr.shape[:-1], -1)
        if self.config.title_dim:
            e = e + self.title_proj(self.title_emb if ids is None else self.title_emb[ids])
        return e

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] right-padded item ids → hidden states [B, L, hidden]."""
        b, n = ids.shape
        if n > self.config.max_len:
            raise LeanrankError(f"sequence length {n} > max_len {self.config.max_len}")
        x = self.item_vectors(ids) * math.sqrt(self.config.hidden) + self.positions.weight[:n]
        x = self.drop(x)
        if self.config.variant == "sasrec":
            mask = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()[None, None]
        else:
            mask = (ids > 0)[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def catalog_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., hidden] → scores for item ids 0..n_items (column 0 = -inf)."""
        logits = h @ self.item_vectors()[: self.config.n_items + 1].T
        logits[..., 0] = float("-inf")
        return logits

    # ------------------------------------------------------------------ training
    def training_batch(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [B, L] (0 = no loss) for a batch of train sequences (the last
        ``max_len`` (+1 for SASRec) items of each): next item for SASRec, masked items for BERT4Rec."""
        c, dev = self.config, self.log_q.device
        if c.variant == "sasrec":
            seqs = [list(s[-(c.max_len + 1):]) for s in sequences]
            n = max(len(s) - 1 for s in seqs)
            inputs, targets = _pad([s[:-1] for s in seqs], n, dev), _pad([s[1:] for s in seqs], n, dev)
            return inputs, targets
        seqs = [list(s[-c.max_len:]) for s in sequences]
        ids = _pad(seqs, max(len(s) for s in seqs), dev)
        real = ids > 0
        masked = (torch.rand(ids.shape, device=dev) < c.mask_prob) & real
        last = real.sum(1) - 1
        none = ~masked.any(1)
        masked[none, last[none]] = True  # every sequence trains on at least one item
        return ids.masked_fill(masked, c.mask_id), ids.masked_fill(~masked, 0)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the positions with a target (full or sampled softmax with log-Q
        correction), plus the weighted attribute BCE of the multi-task head."""
        h = self.encode(inputs)[targets > 0]
        t = targets[targets > 0]
        if self.config.loss == "full":
            loss = F.cross_entropy(self.catalog_logits(h).float(), t)
        else:
            loss = self._sampled_loss(h, t)
        if self.config.attribute_loss_weight > 0:
            multi_hot = torch.zeros(len(t), self.config.n_attributes, device=h.device)
            multi_hot.scatter_(1, self.item_attr[t], 1.0)
            multi_hot[:, 0] = 0.0
            bce = F.binary_cross_entropy_with_logits(self.attr_head(h).float()[:, 1:], multi_hot[:, 1:])
            loss = loss + self.config.attribute_loss_weight * bce
        return loss

    def _sampled_loss(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Shared negatives drawn from q (``set_sampling_distribution``), logits - log q."""
        n = self.config.n_items
        q = self.log_q[1 : n + 1].exp()
        neg = torch.multinomial(q, self.config.n_negatives, replacement=True) + 1
        pos_logit = (h * self.item_vectors(t)).sum(-1) - self.log_q[t]
        neg_logit = h @ self.item_vectors(neg).T - self.log_q[neg]
        neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], float("-inf"))  # accidental hits
        logits = torch.cat([pos_logit[:, None], neg_logit], 1).float()
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long, device=h.device))

    def set_sampling_distribution(self, counts: torch.Tensor | None, power: float = 1.0) -> None:
        """Sampled softmax draws negatives ∝ counts**power (counts per item id, [n_items + 1]);
        ``None`` = uniform."""
        n = self.config.n_items
        q = torch.ones(n) if counts is None else counts[1 : n + 1].double().clamp(min=1) ** power
        self.log_q[1 : n + 1] = (q / q.sum()).log().float().to(self.log_q.device)

    # ------------------------------------------------------------------ inference
    def prediction_batch(self, histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded inputs and the position to read for each history (BERT4Rec appends [MASK])."""
        c = self.config
        flat = [int(i) for h in histories for i in h]
        if flat and (min(flat) < 1 or max(flat) > c.n_items):
            raise LeanrankError(f"history item ids must be in 1..{c.n_items}")
        if c.variant == "bert4rec":
            seqs = [list(h[-(c.max_len - 1):]) + [c.mask_id] if c.max_len > 1 else [c.mask_id] for h in histories]
        else:
            seqs = [list(h[-c.max_len:]) for h in histories]
        if any(len(s) == 0 for s in seqs):
            raise LeanrankError("a SASRec history needs at least one item")
        ids = _pad(seqs, max(len(s) for s in seqs), self.log_q.device)
        return ids, (ids > 0).sum(1) - 1

    @torch.no_grad()
    def score_histories(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores [B, n_items + 1] of every item as the next one (column 0 = -inf), in eval mode."""
        was = self.training
        self.eval()
        try:
            ids, last = self.prediction_batch(histories)
            h = self.encode(ids)[torch.arange(len(ids), device=ids.device), last]
            return self.catalog_logits(h).float()
        finally:
            self.train(was)

    def recommend(self, history: Sequence[int], k: int = 10, exclude_seen: bool = True) -> list[int]:
        """The top-``k`` next items (ids 1..n_items) for one history, best first."""
        scores = self.score_histories([list(history)])[0]
        if exclude_seen and len(history):
            scores[torch.as_tensor(list(history), dtype=torch.long, device=scores.device)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        return scores.topk(k).indices.tolist()

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """``config.json`` + ``model.safetensors`` + ``leanrank.json``, renamed into place."""
        from safetensors.torch import save_file

        from leanrank.core.io import atomic_dir

        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n", encoding="utf-8")
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.card.save(tmp)
        return directory

    @classmethod
    def load_config(cls, directory: str | Path) -> SeqRec:
        """A freshly initialised model of the folder's ``config.json`` (weights not loaded)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise LeanrankError(f"{directory}: not a seqrec model folder (no config.json)")
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        known = {k: v for k, v in raw.items() if k in SeqRecConfig.__dataclass_fields__}
        try:
            config = SeqRecConfig(**known)
        except TypeError as exc:
            raise LeanrankError(f"{directory}/config.json: {exc}") from exc
        return cls(config, card=ModelCard.load(directory, kind="seqrec"))

    def load_weights(self, directory: str | Path) -> SeqRec:
        """Load the folder's ``model.safetensors`` into this model (its modules must match)."""
        from leanrank.core.io import load_safetensors_dir

        missing, unexpected = self.load_state_dict(load_safetensors_dir(Path(directory)), strict=False)
        if missing or unexpected:
            raise LeanrankError(f"{directory}: tensors do not match config.json "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return self

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> SeqRec:
        return cls.load_config(directory).load_weights(directory).to(device)


def title_embeddings(titles: Sequence[str], model_path: str | Path | None = None,
                     batch_size: int = 128) -> torch.Tensor:
    """Frozen MiniLM title embeddings [len(titles), 384] for ``SeqRec(title_embeddings=...)``;
    ``titles`` is indexed by item id (row 0 and empty titles get zero vectors)."""
    from leanrank.models.bi_encoder import BiEncoder

    keep = [i for i, t in enumerate(titles) if i > 0 and t and t.strip()]
    if not keep:
        raise LeanrankError("no item has a title; train without --titles")
    encoder = BiEncoder.from_pretrained(model_path)
    vectors = torch.from_numpy(encoder.encode([titles[i] for i in keep], batch_size=batch_size))
    out = torch.zeros(len(titles), vectors.shape[1])
    out[keep] = vectors
    return out


def _attribute_table(item_attributes, rows: int, c: SeqRecConfig) -> torch.Tensor:
    table = torch.zeros(rows, c.max_item_attributes, dtype=torch.long)
    for i, attrs in enumerate(item_attributes or []):
        if i >= rows:
            break
        attrs = list(attrs)[: c.max_item_attributes]
        if any(not 0 < a < c.n_attributes for a in attrs):
            raise LeanrankError(f"item {i}: attribute ids must be in 1..{c.n_attributes - 1}")
        table[i, : len(attrs)] = torch.tensor(attrs, dtype=torch.long)
    return table


def _pad(seqs: Sequence[Sequence[int]], n: int, device) -> torch.Tensor:
    out = torch.zeros(len(seqs), max(n, 1), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(list(s)[:n], dtype=torch.long)
    return out.to(device)
