"""Quantization, one verb: ``quantize_(model, config, filter_fn=None)``.

>>> from leanrank.compress.quantize import quantize_, DynamicInt8Config
>>> report = quantize_(cross_encoder, DynamicInt8Config())      # in place
>>> report.swapped[:2], report.skipped                           # what changed, what did not
>>> cross_encoder.save("runs/int8")                              # safetensors + leanrank.json
>>> load_quantized("runs/int8").score(["drill"], ["DeWalt drill"])

Configs are frozen dataclasses validated on construction; ``SCHEMES`` maps the CLI names to
them (the registry: a new scheme is one config + one module class + one test). Modules a
scheme cannot handle are skipped, listed in the report and in one warning — never a crash.
By default the 1-output score head stays in float: its output *is* the ranking score.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from leanrank.compress.qmodules import (
    MODULE_TYPES,
    CastLinear,
    DynamicInt8Linear,
    QuantizedEmbedding,
    StaticInt8Linear,
    WeightOnlyLinear,
)
from leanrank.core.errors import LeanrankError
from leanrank.core.io import load_safetensors_dir
from leanrank.core.modules import FilterFn, get_module, named_modules_of, set_module


# ---------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DynamicInt8Config:
    """int8 per-channel weights; activations quantized per batch at run time."""
    reduce_range: bool = True   # 7-bit activations: no int16 overflow in AVX2 int8 GEMM


@dataclass(frozen=True)
class StaticInt8Config:
    """int8 weights + activation ranges calibrated on real (query, title) pairs."""
    calibration: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    observer: str = "percentile"        # "minmax" or "percentile"
    percentile: float = 99.99
    reduce_range: bool = True
    batch_size: int = 32

    def __post_init__(self):
        if len(self.calibration) == 0:
            raise LeanrankError("static int8 needs a calibration set: pass calibration=[(query, title), ...]")
        if self.observer not in ("minmax", "percentile"):
            raise LeanrankError(f"observer must be 'minmax' or 'percentile', got {self.observer!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise LeanrankError(f"percentile must be in (50, 100], got {self.percentile}")

    def record(self) -> dict:
        digest = hashlib.sha1("\n".join(f"{q}\t{t}" for q, t in self.calibration).encode()).hexdigest()[:12]
        return {"observer": self.observer, "percentile": self.percentile, "reduce_range": self.reduce_range,
                "calibration_size": len(self.calibration), "calibration_sha1": digest}


@dataclass(frozen=True)
class WeightOnlyConfig:
    """int8/int4 weights with group-wise scales; float activations (smaller, not faster)."""
    bits: int = 8
    group_size: int = 64

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise LeanrankError(f"bits must be 4 or 8, got {self.bits}")
        if self.group_size < 2 or self.group_size % 2:
            raise LeanrankError(f"group_size must be an even number >= 2, got {self.group_size}")


@dataclass(frozen=True)
class CastConfig:
    """fp16 or bf16 Linear weights and matmuls."""
    dtype: str = "bf16"

    def __post_init__(self):
        if self.dtype not in ("fp16", "bf16"):
            raise LeanrankError(f"dtype must be 'fp16' or 'bf16', got {self.dtype!r}")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Row-wise int8/int4 embedding tables, chosen by name (``word_embeddings``, ``item_emb``)."""
    bits: int = 8
    tables: tuple[str, ...] = ("word_embeddings",)

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise LeanrankError(f"bits must be 4 or 8, got {self.bits}")
        if not self.tables:
            raise LeanrankError("tables must name at least one embedding table")


Config = DynamicInt8Config | StaticInt8Config | WeightOnlyConfig | CastConfig | EmbeddingConfig

SCHEMES: dict[str, tuple[type, dict]] = {
    "int8-dynamic": (DynamicInt8Config, {}),
    "int8-static": (StaticInt8Config, {}),
    "int8-weight": (WeightOnlyConfig, {"bits": 8}),
    "int4-weight": (WeightOnlyConfig, {"bits": 4}),
    "fp16": (CastConfig, {"dtype": "fp16"}),
    "bf16": (CastConfig, {"dtype": "bf16"}),
    "emb-int8": (EmbeddingConfig, {"bits": 8}),
    "emb-int4": (EmbeddingConfig, {"bits": 4}),
}


