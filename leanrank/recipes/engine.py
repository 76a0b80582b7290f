"""Run a recipe: its steps in order, each into ``<out>/<step>/`` (the model in ``<out>/<step>/model/``).

A step is *finished* when ``<out>/<step>/step.json`` records the step's current key (a hash of its
kind, input and config) and the run id of the step before it, and its model folder is there. The
first step that is not finished — or the ``from_step`` — runs, and so does every step after it:
a changed config reruns that step and everything downstream, an unchanged recipe reruns nothing.

A step runs in ``<out>/.<step>.partial/`` and is renamed into place only once it succeeded, so a
failed step never looks finished. A failed training step (train, distill, train_rec, distill_rec)
keeps its partial folder and continues from its checkpoints on the next run, if its key is the same.

>>> run_recipe("recipes/demo.yaml")                        # doctest: +SKIP
>>> run_recipe("recipes/demo.yaml", from_step="pruned")    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json
from leanrank.models.card import CARD_FILE, ModelCard
from leanrank.recipes.schema import Recipe, Step, load_recipe
from leanrank.recipes.steps import KINDS, StepContext

MARKER = "step.json"             # <out>/<step>/step.json: the step finished (key, run id, seconds, summary)
ATTEMPT = "attempt.json"         # <out>/.<step>.partial/attempt.json: which key a partial folder belongs to
RUN_FILE = "recipe-run.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _model_dir(recipe: Recipe, step: Step) -> Path:
    return recipe.out / step.name / "model"


def plan(recipe: Recipe, from_step: str | None = None) -> tuple[int, str | None]:
    """Index of the first step to run (every later one runs too) and why; ``len(steps)`` when all are done."""
    start = recipe.index(from_step) if from_step is not None else None
    after = None
    for i, step in enumerate(recipe.steps):
        if i == start:
            return i, "--from"
        marker = _read(recipe.out / step.name / MARKER)
        reason = ("not run yet" if marker is None else
                  "config changed" if marker.get("key") != step.key else
                  "an earlier step ran again" if marker.get("after") != after else
                  "its input folder changed" if marker.get("input_id") != input_id(recipe, step) else
                  "its model folder is missing"
                  if step.makes and not (_model_dir(recipe, step) / CARD_FILE).is_file() else None)
        if reason:
            return i, reason
        after = marker["run_id"]
    return len(recipe.steps), None


def run_recipe(recipe: str | Path | dict | Recipe, *, from_step: str | None = None, dry_run: bool = False,
               data_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Validate the whole recipe, then run what is not finished; returns (and writes to
    ``<out>/recipe-run.json``) each step's status, seconds and output folder."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, data_dir=data_dir)
    start, reason = plan(recipe, from_step)
    n = len(recipe.steps)
    run = {"recipe": recipe.name, "source": recipe.source, "recipe_hash": recipe.digest, "dataset": recipe.dataset,
           "out": str(recipe.out), "dry_run": dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "steps": [{"name": s.name, "kind": s.kind, "input": _input_dir(recipe, s),
                      "output": str(recipe.out / s.name), "seconds": None,
                      "status": "skipped" if i < start else "would run" if dry_run else "not run"}
                     for i, s in enumerate(recipe.steps)]}
    log(f"recipe {recipe.name} ({recipe.digest}): {n} steps into {recipe.out}"
        + (f"; from step {start + 1} ({recipe.steps[start].name}: {reason})" if start < n else "; all finished"))
    after = None
    for i, step in enumerate(recipe.steps):
        row = run["steps"][i]
        head = f"[{i + 1}/{n}] {step.name} ({step.kind})"
        if i < start:
            marker = _read(recipe.out / step.name / MARKER)
            after = marker["run_id"]
            row.update(seconds=marker["seconds"], summary=marker["summary"], finished=marker["finished"])
            log(f"{head}: finished earlier ({marker['finished']}), skipped")
            continue
        if dry_run:
            log(f"{head}: would run{' ← ' + row['input'] if row['input'] else ''}")
            continue
        log(f"{head}: running{' ← ' + row['input'] if row['input'] else ''}")
        row["status"] = "running"
        write_json(recipe.out / RUN_FILE, run)
        t0 = time.perf_counter()
        try:
            marker = run_step(recipe, step, after, log)
        except BaseException as exc:
            row.update(status="failed", seconds=round(time.perf_counter() - t0, 1), error=str(exc).splitlines()[0]
                       if str(exc) else type(exc).__name__)
            write_json(recipe.out / RUN_FILE, run)
            log(f"{head}: failed after {row['seconds']} s")
            raise
        after = marker["run_id"]
        row.update(status="done", seconds=marker["seconds"], summary=marker["summary"])
        log(f"{head}: done in {marker['seconds']} s → {recipe.out / step.name}")
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if not dry_run:
        write_json(recipe.out / RUN_FILE, run)
    return run


def input_id(recipe: Recipe, step: Step) -> str | None:
    """A fingerprint of an input folder given by path (its card, which a new model rewrites); steps
    reading earlier steps are tracked by their run ids instead."""
    if step.input is None or step.input in {s.name for s in recipe.steps}:
        return None
    for name in (CARD_FILE, "config.json"):
        if (Path(step.input) / name).is_file():
            return hashlib.sha256((Path(step.input) / name).read_bytes()).hexdigest()[:16]
    return None


def _input_dir(recipe: Recipe, step: Step) -> str | None:
    if step.input is None:
        return None
    names = {s.name: s for s in recipe.steps}
    return str(_model_dir(recipe, names[step.input])) if step.input in names else step.input


def _context(recipe: Recipe, step: Step, work: Path, resume: bool, log) -> StepContext:
    earlier = recipe.steps[: recipe.index(step.name)]
    models = {s.name: _model_dir(recipe, s) for s in earlier if s.makes}
    first = recipe.steps[0]
    root = Path(_input_dir(recipe, first)) if first.input else models.get(first.name)
    inp = _input_dir(recipe, step)
    return StepContext(step=step.name, dataset=recipe.dataset, data_dir=recipe.data_dir,
                       input=Path(inp) if inp else None, work=work, models=models, root=root, resume=resume, log=log)


def run_step(recipe: Recipe, step: Step, after: str | None, log: Callable[[str], None] = print) -> dict:
    """Run one step in its partial folder, record its lineage, then rename it into place; returns its marker."""
    final, work = recipe.out / step.name, recipe.out / f".{step.name}.partial"
    attempt = {"key": step.key, "after": after}
    resume = KINDS[step.kind].resumable and work.is_dir() and _read(work / ATTEMPT) == attempt
    if work.exists() and not resume:
        shutil.rmtree(work)
    if resume:
        log(f"continuing the failed attempt in {work}")
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / ATTEMPT, attempt)
    ctx = _context(recipe, step, work, resume, log)
    t0 = time.perf_counter()
    summary = KINDS[step.kind].run(ctx, step.config) or {}
    seconds = round(time.perf_counter() - t0, 1)
    if step.makes:
        if not (ctx.model_dir / CARD_FILE).is_file():
            raise LeanrankError(f"step {step.name!r} ({step.kind}) wrote no model into {ctx.model_dir}")
        record_lineage(ctx.model_dir, recipe, step, ctx.input)
    marker = {"recipe": recipe.name, "recipe_hash": recipe.digest, "step": step.name, "kind": step.kind,
              "key": step.key, "after": after, "run_id": uuid.uuid4().hex, "input": ctx.input,
              "input_id": input_id(recipe, step),
              "config": asdict(step.config), "seconds": seconds, "summary": summary,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(work / MARKER, marker)
    (work / ATTEMPT).unlink()
    old = recipe.out / f".{step.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return json.loads(json.dumps(marker, default=str))


def record_lineage(model_dir: Path, recipe: Recipe, step: Step, input_dir: Path | None) -> None:
    """The card's parent becomes the input folder; the recipe step is appended to its steps."""
    card = ModelCard.load(model_dir, kind="cross-encoder")
    if input_dir is not None:
        card.parent = str(input_dir)
    card.add_step("recipe", recipe=recipe.name, recipe_step=step.name, kind=step.kind,
                  config=step.settings["config"], config_key=step.key, recipe_hash=recipe.digest)
    card.save(model_dir)
