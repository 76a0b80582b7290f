"""Pair tokenization with a per-text cache, for serving: a rerank request pairs one query with
dozens of catalog titles that were seen before, so each text is tokenized once and the batch is
assembled from cached ids — the same arrays as :func:`encode_pairs` (``[CLS] q [SEP] t [SEP]``,
``longest_first`` truncation, padding to the longest pair rounded up to a multiple of 8).

>>> pairs = CachedPairTokenizer(tokenizer, max_length=48)      # doctest: +SKIP
>>> pairs(["drill"] * 2, ["DeWalt drill", "Makita drill"])["input_ids"].shape   # doctest: +SKIP
(2, 8)

Tokenizers that do not build pairs that way (checked once, on a probe pair) fall back to
``encode_pairs`` on every call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


class CachedPairTokenizer:
    def __init__(self, tokenizer, max_length: int, cache_size: int = 200_000):
        self.tokenizer, self.max_length, self.cache_size = tokenizer, max_length, cache_size
        self.cache: dict[str, tuple[list[int], int]] = {}     # text → (first max_length ids, length)
        self.lock = threading.Lock()
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.supported = self._builds_bert_pairs()

    def __getstate__(self) -> dict:         # copies (deepcopy of a model, pickling) get a fresh lock
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def _builds_bert_pairs(self) -> bool:
        if None in (self.cls, self.sep, self.pad) or self.max_length < 4:
            return False
        q, t = "cordless drill 20v", "DeWalt Drill Kit"
        got = self.tokenizer(q, t)
        (ids_q, _), (ids_t, _) = self._ids([q, t])
        want = [self.cls, *ids_q, self.sep, *ids_t, self.sep]
        types = [0] * (len(ids_q) + 2) + [1] * (len(ids_t) + 1)
        return got["input_ids"] == want and got.get("token_type_ids") == types

    def _ids(self, texts: Sequence[str]) -> list[tuple[list[int], int]]:
        """(ids, full length) per text; the length decides truncation, so it is kept untruncated."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            encoded = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            with self.lock:
                if len(self.cache) + len(missing) > self.cache_size:
                    self.cache.clear()
                self.cache.update((t, (ids[:self.max_length], len(ids))) for t, ids in zip(missing, encoded))
        cache = self.cache
        return [cache[t] if t in cache else self._ids([t])[0] for t in texts]

    def _fallback(self, queries: Sequence[str], titles: Sequence[str]) -> dict[str, np.ndarray]:
        from leanrank.models.cross_encoder import encode_pairs

        enc = encode_pairs(self.tokenizer, queries, titles, self.max_length, "np")
        return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}

    def __call__(self, queries: Sequence[str], titles: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` as int64 arrays."""
        if not self.supported:
            return self._fallback(queries, titles)
        if not all(q.strip() and t.strip() for q, t in zip(queries, titles)):
            return self._fallback(queries, titles)     # HF drops an empty second text entirely
        ids_q, ids_t = self._ids(queries), self._ids(titles)
        cut = [longest_first(q[1], t[1], self.max_length - 3) for q, t in zip(ids_q, ids_t)]
        longest = max((a + b + 3 for a, b in cut), default=0)
        width = -(-longest // 8) * 8
        n = len(cut)
        input_ids = np.full((n, width), self.pad, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, ((a, b), (q, _), (t, _)) in enumerate(zip(cut, ids_q, ids_t)):
            row = [self.cls, *q[:a], self.sep, *t[:b], self.sep]
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
            types[i, a + 2:len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}


def longest_first(a: int, b: int, budget: int) -> tuple[int, int]:
    """Tokens kept of a pair of lengths ``a`` and ``b`` under HF tokenizers' ``longest_first``
    truncation to ``budget`` non-special tokens (its Rust algorithm: the shorter side keeps what
    the longer leaves it, and when both are over half the budget they split it, the longer side
    taking the odd token)."""
    if a + b <= budget:
        return a, b
    swap = a > b
    if swap:
        a, b = b, a
    first, second = a, (a if a > budget else max(a, budget - a))
    if first + second > budget:
        first = budget // 2
        second = first + budget % 2
    return (second, first) if swap else (first, second)