def make_config(scheme: str, **overrides) -> Config:
    """The config of a named scheme (``SCHEMES``), with overrides."""
    if scheme not in SCHEMES:
        raise LeanrankError(f"unknown scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    cls, defaults = SCHEMES[scheme]
    return cls(**{**defaults, **overrides})


def scheme_name(config: Config) -> str:
    for name, (cls, defaults) in SCHEMES.items():
        if isinstance(config, cls) and all(getattr(config, k) == v for k, v in defaults.items()):
            return name
    return type(config).__name__


# ---------------------------------------------------------------------------- the verb
@dataclass
class QuantizeReport:
    scheme: str
    swapped: list[str]
    skipped: dict[str, str]            # fqn -> reason
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        return self.bytes_before / max(self.bytes_after, 1)


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Every Linear except a score head (fewer than 16 outputs)."""
    return not (isinstance(module, nn.Linear) and module.out_features < 16)


def quantize_(model: nn.Module, config: Config, filter_fn: FilterFn | None = None) -> QuantizeReport:
    """Quantize ``model`` in place with ``config``; modules are picked by ``filter_fn(module, fqn)``
    (default: every Linear but the score head). Records the step in ``model.card`` when present."""
    filter_fn = filter_fn or default_filter
    kind = nn.Embedding if isinstance(config, EmbeddingConfig) else nn.Linear
    chosen, skipped = [], {}
    for fqn, module in named_modules_of(model, kind):
        if isinstance(config, EmbeddingConfig) and not any(fqn.split(".")[-1] == t for t in config.tables):
            continue
        if not filter_fn(module, fqn):
            skipped[fqn] = "excluded by filter"
            continue
        reason = _cannot_handle(module, config)
        if reason:
            skipped[fqn] = reason
        else:
            chosen.append((fqn, module))
    if isinstance(config, EmbeddingConfig) and not chosen and not skipped:
        raise LeanrankError(f"no embedding table named {', '.join(config.tables)} in the model")
    before = sum(module_nbytes(m) for _, m in chosen)
    stats = _calibrate(model, [f for f, _ in chosen], config) if isinstance(config, StaticInt8Config) else {}
    kwargs = module_kwargs(config)
    for fqn, module in chosen:
        cls = _MODULE_FOR[type(config)]
        extra = {"in_range": stats[fqn][0], "out_range": stats[fqn][1]} if stats else {}
        set_module(model, fqn, cls.from_float(module, **kwargs, **extra))
    after = sum(module_nbytes(get_module(model, f)) for f, _ in chosen)
    real_skips = {k: v for k, v in skipped.items() if v != "excluded by filter"}
    if real_skips:
        warnings.warn(f"{scheme_name(config)}: skipped {len(real_skips)} module(s) it cannot handle: "
                      + "; ".join(f"{k} ({v})" for k, v in real_skips.items()), stacklevel=2)
    report = QuantizeReport(scheme_name(config), [f for f, _ in chosen], skipped, before, after)
    record_quantize_step(model, report, config.record() if hasattr(config, "record") else asdict(config),
                         kwargs, _MODULE_FOR[type(config)].__name__)
    return report


def record_quantize_step(model: nn.Module, report: QuantizeReport, config: dict, module_kwargs: dict,
                         module_class: str) -> None:
    """Add the step ``load_quantized`` rebuilds from to ``model.card`` (when the model has one)."""
    card = getattr(model, "card", None)
    if card is not None:
        card.add_step("quantize", scheme=report.scheme, config=config, module_kwargs=module_kwargs,
                      modules={f: module_class for f in report.swapped}, skipped=report.skipped,
                      bytes_before=report.bytes_before, bytes_after=report.bytes_after)


_MODULE_FOR: dict[type, type[nn.Module]] = {
    DynamicInt8Config: DynamicInt8Linear, StaticInt8Config: StaticInt8Linear,
    WeightOnlyConfig: WeightOnlyLinear, CastConfig: CastLinear, EmbeddingConfig: QuantizedEmbedding,
}


def module_kwargs(config: Config) -> dict:
    if isinstance(config, (DynamicInt8Config, StaticInt8Config)):
        return {"reduce_range": config.reduce_range}
    if isinstance(config, WeightOnlyConfig):
        return {"bits": config.bits, "group_size": config.group_size}
    if isinstance(config, CastConfig):
        return {"dtype": config.dtype}
    return {"bits": config.bits}


def _cannot_handle(module: nn.Module, config: Config) -> str | None:
    if isinstance(config, WeightOnlyConfig) and module.in_features % config.group_size:
        return f"in_features {module.in_features} not divisible by group_size {config.group_size}"
    if isinstance(config, EmbeddingConfig) and config.bits == 4 and module.embedding_dim % 2:
        return f"odd embedding dim {module.embedding_dim} cannot pack int4"
    if module.weight.dtype != torch.float32:
        return f"weights are {module.weight.dtype}, not float32"
    return None


def module_nbytes(module: nn.Module) -> int:
    """Bytes of a module's own parameters and buffers."""
    tensors = list(module.parameters(recurse=False)) + [b for b in module.buffers(recurse=False) if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------- calibration
class _Observer:
    def __init__(self, kind: str, percentile: float, max_samples: int = 400_000, seed: int = 0):
        self.kind, self.percentile, self.max_samples = kind, percentile, max_samples
        self.lo, self.hi, self.samples = float("inf"), float("-inf"), []
        self.gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.kind == "percentile":
            take = min(x.numel(), 50_000)
            self.samples.append(x[torch.randint(0, x.numel(), (take,), generator=self.gen)])

    def range(self) -> tuple[float, float]:
        if self.kind == "minmax" or not self.samples:
            return self.lo, self.hi
        s = torch.cat(self.samples)
        if s.numel() > self.max_samples:
            s = s[torch.randperm(s.numel(), generator=self.gen)[: self.max_samples]]
        q = torch.quantile(s, torch.tensor([1 - self.percentile / 100, self.percentile / 100]))
        return float(q[0]), float(q[1])


def _calibrate(model: nn.Module, fqns: list[str], config: StaticInt8Config) -> dict[str, tuple]:
    """Run the float model on the calibration pairs; (input range, output range) per Linear."""
    if not hasattr(model, "score"):
        raise LeanrankError("static int8 calibration needs a model with .score(queries, titles)")
    observers = {f: (_Observer(config.observer, config.percentile), _Observer(config.observer, config.percentile))
                 for f in fqns}
    hooks = []
    for f in fqns:
        obs_in, obs_out = observers[f]

        def hook(_m, args, out, obs_in=obs_in, obs_out=obs_out):
            obs_in.update(args[0])
            obs_out.update(out)

        hooks.append(get_module(model, f).register_forward_hook(hook))
    try:
        pairs = list(config.calibration)
        model.score([q for q, _ in pairs], [t for _, t in pairs], batch_size=config.batch_size)
    finally:
        for h in hooks:
            h.remove()
    return {f: (o[0].range(), o[1].range()) for f, o in observers.items()}


# ---------------------------------------------------------------------------- loading
def is_quantized(card) -> bool:
    return any(s.get("step") == "quantize" for s in getattr(card, "steps", []))


def load_quantized(path: str | Path):
    """Rebuild a quantized cross-encoder saved by ``CrossEncoder.save``: the float skeleton from
    its config, the recorded module swaps, then the saved tensors (safetensors, strict)."""
    from transformers import AutoConfig, AutoTokenizer

    from leanrank.models.card import ModelCard
    from leanrank.models.cross_encoder import CrossEncoder, build_skeleton
    from leanrank.models.structure import recorded_structure, unpack_sparse

    path = Path(path)
    card = ModelCard.load(path, kind="cross-encoder")
    config = AutoConfig.from_pretrained(path)
    skeleton = build_skeleton(config, recorded_structure(card.steps))
    model = CrossEncoder(skeleton, AutoTokenizer.from_pretrained(path), card)
    for step in card.steps:
        if step.get("step") != "quantize":
            continue
        for fqn, cls_name in step["modules"].items():
            root = model if fqn.startswith("model.") else model.model
            try:
                skeleton = MODULE_TYPES[cls_name].empty(get_module(root, fqn), **step["module_kwargs"])
            except (KeyError, TypeError, AttributeError) as exc:
                raise LeanrankError(f"{path}: leanrank.json records a quantization that does not match "
                                    f"the model ({fqn}: {cls_name}: {exc})") from exc
            set_module(root, fqn, skeleton)
    missing, unexpected = model.model.load_state_dict(unpack_sparse(load_safetensors_dir(path)), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise LeanrankError(f"{path}: saved tensors do not match the recorded quantization "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    return model
