"""Module walking shared by every technique: find modules by type and filter, swap them in place.

A ``filter_fn(module, fqn) -> bool`` picks modules the way torchao does; ``fqn`` is the dotted
name inside the model (``bert.encoder.layer.0.attention.self.query``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch

FilterFn = Callable[[torch.nn.Module, str], bool]


def named_modules_of(model: torch.nn.Module, kind: type | tuple[type, ...],
                     filter_fn: FilterFn | None = None) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(fqn, module)`` for every module of ``kind`` that passes ``filter_fn`` (a snapshot, safe
    to swap while iterating)."""
    found = [(n, m) for n, m in model.named_modules() if type(m) in _as_tuple(kind)]
    for name, module in found:
        if filter_fn is None or filter_fn(module, name):
            yield name, module


def get_module(model: torch.nn.Module, fqn: str) -> torch.nn.Module:
    return model.get_submodule(fqn)


def set_module(model: torch.nn.Module, fqn: str, new: torch.nn.Module) -> None:
    """Replace the submodule at ``fqn`` with ``new``."""
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def block_of(fqn: str) -> str:
    """The block a module belongs to: ``layer.3`` for encoder layer 3, else its top part
    (``embeddings``, ``classifier``, ``pooler``) — the unit of mixed-precision plans."""
    m = re.search(r"layer\.(\d+)\.", fqn + ".")
    if m:
        return f"layer.{m.group(1)}"
    for part in ("embeddings", "pooler", "classifier"):
        if part in fqn.split("."):
            return part
    return fqn.split(".")[0]


def names_filter(names: set[str] | list[str]) -> FilterFn:
    """A filter that accepts exactly these fqns."""
    wanted = set(names)
    return lambda _m, fqn: fqn in wanted


def blocks_filter(exclude_blocks: set[str] | list[str], base: FilterFn | None = None) -> FilterFn:
    """Accept modules outside ``exclude_blocks`` (and accepted by ``base``)."""
    skip = set(exclude_blocks)
    return lambda m, fqn: block_of(fqn) not in skip and (base is None or base(m, fqn))


def _as_tuple(kind) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
