"""``leanrank serve`` configuration: one YAML file → frozen, validated dataclasses.

Unknown keys are rejected with the key named (``leanrank.core.config.from_mapping``); every
section is optional except ``variants``. Relative paths are relative to the working directory.

>>> cfg = ServeConfig.from_dict({"variants": {"bm25": "builtin:bm25"}})
>>> cfg.recall.rerank_n, cfg.batching.queue_size
(50, 64)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from leanrank.core.config import from_mapping
from leanrank.core.errors import LeanrankError

CATALOG_SOURCES = ("synthetic", "homedepot")
BUILTIN_VARIANTS = ("builtin:bm25", "builtin:dense")  # rerank by the recall scores themselves
DEFAULT_REWARDS = MappingProxyType({"click": 0.2, "add_to_cart": 0.5, "purchase": 1.0})


def _positive(obj, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 1:
            raise LeanrankError(f"{name} must be >= 1, got {getattr(obj, name)}")


@dataclass(frozen=True)
class CatalogConfig:
    source: str = "synthetic"
    data_dir: str | None = None       # homedepot: the benchmark data folder (default $LEANRANK_DATA)
    n_products: int | None = None     # synthetic: catalog size (default: the demo's 3000)

    def __post_init__(self) -> None:
        if self.source not in CATALOG_SOURCES:
            raise LeanrankError(f"catalog.source={self.source!r} is not one of {', '.join(CATALOG_SOURCES)}")
        if self.n_products is not None and self.n_products < 10:
            raise LeanrankError(f"catalog.n_products must be >= 10, got {self.n_products}")


DENSE_INDEXES = ("flat", "fp16", "sq8", "ivf")      # leanrank.models.bi_encoder.DenseIndex.KINDS
DENSE_RUNTIMES = ("torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class RecallConfig:
    bm25_k: int = 100                 # BM25 candidates over the whole catalog
    dense_k: int = 100                # bi-encoder FAISS candidates (0 = BM25 only)
    rerank_n: int = 50                # fused candidates the variant reranks
    dense_model: str | None = None    # bi-encoder folder (default: the packaged MiniLM-L6)
    rrf_k: int = 60                   # reciprocal-rank-fusion constant
    faiss_threads: int = 1            # one query at a time: OpenMP threads only contend with the rerank
    dense_index: str = "flat"         # flat (exact) | fp16 | sq8 (scalar-quantized) | ivf (scans nprobe cells)
    dense_nprobe: int = 32            # ivf only: cells scanned per query
    embedding_cache: str | None = "runs/serve/embeddings"   # catalog vectors, reused across starts
    dense_runtime: str = "torch"      # query encoder: torch, onnx (exported once, parity-checked) or
                                      # onnx-int8 (ORT dynamic int8 of that; the catalog is encoded by it too)
    encoder_threads: int = 1          # ORT threads of the onnx query encoder
    encoder_cache: str = "runs/serve/encoders"              # where the onnx query encoder is kept

    def __post_init__(self) -> None:
        _positive(self, "bm25_k", "rerank_n", "rrf_k", "faiss_threads", "encoder_threads", "dense_nprobe")
        if self.dense_index not in DENSE_INDEXES:
            raise LeanrankError(f"recall.dense_index must be one of {', '.join(DENSE_INDEXES)}, "
                                f"got {self.dense_index!r}")
        if self.dense_runtime not in DENSE_RUNTIMES:
            raise LeanrankError(f"recall.dense_runtime must be one of {', '.join(DENSE_RUNTIMES)}, "
                                f"got {self.dense_runtime!r}")
        if self.dense_k < 0:
            raise LeanrankError(f"dense_k must be >= 0, got {self.dense_k}")
        if self.rerank_n > self.bm25_k + self.dense_k:
            raise LeanrankError(f"rerank_n={self.rerank_n} exceeds bm25_k + dense_k = {self.bm25_k + self.dense_k}")


@dataclass(frozen=True)
class RecConfig:
    model_dir: str | None = None      # SeqRec folder; none = popularity for everyone
    exclude_seen: bool = True

    def __post_init__(self) -> None:
        if self.model_dir is not None and not str(self.model_dir).strip():
            raise LeanrankError("rec.model_dir must be a folder path or null")


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 8                # rerank requests scored together
    max_wait_ms: float = 5.0          # how long the first request waits for company
    queue_size: int = 64              # waiting rerank requests; beyond → 503 + Retry-After
    deadline_ms: float = 2000.0       # per request; past it → 504 with a JSON reason
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        _positive(self, "max_batch", "queue_size", "retry_after_s")
        if self.max_wait_ms < 0 or self.deadline_ms <= 0:
            raise LeanrankError(f"need max_wait_ms >= 0 and deadline_ms > 0, got {self.max_wait_ms}, "
                                f"{self.deadline_ms}")


@dataclass(frozen=True)
class LimitsConfig:
    max_query_chars: int = 256
    max_k: int = 50
    max_body_bytes: int = 16_384
    max_history: int = 200
    max_id_chars: int = 128

    def __post_init__(self) -> None:
        _positive(self, "max_query_chars", "max_k", "max_body_bytes", "max_history", "max_id_chars")


@dataclass(frozen=True)
class FeedbackConfig:
    rewards: MappingProxyType = field(default_factory=lambda: DEFAULT_REWARDS)  # event → reward for the bandit

    def __post_init__(self) -> None:
        if not isinstance(self.rewards, dict | MappingProxyType) or not self.rewards:
            raise LeanrankError("feedback.rewards must be a non-empty mapping event → reward")
        for name, value in self.rewards.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise LeanrankError(f"feedback.rewards.{name} must be a number, got {value!r}")
        object.__setattr__(self, "rewards", MappingProxyType(dict(self.rewards)))


@dataclass(frozen=True)
class PathsConfig:
    feedback_db: str = "runs/serve/feedback.sqlite"
    bandit_state: str = "runs/serve/bandit.sqlite"
    request_log: str = "runs/serve/requests.jsonl"


@dataclass(frozen=True)
class PrivacyConfig:
    secret_env: str = "LEANRANK_SERVE_SECRET"   # HMAC key for user ids
    insecure_dev_secret: bool = False           # demo only: a fixed, public key when the env var is unset
    log_queries: bool = False                   # raw query text in the request log

    def __post_init__(self) -> None:
        if not self.secret_env:
            raise LeanrankError("privacy.secret_env must name an environment variable")


@dataclass(frozen=True)
class AdminConfig:
    token_env: str = "LEANRANK_ADMIN_TOKEN"     # bearer token for POST /admin/reload
    check_queries: int = 8                      # queries of the reload check set


@dataclass(frozen=True)
class BootstrapConfig:
    enabled: bool = False             # synthetic demo: train missing variant / rec dirs at first start
    search_steps: int = 80
    search_seconds: float = 120.0
    rec_seconds: float = 45.0

    def __post_init__(self) -> None:
        _positive(self, "search_steps")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise LeanrankError(f"server.port must be in 0..65535, got {self.port}")


SECTIONS = {"catalog": CatalogConfig, "recall": RecallConfig, "rec": RecConfig, "batching": BatchingConfig,
            "limits": LimitsConfig, "feedback": FeedbackConfig, "paths": PathsConfig, "privacy": PrivacyConfig,
            "admin": AdminConfig, "bootstrap": BootstrapConfig, "server": ServerConfig}


@dataclass(frozen=True)
class ServeConfig:
    variants: MappingProxyType                  # variant name → model dir or builtin:bm25 / builtin:dense
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)
    rec: RecConfig = field(default_factory=RecConfig)
    bandit: MappingProxyType = field(default_factory=lambda: MappingProxyType({"policy": "thompson"}))
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.variants, dict | MappingProxyType) or not self.variants:
            raise LeanrankError("variants must map at least one variant name to a model dir")
        for name, where in self.variants.items():
            if not isinstance(name, str) or not name or not isinstance(where, str) or not where:
                raise LeanrankError(f"variants: {name!r} must map a name to a model dir, got {where!r}")
            if where.startswith("builtin:") and where not in BUILTIN_VARIANTS:
                raise LeanrankError(f"variants.{name}: {where!r} is not one of {', '.join(BUILTIN_VARIANTS)}")
            if where == "builtin:dense" and self.recall.dense_k == 0:
                raise LeanrankError(f"variants.{name}: builtin:dense needs recall.dense_k > 0")
        if not isinstance(self.bandit, dict | MappingProxyType):
            raise LeanrankError("bandit must be a mapping of BanditConfig options")
        if "arms" in self.bandit:
            raise LeanrankError("bandit.arms is not set by hand: the arms are the variant names")
        if self.limits.max_k > self.recall.rerank_n:
            raise LeanrankError(f"limits.max_k={self.limits.max_k} exceeds recall.rerank_n={self.recall.rerank_n}")
        if self.bootstrap.enabled and (self.catalog.source != "synthetic" or self.catalog.n_products):
            raise LeanrankError("bootstrap.enabled trains demo models on the default synthetic catalog only "
                                "(catalog.source: synthetic, no n_products)")
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        object.__setattr__(self, "bandit", MappingProxyType(dict(self.bandit)))

    @classmethod
    def from_dict(cls, data: dict) -> ServeConfig:
        if not isinstance(data, dict):
            raise LeanrankError("a serve config must be a YAML mapping")
        unknown = sorted(set(data) - set(SECTIONS) - {"variants", "bandit"})
        if unknown:
            allowed = ", ".join(sorted([*SECTIONS, "variants", "bandit"]))
            raise LeanrankError(f"unknown serve config section {unknown[0]!r}; allowed: {allowed}")
        sections = {}
        for name, section in SECTIONS.items():
            value = data.get(name)
            if value is not None and not isinstance(value, dict):
                raise LeanrankError(f"serve config section {name!r} must be a mapping")
            sections[name] = from_mapping(section, value, name)
        return cls(variants=data.get("variants") or {}, bandit=data.get("bandit") or {"policy": "thompson"},
                   **sections)

    def bandit_config(self):
        """The ``BanditConfig`` for these variants (imports the bandit module)."""
        from leanrank.serve.bandit import BanditConfig

        return from_mapping(BanditConfig, {**self.bandit, "arms": list(self.variants)}, "bandit")


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a serve YAML file; every problem is a ``LeanrankError`` naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LeanrankError(f"{path}: serve config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LeanrankError(f"{path}: not valid YAML ({exc})") from exc
    try:
        return ServeConfig.from_dict(data)
    except LeanrankError as exc:
        raise LeanrankError(f"{path}: {exc}") from exc
    except TypeError as exc:  # a field of the wrong shape
        raise LeanrankError(f"{path}: {exc}") from exc
