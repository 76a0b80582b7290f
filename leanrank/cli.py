"""``leanrank`` command line. Bad input → one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from leanrank.core.errors import LeanrankError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress e-commerce search and recommendation Transformers.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and download datasets.")
train_app = typer.Typer(no_args_is_help=True, help="Train models.")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
bandit_app = typer.Typer(no_args_is_help=True, help="Bandits that pick a model variant per request.")
app.add_typer(bandit_app, name="bandit")

DataDir = typer.Option(None, "--data-dir", help="Benchmark data folder (default: $LEANRANK_DATA).")
RecoverSteps = typer.Option(0, help="Then distil from the original model's cached scores (steps).")
TransferDir = typer.Option(None, help="Cache of those scores, reused across runs (default: temp).")


@data_app.command("info")
def data_info(data_dir: Path | None = DataDir, dataset: str = typer.Option(
        "all", help="synthetic, homedepot, a relevance file, or all")) -> None:
    """Print what is found: queries, products, pairs, label distribution per split."""
    from leanrank.cli_views import print_data_info

    print_data_info(dataset, data_dir)


@data_app.command("download")
def data_download(name: str = typer.Argument(..., help="Dataset name (see `leanrank data sources`)."),
                  to: Path = typer.Option(..., "--to", help="Data folder to download into.")) -> None:
    """Download a public dataset (sha256-checked, resumable, atomic) or print how to get it."""
    from leanrank.data.download import download

    for path in download(name, to):
        typer.echo(f"ok {path}")


@data_app.command("sources")
def data_sources() -> None:
    """List the datasets `leanrank data download` knows."""
    from leanrank.cli_views import print_sources

    print_sources()


@train_app.command("search")
def train_search_cmd(
    dataset: str = typer.Option("synthetic", help="synthetic, homedepot or a relevance file"),
    data_dir: Path | None = DataDir,
    out: Path = typer.Option(..., help="Run folder (checkpoints, run.json, tb/, model/)."),
    init: str | None = typer.Option(None, help="Start from this model dir (default MiniLM-L6)."),
    num_layers: int | None = typer.Option(None, help="Keep this many layers of the encoder."),
    layer_pick: str = typer.Option("spread", help="spread (every k-th, last kept) or first"),
    loss: str = typer.Option("bce", help="bce, mse, listwise or bce+listwise"),
    optimizer: str = "adamw", lr: float = 5e-5, epochs: int = 1, batch_size: int = 32, grad_accum: int = 1,
    precision: str = typer.Option("fp32", help="fp32, bf16 (autocast) or fp16 (CUDA)"),
    max_length: int = 48, max_steps: int | None = None,
    eval_every: int | None = typer.Option(None, help="Validate every N steps (default: each epoch)."),
    patience: int = 2, valid_queries: int | None = 300, max_train_queries: int | None = None,
    bm25_negatives: int = 3, random_negatives: int = 1,
    bm25_depth: int = typer.Option(50, help="Hard negatives come from this BM25 top list."),
    checkpoint_every: int = 100, seed: int = 0, device: str | None = None,
    resume: bool = typer.Option(False, "--resume", help="Continue from out/checkpoint.pt."),
) -> None:
    """Fine-tune a cross-encoder (runs under `torchrun --nproc_per_node N` too)."""
    from leanrank.data.registry import load_search_dataset
    from leanrank.train.fit import TrainConfig
    from leanrank.train.search import SearchTrainSetup, train_search

    config = TrainConfig(loss=loss, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
                         grad_accum=grad_accum, precision=precision, max_steps=max_steps,
                         eval_every=eval_every, patience=patience, checkpoint_every=checkpoint_every,
                         seed=seed)
    setup = SearchTrainSetup(init=init, num_layers=num_layers, layer_pick=layer_pick, max_length=max_length,
                             bm25_negatives=bm25_negatives, bm25_depth=bm25_depth,
                             random_negatives=random_negatives, valid_queries=valid_queries, max_train_queries=max_train_queries)
    splits = load_search_dataset(dataset, data_dir).split()
    _, record = train_search(splits, out, config, setup, resume=resume, device=device)
    typer.echo(f"model: {out / 'model'}  best valid {config.metric}: {record.get('best_' + config.metric)}")


@train_app.command("rec")
def train_rec_cmd(
    dataset: str = typer.Option("synthetic", help="beauty, sports, synthetic or an interactions file"),
    data_dir: Path | None = DataDir,
    out: Path = typer.Option(..., help="Run folder (checkpoint, run.json, tb/, best/, model/)."),
    variant: str = typer.Option("sasrec", help="sasrec (causal) or bert4rec (bidirectional, masked)"),
    layers: int = 2, hidden: int = 64, heads: int = 2, max_len: int = 50, dropout: float = 0.2,
    loss: str = typer.Option("full", help="full softmax, or sampled (log-Q corrected)"),
    negatives: int = typer.Option(256, help="Sampled softmax: negatives per batch."),
    attributes: bool = typer.Option(True, "--attributes/--no-attributes", help="Attribute side information."),
    titles: bool = typer.Option(False, "--titles/--no-titles", help="Frozen MiniLM title embeddings."),
    attribute_loss_weight: float = typer.Option(0.0, help="Multi-task attribute prediction loss weight."),
    epochs: int = 200, lr: float = 1e-3, batch_size: int = 128,
    max_steps: int | None = None, max_seconds: float | None = None,
    eval_every: int | None = typer.Option(None, help="Validate every N steps (default: each epoch)."),
    patience: int = 5, valid_users: int | None = typer.Option(None, help="Validate on N users."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast)"),
    seed: int = 0, device: str | None = None,
    resume: bool = typer.Option(False, "--resume", help="Continue from out/checkpoint.pt."),
) -> None:
    """Train a SASRec/BERT4Rec next-item recommender; prints valid/test HR and NDCG (full ranking)."""
    from leanrank.cli_rec import train_rec_command

    model_flags = dict(variant=variant, layers=layers, hidden=hidden, heads=heads, max_len=max_len,
                       dropout=dropout, loss=loss, n_negatives=negatives,
                       attribute_loss_weight=attribute_loss_weight)
    train_flags = dict(epochs=epochs, lr=lr, batch_size=batch_size, max_steps=max_steps, max_seconds=max_seconds,
                       eval_every=eval_every, patience=patience, valid_users=valid_users, precision=precision,
                       seed=seed)
    train_rec_command(dataset, data_dir, out, model_flags, train_flags, attributes=attributes, titles=titles,
                      resume=resume, device=device, log=typer.echo)


@train_app.command("calibrate")
def train_calibrate_cmd(
    model: Path = typer.Argument(..., help="Cross-encoder model dir (updated in place, atomically)."),
    dataset: str = "synthetic", data_dir: Path | None = DataDir,
    method: str = typer.Option("platt", help="platt (sigmoid, 2 parameters) or isotonic (monotone steps)"),
) -> None:
    """Fit the logit → label map on the validation split's judged pairs (used for RMSE; ranking unchanged)."""
    from leanrank.data.registry import load_search_dataset
    from leanrank.models.cross_encoder import CrossEncoder
    from leanrank.train.calibrate import calibrate_

    ce = CrossEncoder.from_pretrained(model)
    cal = calibrate_(ce, load_search_dataset(dataset, data_dir).split()["valid"], method=method)
    ce.save(model)
    typer.echo(f"calibrated ({method}) on {cal['pairs']} validation pairs: RMSE {cal['rmse_before']:.4f} -> "
               f"{cal['rmse_after']:.4f}")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="Cross-encoder or sequential-recommender model dir."),
    dataset: str = "synthetic", data_dir: Path | None = DataDir,
    split: str = typer.Option("test", help="train, valid or test"),
    out: Path | None = typer.Option(None, help="metrics.json path (default MODEL/metrics-SPLIT.json)"),
    max_queries: int | None = None, batch_size: int = 64,
    protocol: str = typer.Option("full", help="Recommenders: full ranking, or sampled (99 negatives, labelled)"),
) -> None:
    """Rerank-protocol metrics of a cross-encoder, or full-ranking HR/NDCG of a sequential
    recommender (a folder whose leanrank.json says kind seqrec), on a split; writes metrics.json."""
    import json

    card = model / "leanrank.json"
    if card.is_file() and json.loads(card.read_text(encoding="utf-8")).get("kind") == "seqrec":
        from leanrank.cli_rec import eval_rec_command

        eval_rec_command(model, dataset, data_dir, split, out, protocol, log=typer.echo)
        return
    from leanrank.bench.evaluate import evaluate_model_dir

    metrics = evaluate_model_dir(model, dataset, data_dir, split, out, max_queries, batch_size)
    for k, v in metrics["metrics"].items():
        typer.echo(f"{k:>16}: {v}")


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="Model folder (torch, or ONNX for ort-* and mixed)."),
    scheme: str = typer.Option(..., help="int8-dynamic, int8-static, int8-weight, int4-weight, fp16, bf16, "
                               "emb-int8, emb-int4, ort-int8-dynamic, ort-int8-static, int8-inductor, int8-qat, mixed"),
    out: Path = typer.Option(..., help="Folder to write (refused if it exists, unless --overwrite)."),
    dataset: str = typer.Option("synthetic", help="Calibration (train) and parity/validation data."),
    data_dir: Path | None = DataDir,
    calibration_size: int = typer.Option(512, help="Calibration pairs for static int8."),
    observer: str = typer.Option("percentile", help="Static int8 ranges: minmax or percentile."),
    group_size: int = typer.Option(64, help="Weight-only group size."),
    budget: float = typer.Option(0.005, help="mixed: largest relative validation NDCG@10 loss."),
    valid_queries: int = typer.Option(150, help="mixed / int8-qat: validation queries."),
    steps: int = typer.Option(300, help="int8-qat: fine-tuning steps."),
    lr: float = typer.Option(1e-5, help="int8-qat: learning rate."),
    min_spearman: float = typer.Option(0.98, help="Parity gate vs the float model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Quantize a model; the result must pass parity vs the float model before it is written."""
    from leanrank.cli_compress import quantize_model

    quantize_model(model, scheme, out, dataset, data_dir, calibration_size=calibration_size, observer=observer,
                   group_size=group_size, budget=budget, valid_queries=valid_queries, steps=steps, lr=lr,
                   min_spearman=min_spearman, overwrite=overwrite, log=typer.echo)


@app.command("prune")
def prune_cmd(
    model: Path = typer.Argument(..., help="Float cross-encoder folder."),
    out: Path = typer.Option(..., help="Folder to write (refused if it exists, unless --overwrite)."),
    target: str = typer.Option("ffn", help="ffn, heads, layers or unstructured"),
    amount: float = typer.Option(0.5, help="Fraction of the target's units to remove."),
    criterion: str = typer.Option("magnitude", help="magnitude, taylor or activation"),
    scope: str = typer.Option("layer", help="layer (same fraction per layer) or global"),
    heads_amount: float = typer.Option(0.0, help="Also remove this fraction of heads (after --target)."),
    stages: int = typer.Option(1, help="Gradual pruning: cubic schedule over this many stages."),
    steps: int = typer.Option(0, help="Fine-tuning steps in all (split over the stages)."),
    lr: float = typer.Option(3e-5, help="Fine-tuning learning rate."),
    dataset: str = typer.Option("synthetic", help="Calibration (train) and validation data."),
    data_dir: Path | None = DataDir,
    calibration_size: int = typer.Option(256, help="Calibration pairs for taylor/activation."),
    valid_queries: int = typer.Option(150, help="Validation queries."),
    recover_steps: int = RecoverSteps,
    transfer_dir: Path | None = TransferDir,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Prune heads / FFN neurons / layers physically (or single weights), optionally fine-tuning."""
    from leanrank.cli_prune import prune_model

    prune_model(model, out, dataset, data_dir, target=target, amount=amount, criterion=criterion, scope=scope,
                heads_amount=heads_amount, stages=stages, steps=steps, lr=lr, calibration_size=calibration_size,
                valid_queries=valid_queries, recover_steps=recover_steps, transfer_dir=transfer_dir,
                overwrite=overwrite, log=typer.echo)


@app.command("factorize")
def factorize_cmd(
    model: Path = typer.Argument(..., help="Float cross-encoder folder."),
    out: Path = typer.Option(..., help="Folder to write (refused if it exists, unless --overwrite)."),
    param_ratio: float = typer.Option(0.5, help="Keep this fraction of the encoder's Linear weights."),
    energy: float | None = typer.Option(None, help="Instead: per-layer retained spectral energy (0..1)."),
    embedding_rank: int | None = typer.Option(None, help="Also factorize word embeddings to this rank."),
    steps: int = typer.Option(0, help="Fine-tuning steps after factorization."),
    lr: float = typer.Option(3e-5, help="Fine-tuning learning rate."),
    dataset: str = typer.Option("synthetic", help="Validation / fine-tuning data."),
    data_dir: Path | None = DataDir,
    valid_queries: int = typer.Option(150, help="Validation queries."),
    calibration_size: int = typer.Option(512, help="Train pairs for activation-aware SVD (0 = plain SVD)."),
    recover_steps: int = RecoverSteps,
    transfer_dir: Path | None = TransferDir,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Truncated-SVD factorization of Linear layers (and embeddings), optionally fine-tuning."""
    from leanrank.cli_prune import factorize_model

    factorize_model(model, out, dataset, data_dir, param_ratio=param_ratio, energy=energy,
                    embedding_rank=embedding_rank, steps=steps, lr=lr, valid_queries=valid_queries,
                    calibration_size=calibration_size, recover_steps=recover_steps, transfer_dir=transfer_dir,
                    overwrite=overwrite, log=typer.echo)


@app.command("distill")
def distill_cmd(
    teacher: Path = typer.Argument(..., help="Float cross-encoder teacher folder."),
    out: Path = typer.Option(..., help="Run folder: transfer/ (cached teacher scores), run/, model/."),
    config: Path | None = typer.Option(None, "--config", help="YAML with student/distill/transfer/stages."),
    layers: int | None = typer.Option(None, help="Student layers (default 2)."),
    hidden: int | None = typer.Option(None, help="Student hidden size (multiple of the head size)."),
    intermediate: int | None = typer.Option(None, help="Student FFN width."),
    losses: str | None = typer.Option(None, help="Score losses, e.g. listwise=1,margin_mse=0.5 "
                                      "(listwise, margin_mse, mse, soft, hard)."),
    temperature: float | None = typer.Option(None, help="Temperature of the listwise/soft losses."),
    hidden_weight: float | None = typer.Option(None, help="Hidden-state MSE weight (intermediate layers)."),
    attention_weight: float | None = typer.Option(None, help="Attention KL weight."),
    multitask: float | None = typer.Option(None, help="Joint regression + 3-class head weight."),
    curriculum: bool | None = typer.Option(None, "--curriculum/--no-curriculum", help="Easy → hard candidates."),
    steps: int | None = typer.Option(None, help="Optimizer steps per stage."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    transfer_queries: int | None = typer.Option(None, help="Training queries scored by the teacher."),
    dense: int | None = typer.Option(None, help="Dense-recall candidates per query (0 = none)."),
    dataset: str = typer.Option("synthetic", help="synthetic, homedepot or a relevance file"),
    data_dir: Path | None = DataDir,
    valid_queries: int = typer.Option(150, help="Validation queries."),
    device: str | None = None,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model/."),
) -> None:
    """Distil a teacher into a smaller student (runs under `torchrun --nproc_per_node N` too)."""
    from leanrank.cli_distill import distill_model, parse_losses

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    student = given(num_layers=layers, hidden_size=hidden, intermediate_size=intermediate)
    flags = {**parse_losses(losses), **given(temperature=temperature, hidden=hidden_weight,
                                             attention=attention_weight, multitask=multitask,
                                             curriculum=curriculum, steps=steps, lr=lr)}
    transfer = given(max_queries=transfer_queries, dense=dense)
    distill_model(teacher, out, dataset, data_dir, config, student_flags=student, distill_flags=flags,
                  transfer_flags=transfer, valid_queries=valid_queries, resume=resume, overwrite=overwrite,
                  device=device, log=typer.echo)


@app.command("autotune")
def autotune_cmd(
    teacher: Path = typer.Argument(..., help="Float cross-encoder teacher folder."),
    out: Path = typer.Option(..., help="Study folder: study.db, transfer/, pareto.json, best/."),
    config: Path | None = typer.Option(None, "--config", help="YAML with sections `space` and `search`."),
    dataset: str = typer.Option("synthetic", help="synthetic, homedepot or a relevance file"),
    data_dir: Path | None = DataDir,
    trials: int | None = typer.Option(None, "--trials", help="Total COMPLETE + PRUNED trials of the study."),
    sampler: str | None = typer.Option(None, help="nsga2 (default), tpe or random"),
    storage: str | None = typer.Option(None, help="Optuna RDB URL (default sqlite:///OUT/study.db)."),
    study_name: str | None = typer.Option(None, help="Study name inside the storage."),
    finetune_steps: int | None = typer.Option(None, help="Distillation steps per trial (0 = zero-shot)."),
    threads: int | None = typer.Option(None, help="Torch threads (latency is measured with these)."),
    onnx_dir: Path | None = typer.Option(None, help="Exported teacher: adds the ORT quantize_dynamic peer."),
    max_p50_ms: float | None = typer.Option(None, "--max-p50-ms", help="Choose the best NDCG with p50 <= this."),
    min_ndcg: float | None = typer.Option(None, "--min-ndcg", help="Or the fastest with NDCG@10 >= this."),
    workers_safe: bool = typer.Option(False, "--workers-safe", help="One of several workers on --storage: "
                                      "run trials only (heartbeat, retry), no report."),
) -> None:
    """Architecture search (optuna, NSGA-II): validation NDCG@10 vs measured p50 latency."""
    from leanrank.compress.search import autotune_command

    if max_p50_ms is not None and min_ndcg is not None:
        raise LeanrankError("give --max-p50-ms or --min-ndcg, not both")
    flags = dict(n_trials=trials, sampler=sampler, storage=storage, study_name=study_name,
                 finetune_steps=finetune_steps, threads=threads, onnx_dir=str(onnx_dir) if onnx_dir else None,
                 max_p50_ms=max_p50_ms, min_ndcg=min_ndcg)
    autotune_command(teacher, out, config, dataset, data_dir, flags, workers_safe=workers_safe, log=typer.echo)


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Float cross-encoder folder."),
    format: str = typer.Option("onnx", "--format", help="onnx"),
    out: Path = typer.Option(..., help="Folder to write (model.onnx + tokenizer + leanrank.json)."),
    dataset: str = typer.Option("synthetic", help="Parity pairs come from its validation split."),
    data_dir: Path | None = DataDir,
    parity_size: int = 256,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    fuse: bool = typer.Option(True, "--fuse/--no-fuse",
                              help="Fuse each attention block into one ORT Attention node (ORT-only graph)."),
) -> None:
    """Export to ONNX (dynamo exporter, dynamic batch/sequence); refuses a graph that fails parity."""
    from leanrank.cli_compress import export_model

    if format != "onnx":
        raise LeanrankError(f"--format must be onnx, got {format!r}")
    export_model(model, out, dataset, data_dir, parity_size, overwrite, fuse, log=typer.echo)


@app.command("demo")
def demo(
    steps: int = typer.Option(200, help="Training steps (batches of 32 pairs)."),
    seconds: float = typer.Option(240, help="Stop training earlier if this many seconds pass."),
) -> None:
    """Fine-tune a small teacher on the embedded synthetic catalog and compare it with BM25."""
    from leanrank.bench.demo import run_demo

    run_demo(seconds, steps)


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML (e.g. recipes/demo.yaml)."),
    from_step: str | None = typer.Option(None, "--from", help="Rerun from this step (and every step after it)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print what would run; run nothing."),
    data_dir: Path | None = DataDir,
) -> None:
    """Run a recipe's named steps (train, distill, prune, quantize, export, bench, ...) into OUT/STEP/;
    finished steps are skipped, a changed step reruns with everything after it."""
    from rich.console import Console
    from rich.table import Table

    from leanrank.recipes.engine import run_recipe

    run = run_recipe(recipe, from_step=from_step, dry_run=dry_run, data_dir=data_dir, log=typer.echo)
    table = Table(title=f"recipe {run['recipe']} → {run['out']}")
    for col in ("step", "kind", "status", "seconds", "output"):
        table.add_column(col, justify="right" if col == "seconds" else "left", no_wrap=col != "output")
    for s in run["steps"]:
        table.add_row(s["name"], s["kind"], s["status"], "–" if s["seconds"] is None else f"{s['seconds']:.1f}",
                      s["output"])
    Console().print(table)


@bandit_app.command("replay")
def bandit_replay_cmd(
    dataset: str = typer.Option("synthetic", help="synthetic, homedepot or a relevance file"),
    data_dir: Path | None = DataDir,
    arm: list[str] | None = typer.Option(None, "--arm", help="NAME=DIR (model folder) or NAME=bm25|random|"
                                         "oracle; repeat it. Default: bm25, random and a noisy label oracle."),
    requests: int = typer.Option(2000, help="Simulated requests per policy."),
    policies: str = typer.Option("epsilon_greedy,ucb1,thompson,linucb", help="Comma-separated policies."),
    reward: str = typer.Option("ndcg", help="ndcg (NDCG@10 of the chosen arm) or click (Bernoulli, p = NDCG)"),
    latency_penalty: float = typer.Option(0.0, help="Reward minus this × the arm's scoring seconds per query."),
    epsilon: float = typer.Option(0.1, help="epsilon_greedy's exploration rate."),
    split: str = typer.Option("valid", help="Held-out queries: valid or test."),
    max_queries: int | None = typer.Option(None, help="Replay at most this many queries."),
    seed: int = 0,
    out: Path = typer.Option(Path("runs/bandit-replay"), help="Folder for replay.json and regret.png."),
) -> None:
    """Simulate traffic from judged queries: each policy's cumulative regret and the arm it converges to."""
    from leanrank.cli_bandit import replay_command

    replay_command(dataset, data_dir, arm, requests=requests, policies=policies, reward=reward,
                   latency_penalty=latency_penalty, epsilon=epsilon, split=split, max_queries=max_queries,
                   seed=seed, out=out)


@app.command("serve")
def serve_cmd(
    config: Path = typer.Argument(..., help="Serve YAML (e.g. recipes/serve-demo.yaml)."),
    host: str | None = typer.Option(None, help="Bind address (default: server.host of the config)."),
    port: int | None = typer.Option(None, help="Port (default: server.port of the config)."),
) -> None:
    """Serve /search, /recommend and /feedback over HTTP (hybrid recall, rerank variants, bandit)."""
    from leanrank.cli_serve import serve_command

    serve_command(config, host=host, port=port, log=typer.echo)


@app.command("loadtest")
def loadtest_cmd(
    url: str = typer.Argument(..., help="Server root on loopback, e.g. http://127.0.0.1:8000."),
    requests: int = typer.Option(200, help="Stop after this many searches."),
    seconds: float = typer.Option(60.0, help="Stop after this many seconds, whichever comes first."),
    concurrency: int = typer.Option(4, help="Concurrent users (locust)."),
    queries: Path | None = typer.Option(None, help="Text file, one query per line."),
    dataset: str | None = typer.Option(None, help="Or the test-split queries of synthetic, homedepot or a file."),
    data_dir: Path | None = DataDir,
    k: int = typer.Option(10, help="Items per search."),
    feedback: float = typer.Option(0.0, help="Share of answered searches followed by POST /feedback (a click)."),
    rate: float | None = typer.Option(None, help="Searches/s over all users (open loop); default: closed loop."),
    timeout: float = typer.Option(30.0, help="Seconds per HTTP request."),
    seed: int = 0,
    out: Path | None = typer.Option(None, help="Write the result JSON here."),
) -> None:
    """Load-test a `leanrank serve` server on loopback with locust: qps, p50/p99, status counts, shed rate."""
    from leanrank.bench.loadtest import loadtest_command

    loadtest_command(url, requests=requests, seconds=seconds, concurrency=concurrency, queries=queries,
                     dataset=dataset, data_dir=data_dir, k=k, feedback=feedback, rate=rate, timeout_s=timeout,
                     seed=seed, out=out, log=typer.echo)


@app.command("bench")
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="Model folders; the first is the teacher unless --teacher."),
    dataset: str = typer.Option("synthetic", help="synthetic, homedepot (search) or beauty, sports (seqrec)"),
    data_dir: Path | None = DataDir,
    out: Path = typer.Option(..., help="Folder for results.json, report.md, report.html, pareto.png."),
    teacher: Path | None = typer.Option(None, help="Teacher folder (default: the first model)."),
    peers: str = typer.Option("all", help="Comma-separated peers or 'none' (search: torch-dynamic, ort-dynamic, "
                              "ort-fp32, bf16-autocast; seqrec: torch-dynamic, bf16-autocast)."),
    ensemble: str | None = typer.Option(None, help="Score ensembles of the variants: mean,weighted,stacking."),
    members: str | None = typer.Option(None, help="Ensemble members (entry names; default: every variant)."),
    max_queries: int | None = typer.Option(150, help="Test queries (search) / users (seqrec, default all)."),
    repeats: int = typer.Option(3, help="Interleaved speed repeats."),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    rss: bool = typer.Option(True, "--rss/--no-rss", help="Peak RSS per entry in a fresh process."),
    name: str | None = typer.Option(None, help="Write NAME.json/.md/.html/.png instead of results.json, "
                                    "report.md, report.html, pareto.png (e.g. homedepot-bench)."),
) -> None:
    """Teacher, variants, peers (and ensembles) side by side in one run: quality with CIs, pairs/s,
    p50/p99, size, RSS, params, FLOPs; writes results.json, report.md, report.html and pareto.png."""
    import json
    import shlex

    first = teacher or (models[0] if models else None)
    card = first / "leanrank.json" if first else None
    peer_arg: list[str] | bool = True if peers == "all" else [] if peers == "none" else \
        [p.strip() for p in peers.split(",") if p.strip()]
    command = "leanrank bench " + shlex.join(sys.argv[2:])
    if card and card.is_file() and json.loads(card.read_text(encoding="utf-8")).get("kind") == "seqrec":
        from leanrank.bench.runner_rec import bench_rec_models

        doc = bench_rec_models(models, dataset=dataset, data_dir=data_dir, out_dir=out, teacher=teacher,
                               peers=peer_arg, max_users=None if max_queries == 150 else max_queries,
                               repeats=repeats, command=command, name=name, log=typer.echo)
    else:
        from leanrank.bench.runner import bench_models

        kinds = [k.strip() for k in ensemble.split(",")] if ensemble else []
        doc = bench_models(models, dataset=dataset, data_dir=data_dir, out_dir=out, teacher=teacher, peers=peer_arg,
                           max_queries=max_queries, repeats=repeats, ensembles=kinds,
                           ensemble_members=members.split(",") if members else None, device=device, rss=rss,
                           command=command, name=name, log=typer.echo)
    from leanrank.cli_views import print_bench

    print_bench(doc)
    files = [f"{name}.{e}" for e in ("json", "md", "html", "png")] if name else \
        ["results.json", "report.md", "report.html", "pareto.png"]
    typer.echo(f"wrote {', '.join(str(out / f) for f in files)}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except LeanrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
