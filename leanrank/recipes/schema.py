"""Recipe YAML → a validated ``Recipe``. Every step is checked before any of them runs: its kind,
its options (one error line naming the step, the key and the allowed keys or values), what it reads
(an earlier step or an existing model folder) and whether it can read that kind of model.

    name: demo                     # default: the file name
    dataset: synthetic             # what every step trains, calibrates and evaluates on
    out: runs/recipe-demo          # default: runs/recipe-NAME; step S writes OUT/S/
    steps:
      - {name: teacher, kind: train, train: {max_steps: 60}}
      - {name: pruned, kind: prune, amount: 0.5}      # input: the step before (the default)
      - {name: onnx, kind: export, input: teacher}    # or an earlier step, or a model folder path

``data_dir`` may be given too; ``leanrank run --data-dir`` or $LEANRANK_DATA otherwise.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from leanrank.core.config import from_mapping
from leanrank.core.errors import LeanrankError

TOP_KEYS = ("name", "dataset", "data_dir", "out", "steps")
STEP_KEYS = ("name", "kind", "input")
NEEDS_DATA = ("homedepot", "beauty", "sports")
FLOAT, QUANTIZED, ONNX, SEQREC = "float", "quantized", "onnx", "seqrec"   # what a model folder holds
SEARCH_MODELS = (FLOAT, QUANTIZED, ONNX)


# ------------------------------------------------------------------------------ typed mappings
def choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise LeanrankError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _describe(hint) -> str:
    if get_union_args(hint):
        return " or ".join(_describe(a) for a in get_union_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    return {tuple: "a list", dict: "a mapping", float: "a number", int: "an integer", bool: "true/false",
            str: "a string"}.get(origin, getattr(origin, "__name__", str(origin)))


def get_union_args(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()


def _coerce(hint, value):
    """``value`` if it fits ``hint`` (a number written as a string, e.g. YAML's 3e-5, becomes a float);
    raises ValueError otherwise. Hints it does not know pass (the config class checks them)."""
    if get_union_args(hint):
        for arg in get_union_args(hint):
            try:
                return _coerce(arg, value)
            except ValueError:
                pass
        raise ValueError
    origin = typing.get_origin(hint) or hint
    ok = {type(None): value is None, bool: isinstance(value, bool), str: isinstance(value, str),
          int: isinstance(value, int) and not isinstance(value, bool),
          dict: isinstance(value, dict), tuple: isinstance(value, list | tuple)}
    if origin is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value)             # ValueError when it is not a number
        raise ValueError
    if origin in ok and not ok[origin]:
        raise ValueError
    args = typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v) for v in value)
    return value


def build(cls, values: dict | None, what: str | None = None, extra_keys: tuple[str, ...] = ()):
    """``cls(**values)`` with every key known and every value of its field's type, else one error line
    naming the key and the allowed keys or the expected type (``what`` prefixes nested sections)."""
    if values is not None and not isinstance(values, dict):
        raise LeanrankError(f"{what or 'options'} must be a mapping, got {values!r}")
    values = dict(values or {})
    where = f"{what}." if what else ""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        label = f"{what} option" if what else "option"
        raise LeanrankError(f"unknown {label} {unknown[0]!r}; allowed: {', '.join(sorted(known | set(extra_keys)))}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        try:
            values[key] = _coerce(hints[key], value)
        except (ValueError, TypeError):
            raise LeanrankError(f"{where}{key} must be {_describe(hints[key])}, got {value!r}") from None
    try:
        return from_mapping(cls, values, what or "step")
    except (TypeError, ValueError) as exc:
        raise LeanrankError(f"{what or cls.__name__}: {exc}") from None


# ------------------------------------------------------------------------------ the recipe
@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    input: str | None              # an earlier step's name, a model folder path, or None
    config: Any                    # the kind's frozen config
    makes: str | None              # the format of the model it writes (None: reports only)

    @property
    def settings(self) -> dict:
        """Kind, input and every config value (defaults filled in): what the step's key hashes."""
        return json.loads(json.dumps({"kind": self.kind, "input": self.input, "config": asdict(self.config)},
                                     default=str))

    @property
    def key(self) -> str:
        return _digest(self.settings)


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    data_dir: str | None
    out: Path
    steps: tuple[Step, ...]
    source: str | None = None

    @property
    def digest(self) -> str:
        return _digest({"name": self.name, "dataset": self.dataset, "steps": [s.settings for s in self.steps]})

    def index(self, name: str) -> int:
        names = [s.name for s in self.steps]
        if name not in names:
            raise LeanrankError(f"recipe {self.name!r} has no step {name!r}; steps: {', '.join(names)}")
        return names.index(name)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def read_recipe(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LeanrankError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LeanrankError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LeanrankError(f"{path}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    return {"name": path.stem, **data}


def load_recipe(source: str | Path | dict, data_dir: str | Path | None = None) -> Recipe:
    """Parse and validate a recipe file (or an already-read mapping); ``data_dir`` overrides the recipe's."""
    data = dict(source) if isinstance(source, dict) else read_recipe(source)
    where = f"{source}: " if not isinstance(source, dict) else ""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise LeanrankError(f"{where}unknown recipe key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    for key in ("name", "dataset"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise LeanrankError(f"{where}recipe needs `{key}` (a string)")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise LeanrankError(f"{where}recipe needs `steps`: a list of mappings with name, kind and options")
    data_dir = str(data_dir) if data_dir else data.get("data_dir")
    parsed = _parse_steps(steps, data["dataset"], where)
    if data["dataset"] in NEEDS_DATA:
        from leanrank.data.registry import resolve_data_dir

        try:
            resolve_data_dir(data_dir)      # no data folder → an error now, not after the first step
        except LeanrankError as exc:
            raise LeanrankError(f"{where}dataset {data['dataset']}: {exc}") from None
    out = Path(data.get("out") or f"runs/recipe-{data['name']}")
    return Recipe(data["name"], data["dataset"], data_dir, out, tuple(parsed),
                  None if isinstance(source, dict) else str(source))


def _parse_steps(raw_steps: list[dict], dataset: str, where: str) -> list[Step]:
    from leanrank.recipes.steps import KINDS, output_format

    names = [s.get("name") for s in raw_steps]
    parsed: list[Step] = []
    formats: dict[str, str | None] = {}         # earlier step → the format of its model
    previous = None                            # the last earlier step that made a model
    for i, raw in enumerate(raw_steps):
        name, kind = raw.get("name"), raw.get("kind")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise LeanrankError(f"{where}step {i + 1} needs a `name` (a folder name: no '/', no leading '.')")
        label = f"{where}step {name!r}" + (f" ({kind})" if isinstance(kind, str) else "")
        if name in formats:
            raise LeanrankError(f"{label}: the name is used twice; step names must be unique")
        if kind not in KINDS:
            raise LeanrankError(f"{label}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        k = KINDS[kind]
        try:
            check_dataset(dataset, k.family)
            config = build(k.config, {x: v for x, v in raw.items() if x not in STEP_KEYS}, None, STEP_KEYS)
            ref = raw.get("input")
            if ref is not None and k.input == "none":
                raise LeanrankError(f"a {kind} step takes no input" + (f"; name models with {k.refs[0]}"
                                                                      if k.refs else ""))
            if ref is None and k.input == "previous":
                if previous is None:
                    raise LeanrankError("needs an input: name a model folder with `input:` (nothing before it "
                                        "makes a model)")
                ref = previous
            given = None if ref is None else _format_of(str(ref), formats, names, "input")
            makes = output_format(kind, config, given)
            for field_name in k.refs:
                value = getattr(config, field_name)
                for r in (value if isinstance(value, tuple) else (value,) if value else ()):
                    fmt = _format_of(r, formats, names, field_name)
                    if fmt not in k.accepts:
                        raise LeanrankError(f"{field_name}: {r!r} is a {fmt} model; a {kind} step reads "
                                            f"{' or '.join(k.accepts)} models")
        except LeanrankError as exc:
            raise LeanrankError(f"{label}: {exc}") from None
        parsed.append(Step(name, kind, None if ref is None else str(ref), config, makes))
        formats[name] = makes
        previous = name if makes else previous
    return parsed


def _format_of(ref: str, formats: dict, names: list, what: str) -> str:
    """The format of an earlier step's model or of a model folder on disk."""
    if ref in formats:
        if formats[ref] is None:
            raise LeanrankError(f"{what}: step {ref!r} makes no model")
        return formats[ref]
    if ref in names:
        raise LeanrankError(f"{what}: step {ref!r} does not come before this one; a step reads earlier steps only")
    path = Path(ref)
    if not path.is_dir():
        earlier = ", ".join(formats) or "none"
        raise LeanrankError(f"{what}: {ref!r} is neither an earlier step ({earlier}) nor a model folder")
    return folder_format(path)


def folder_format(path: Path) -> str:
    if (path / "model.onnx").exists():
        return ONNX
    card_path = path / "leanrank.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    if card.get("kind") == "seqrec":
        return SEQREC
    if any(s.get("step") == "quantize" for s in card.get("steps", [])):
        return QUANTIZED
    if not (path / "config.json").is_file():
        raise LeanrankError(f"{path} is not a model folder (no config.json)")
    return FLOAT


def check_dataset(dataset: str, family: str) -> None:
    from leanrank.data.registry import SEARCH_DATASETS
    from leanrank.data.sequences import SEQUENCE_DATASETS

    allowed = SEARCH_DATASETS if family == "search" else SEQUENCE_DATASETS
    if dataset not in allowed and not (Path(dataset).suffix and Path(dataset).is_file()):
        raise LeanrankError(f"dataset {dataset!r} is not a {family} dataset; allowed: {', '.join(allowed)} "
                            "or a file path")
