"""What ``leanrank quantize`` and ``leanrank export`` run: data → pairs → the verbs → a folder.

Calibration pairs come from the train split, parity pairs from the validation split (real
judged pairs, seeded samples); mixed-precision plans and QAT are judged on validation NDCG@10.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from leanrank.core.errors import LeanrankError
from leanrank.core.io import write_json

TORCH_SCHEMES = ("int8-dynamic", "int8-static", "int8-weight", "int4-weight", "fp16", "bf16", "emb-int8", "emb-int4")
ORT_SCHEMES = ("ort-int8-dynamic", "ort-int8-static")
ALL_SCHEMES = (*TORCH_SCHEMES, *ORT_SCHEMES, "int8-inductor", "int8-qat", "mixed")


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise LeanrankError(f"{out} exists; choose another --out or pass --overwrite")


def export_model(model_dir: Path, out: Path, dataset: str, data_dir, parity_size: int = 256,
                 overwrite: bool = False, fuse: bool = True, log=print) -> dict:
    from leanrank.data.registry import load_search_dataset
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.runtime.export import export_onnx

    _refuse_existing(out, overwrite)
    model = CrossEncoder.from_pretrained(model_dir)
    pairs = load_search_dataset(dataset, data_dir).split()["valid"].sample_pairs(parity_size, seed=1)
    log(f"exporting {model_dir} to ONNX; parity on {len(pairs)} validation pairs ...")
    result = export_onnx(model, out, pairs, overwrite=overwrite, fuse=fuse)
    log(f"ok {out}: max |diff| {result['max_abs_diff']:.2e}, Spearman {result['spearman']:.6f}; "
        f"{result['fused_attention_blocks']} attention blocks fused")
    return result


def quantize_model(model_dir: Path, scheme: str, out: Path, dataset: str, data_dir, *,
                   calibration_size: int = 512, observer: str = "percentile", group_size: int = 64,
                   budget: float = 0.005, valid_queries: int = 150, steps: int = 300, lr: float = 1e-5,
                   min_spearman: float = 0.98, overwrite: bool = False, log=print) -> dict:
    """Quantize the model folder ``model_dir`` with ``scheme`` into ``out``; returns a summary."""
    from leanrank.data.registry import load_search_dataset

    if scheme not in ALL_SCHEMES:
        raise LeanrankError(f"unknown scheme {scheme!r}; choose one of: {', '.join(ALL_SCHEMES)}")
    _refuse_existing(out, overwrite)
    is_onnx = (Path(model_dir) / "model.onnx").exists()
    if scheme in ORT_SCHEMES and not is_onnx:
        raise LeanrankError(f"{scheme} works on an exported folder: run `leanrank export {model_dir} --out DIR` first")
    if scheme not in ORT_SCHEMES and scheme != "mixed" and is_onnx:
        raise LeanrankError(f"{scheme} quantizes a torch model folder, and {model_dir} is ONNX; use ort-int8-*")
    splits = load_search_dataset(dataset, data_dir).split()
    parity_pairs = splits["valid"].sample_pairs(256, seed=1)
    calibration = splits["train"].sample_pairs(calibration_size, seed=2)
    if scheme in ORT_SCHEMES:
        from leanrank.runtime.export import ort_quantize

        result = ort_quantize(model_dir, out, parity_pairs, calibration=calibration if scheme.endswith("static") else (),
                              method="percentile" if observer == "percentile" else "minmax",
                              min_spearman=min_spearman, overwrite=overwrite)
        log(f"ok {out}: Spearman vs float graph {result['spearman']:.4f}")
        return {"parity": result}
    if scheme == "mixed":
        return _mixed(Path(model_dir), out, splits, budget, valid_queries, parity_pairs, is_onnx, overwrite, log)
    if scheme == "int8-qat":
        return _qat(Path(model_dir), out, splits, steps, lr, valid_queries, log)
    if scheme == "int8-inductor":
        return _inductor(Path(model_dir), out, calibration, parity_pairs, min_spearman, log)
    from leanrank.compress.quantize import make_config, quantize_
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.runtime.parity import check_parity

    model = CrossEncoder.from_pretrained(model_dir)
    queries, titles = [q for q, _ in parity_pairs], [t for _, t in parity_pairs]
    reference = model.score(queries, titles)
    overrides = {"calibration": calibration, "observer": observer} if scheme == "int8-static" else {}
    if scheme.endswith("-weight"):
        overrides["group_size"] = group_size
    report = quantize_(model, make_config(scheme, **overrides))
    result = check_parity(reference, model.score(queries, titles), f"the {scheme} model", None, min_spearman)
    model.card.steps[-1]["parity_vs_float"] = result
    model.save(out)
    log(f"ok {out}: {len(report.swapped)} modules quantized, {len(report.skipped)} kept "
        f"({report.bytes_before / 1e6:.1f} MB → {report.bytes_after / 1e6:.1f} MB), Spearman vs float {result['spearman']:.4f}")
    return {"parity": result, "swapped": len(report.swapped), "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after}


def _inductor(model_dir: Path, out: Path, calibration, parity_pairs, min_spearman: float, log) -> dict:
    """PT2E static int8 compiled by Inductor (``leanrank.runtime.inductor``), parity-checked."""
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.runtime.inductor import InductorInt8Config, quantize_inductor
    from leanrank.runtime.parity import check_parity

    model = CrossEncoder.from_pretrained(model_dir)
    queries, titles = [q for q, _ in parity_pairs], [t for _, t in parity_pairs]
    reference = model.score(queries, titles)
    log(f"PT2E int8 on {len(calibration)} calibration pairs, then torch.compile (a minute or two on 2 CPUs) ...")
    scorer = quantize_inductor(model, InductorInt8Config(calibration_pairs=len(calibration)), calibration)
    result = check_parity(reference, scorer.score(queries, titles), "the int8-inductor model", None, min_spearman)
    scorer.card.steps[-1]["parity_vs_float"] = result
    scorer.save(out)
    step = scorer.card.steps[-1]
    log(f"ok {out}: {step['linear_layers']} Linear layers int8 ({step['bytes_before'] / 1e6:.1f} MB → "
        f"{step['bytes_after'] / 1e6:.1f} MB), Spearman vs float {result['spearman']:.4f}")
    return {"parity": result, "bytes_before": step["bytes_before"], "bytes_after": step["bytes_after"]}


def _validator(splits, valid_queries: int):
    from leanrank.models.bm25 import BM25Index
    from leanrank.train.search import rerank_validator

    valid = splits["valid"]
    return rerank_validator(valid, BM25Index.build(valid.titles), valid_queries)


def _mixed(model_dir: Path, out: Path, splits, budget: float, valid_queries: int, parity_pairs,
           is_onnx: bool, overwrite: bool, log) -> dict:
    """Sensitivity-driven plan: ORT dynamic int8 for an ONNX folder, torch dynamic int8 otherwise."""
    from leanrank.compress.mixed import plan_mixed_precision
    from leanrank.core.modules import block_of
    from leanrank.runtime.loading import load_scorer

    validate = _validator(splits, valid_queries)
    evaluate = lambda scorer: validate(scorer)["ndcg@10"]  # noqa: E731
    base = load_scorer(model_dir)
    baseline = evaluate(base)
    log(f"float validation NDCG@10 on {valid_queries} queries: {baseline:.4f}")
    work = Path(tempfile.mkdtemp(prefix="leanrank-mixed-"))
    try:
        if is_onnx:
            from leanrank.runtime.export import matmul_blocks, ort_quantize
            from leanrank.runtime.ort import OrtScorer

            blocks = sorted({b for b in matmul_blocks(model_dir / "model.onnx").values() if b != "classifier"})
            counter = iter(range(10_000))

            def build(float_blocks):
                dest = work / f"plan-{next(counter)}"
                ort_quantize(model_dir, dest, parity_pairs, exclude_blocks=[*float_blocks, "classifier"],
                             min_spearman=0.0, overwrite=True)
                return OrtScorer(dest)
        else:
            from torch import nn

            from leanrank.compress.quantize import DynamicInt8Config, default_filter, quantize_
            from leanrank.core.modules import blocks_filter, named_modules_of

            blocks = sorted({block_of(f) for f, m in named_modules_of(base, nn.Linear, default_filter)})

            def build(float_blocks):
                model = copy.deepcopy(base)
                quantize_(model, DynamicInt8Config(), blocks_filter(float_blocks, default_filter))
                return model

        built: dict[tuple, object] = {}     # the last plan built: the chosen one is not built twice

        def build_last(float_blocks):
            key = tuple(float_blocks)
            if key not in built:
                built.clear()
                built[key] = build(float_blocks)
            return built[key]

        plan = plan_mixed_precision(build_last, evaluate, blocks, baseline, budget, log)
        final = build_last(plan.float_blocks)
        if is_onnx:
            from leanrank.models.card import ModelCard

            src = Path(final.directory)
            card = ModelCard.load(src, kind="cross-encoder")
            card.steps[-1]["mixed_plan"] = plan.to_dict()
            card.save(src)
            write_json(src / "mixed-plan.json", plan.to_dict())
            if out.exists():
                shutil.rmtree(out)
            shutil.move(str(src), str(out))
        else:
            final.card.steps[-1]["mixed_plan"] = plan.to_dict()
            final.save(out)
            write_json(out / "mixed-plan.json", plan.to_dict())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"ok {out}: float blocks {plan.float_blocks or 'none'}, validation NDCG@10 {plan.metric:.4f} "
        f"(float {baseline:.4f}, budget {budget:.1%})")
    return plan.to_dict()


def _qat(model_dir: Path, out: Path, splits, steps: int, lr: float, valid_queries: int, log) -> dict:
    """Fake-quant fine-tuning with ``fit`` on the train split, then conversion to static int8."""
    from leanrank.compress.qat import convert_qat_, prepare_qat_
    from leanrank.models.bm25 import BM25Index
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.train.examples import build_examples
    from leanrank.train.fit import TrainConfig, fit

    model = CrossEncoder.from_pretrained(model_dir)
    train = splits["train"]
    examples = build_examples(train, BM25Index.build(train.titles), seed=3)
    prepare_qat_(model)
    config = TrainConfig(lr=lr, max_steps=steps, eval_every=steps, warmup_ratio=0.0, seed=3)
    with tempfile.TemporaryDirectory(prefix="leanrank-qat-") as run_dir:
        record = fit(model, examples, config, run_dir, validate=_validator(splits, valid_queries))
    report = convert_qat_(model)
    model.card.steps[-1]["qat"] = {"steps": record["steps"], "lr": lr, "best_valid_ndcg@10": record.get("best_ndcg@10")}
    model.save(out)
    log(f"ok {out}: QAT {record['steps']} steps, {len(report.swapped)} Linear layers now static int8")
    return {"steps": record["steps"], "best_valid_ndcg@10": record.get("best_ndcg@10")}
