"""The `lookalike` command line: thin wrappers that parse options and call one library function each."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .errors import LookalikeError


class CLIError(click.ClickException):
    """One line on stderr, exit code 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            raise CLIError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; re-run the same command to resume", err=True)
            sys.exit(130)


def _keep_layers(value: str | None):
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated layer indices, e.g. 0,2,4") from None


def _int_list(value: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="lookalike")
def cli(verbose: int):
    """lookalike: does the compressed model behave like the large model it replaces?

    Export models to ONNX, bulk-embed corpora into HDF5 shards, and compare models on
    prediction errors, data representation (kNN), data distribution (deep-kNN OOD) and
    adversarial vulnerability, as Jaccard agreements between model pairs.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxruntime", "root"):
        if verbose < 2:
            logging.getLogger(noisy).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- export

@cli.command()
@click.argument("model")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["feature-extraction", "question-answering", "text-classification"]),
              default="feature-extraction", show_default=True)
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="Dynamic int8 quantisation.")
@click.option("--per-channel", is_flag=True, help="Per-channel int8 weights (more accurate).")
@click.option("--fp16", is_flag=True, help="float16 weights and activations (for GPU).")
@click.option("--keep-layers", callback=lambda c, p, v: _keep_layers(v), help="Layer dropping: e.g. 0,2,4.")
@click.option("--optimize/--no-optimize", default=None,
              help="ONNX Runtime Attention/BiasGelu fusions, checked for parity [default: on; a fused graph that "
                   "fails parity falls back to the plain one].")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Parity tolerance for the fp32 graph.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUT_DIR.")
def export(model, out_dir, task, quantize, per_channel, fp16, keep_layers, optimize, opset, atol, revision, overwrite):
    """Export MODEL (hub id, local folder, or `minilm`) to a verified ONNX folder.

    \b
    Example:
      lookalike export minilm runs/minilm
      lookalike export minilm runs/minilm-int8 --quantize int8 --per-channel
      lookalike export bert-base-uncased runs/bb-l6 --keep-layers 0,2,4,6,8,10
    """
    from .exporters import export as do_export
    from .models import resolve_model

    m = do_export(resolve_model(model), out_dir, task, opset=opset, optimize=optimize, quantize=quantize,
                  per_channel=per_channel, fp16=fp16, keep_layers=keep_layers, overwrite=overwrite, atol=atol,
                  revision=revision)
    summary = {"out_dir": str(out_dir), "task": m["task"], "variant": m["variant"]["description"],
               "parameters": m["parameters"], "file_size": m["file_size"],
               "parity_max_abs_diff": m["parity"]["max_abs_diff"], "variant_parity": m["variant_parity"]}
    click.echo(json.dumps(summary, indent=2))


# --------------------------------------------------------------------------- embed

def ray_backend_options(f):
    """--backend local|ray and the Ray options, shared by embed and predict."""
    for opt in reversed([
        click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--address", default=None, help="Ray: auto, ray://HOST:10001, or none for a local Ray."),
        click.option("--workers", type=int, default=None, help="Ray: actors [cluster CPUs / CPUs per worker]."),
        click.option("--gpus-per-worker", type=float, default=0.0, show_default=True, help="Ray: GPUs per actor."),
        click.option("--cpus-per-worker", type=float, default=1.0, show_default=True, help="Ray: CPUs per actor."),
    ]):
        f = opt(f)
    return f


def reader_options(f):
    """The corpus reader options shared by every command that reads a corpus."""

    from .data import FORMATS

    opts = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                     help="Corpus format (detected from the path when omitted)."),
        click.option("--text-field", default="text", show_default=True, help="JSONL/JSON/CSV/Parquet text field."),
        click.option("--pair-field", default=None, help="Second text field (sentence pairs)."),
        click.option("--id-field", default=None, help="Id field (default: row number)."),
        click.option("--split", default=None, help="Split for aclImdb folders, NewsQA JSON, saved HF datasets."),
        click.option("--limit", type=int, default=None, help="Only the first N records."),
        click.option("--every", type=int, default=None, help="Deterministic subset: keep rows with row % EVERY == OFFSET."),
        click.option("--offset", type=int, default=0, show_default=True, help="See --every."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("corpus")
@click.argument("out_dir", type=click.Path(path_type=Path))
@reader_options
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default="cls", show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True, help="Longer inputs are truncated (counted).")
@click.option("--batch-tokens", type=int, default=None, help="Padded tokens per batch [CPU 1024, CUDA 65536].")
@click.option("--shard-rows", type=int, default=10000, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--normalize", is_flag=True, help="L2-normalise the stored vectors.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads [physical cores].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal].")
@ray_backend_options
def embed(model_dir, corpus, out_dir, fmt, text_field, pair_field, id_field, split, limit, every, offset, pooling,
          max_length, batch_tokens, shard_rows, dtype, normalize, device, threads, progress, backend, address, workers,
          gpus_per_worker, cpus_per_worker):
    """Embed CORPUS with the export MODEL_DIR into HDF5 shards in OUT_DIR (resumable).

    \b
    Example:
      lookalike embed runs/minilm ../shared/data/imdb/imdb_1k.tsv runs/imdb-minilm
      lookalike embed runs/minilm ../shared/data/squad2_dev500 runs/squad-minilm --max-length 384
      lookalike embed runs/minilm big.jsonl /nfs/stores/big --backend ray --address auto --workers 8
    Re-running the same command after a crash continues from the last complete shard.
    """
    from .engine import embed as do_embed

    stats = do_embed(model_dir, corpus, out_dir, fmt=fmt, text_field=text_field, pair_field=pair_field,
                     id_field=id_field, split=split, limit=limit, every=every, offset=offset, pooling=pooling, max_length=max_length,
                     batch_tokens=batch_tokens, shard_rows=shard_rows, dtype=dtype, normalize=normalize,
                     device=device, threads=threads, progress=progress, backend=backend,
                     **({"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker,
                         "cpus_per_worker": cpus_per_worker} if backend == "ray" else {}))
    click.echo(json.dumps(stats, indent=2))


# --------------------------------------------------------------------------- knn / ood

@cli.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--k", type=int, default=10, show_default=True, help="Neighbours kept (slice for smaller K).")
@click.option("--index", type=click.Choice(["flat", "ivf", "hnsw"]), default="flat", show_default=True,
              help="flat is exact; ivf/hnsw are approximate and report recall@K on a sample.")
@click.option("--gpu/--no-gpu", default=None, help="FAISS GPU [when FAISS sees one].")
@click.option("--block-rows", type=int, default=8192, show_default=True, help="Queries per search block.")
def knn(store, out, k, index, gpu, block_rows):
    """K nearest neighbours (cosine) of every point of STORE, excluding itself; written to OUT (HDF5).

    \b
    Example:
      lookalike knn runs/imdb-minilm runs/imdb-minilm.knn.h5 --k 50
    """
    from .analysis.knn import knn_self
    from .engine import open_store

    res = knn_self(open_store(store), k, index=index, gpu=gpu, block_rows=block_rows)
    res.save(out)
    click.echo(json.dumps({"out": str(out), "k": k, "index": index, **res.meta}, indent=2))


@cli.command()
@click.option("--train", "train", required=True, type=click.Path(path_type=Path), help="In-distribution bank.")
@click.option("--test", "test", required=True, type=click.Path(path_type=Path), help="Challenge set (scored).")
@click.option("--val", default=None, type=click.Path(path_type=Path),
              help="In-distribution validation store for the threshold [held-out split of train].")
@click.option("--in-test", default=None, type=click.Path(path_type=Path),
              help="Held-out in-distribution test store: enables AUROC and FPR@TPR.")
@click.option("--k", "ks", default="10", show_default=True, help="k, or several for a sweep: 1,5,10,20,50.")
@click.option("--tpr", type=float, default=0.95, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--gpu/--no-gpu", default=None)
@click.argument("out", type=click.Path(path_type=Path))
def ood(train, test, val, in_test, ks, tpr, val_fraction, seed, gpu, out):
    """Deep-kNN OOD: score TEST against the TRAIN bank, flag points below the TPR threshold.

    Deep Nearest Neighbors (Sun, Ming, Zhu and Li, ICML 2022) on L2-normalised features.

    \b
    Example:
      lookalike ood --train runs/squad-minilm --test runs/cuad-minilm --k 1,5,10,20 runs/ood-minilm.json
    """
    from .analysis.ood import deep_knn_ood
    from .engine import open_store

    res = deep_knn_ood(open_store(train), open_store(test), _int_list(ks), tpr=tpr,
                       val=open_store(val) if val else None, in_test=open_store(in_test) if in_test else None,
                       val_fraction=val_fraction, seed=seed, gpu=gpu)
    res.save(out)
    summary = {str(k): {"threshold": res.thresholds[k], "n_ood": int(res.ood_mask(k).sum()),
                        "n_test": len(res.test_ids), **res.metrics[k]} for k in res.ks}
    click.echo(json.dumps({"out": str(out), "val": res.meta["val"], "results": summary}, indent=2))


# --------------------------------------------------------------------------- predict / evaluate / finetune

@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["qa", "cls"]), required=True)
@reader_options
@click.option("--label-field", default=None, help="Label field for JSONL/CSV classification data [label].")
@click.option("--max-length", type=int, default=None, help="[qa 384, cls 512]")
@click.option("--doc-stride", type=int, default=128, show_default=True, help="QA window overlap.")
@click.option("--n-best", type=int, default=20, show_default=True)
@click.option("--max-answer-length", type=int, default=30, show_default=True)
@click.option("--null-score-diff-threshold", type=float, default=0.0, show_default=True)
@click.option("--f1-below", type=float, default=None, help="QA error set: F1 below this instead of EM = 0.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@ray_backend_options
def predict(model_dir, data, out, task, fmt, text_field, pair_field, id_field, split, limit, every, offset, label_field,
            max_length, doc_stride, n_best, max_answer_length, null_score_diff_threshold, f1_below, device, backend,
            address, workers, gpus_per_worker, cpus_per_worker):
    """Predict with an ONNX QA or classification export; write predictions, metrics and the error set to OUT.

    \b
    Example:
      lookalike predict runs/qa ../shared/data/squad2_dev500 runs/qa-pred --task qa
      lookalike predict runs/sst ../shared/data/imdb/imdb_1k.tsv runs/imdb-pred --task cls
      lookalike predict runs/qa squad-dev.json /nfs/qa-pred --task qa --backend ray --address auto
    """
    from .analysis.scoring import evaluate as do_eval
    from .engine.predict import predict as do_predict

    reader = {k: v for k, v in dict(fmt=fmt, text_field=text_field, pair_field=pair_field, id_field=id_field,
                                     split=split, limit=limit, every=every, offset=offset,
                                     label_field=label_field).items() if v is not None}
    if task == "qa":
        opts = dict(max_length=max_length or 384, doc_stride=doc_stride, n_best=n_best,
                    max_answer_length=max_answer_length, null_score_diff_threshold=null_score_diff_threshold)
    else:
        opts = dict(max_length=max_length or 512)
    ray_opts = ({"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker,
                 "cpus_per_worker": cpus_per_worker} if backend == "ray" else None)
    info = do_predict(model_dir, data, out, task=task, device=device, reader=reader, backend=backend,
                      ray_options=ray_opts, **opts)
    from .exporters import load_manifest

    labels = load_manifest(model_dir).get("labels")
    metrics = do_eval(data, out / "predictions.json", task=task, reader=reader, out=out, f1_below=f1_below,
                      na_probs=out / "null_odds.json" if task == "qa" else None,
                      labels={int(k): v for k, v in labels.items()} if labels else None)
    click.echo(json.dumps({"out": str(out), "n": info["n"], "seconds": info["seconds"], **metrics}, indent=2))


@cli.command()
@click.argument("data")
@click.argument("predictions", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["qa", "cls"]), default="qa", show_default=True)
@click.option("--na-prob-file", type=click.Path(path_type=Path), default=None,
              help="No-answer probabilities {id: p} (enables best_exact/best_f1).")
@click.option("--na-prob-thresh", type=float, default=1.0, show_default=True)
@click.option("--f1-below", type=float, default=None, help="Error set by F1 below this (QA).")
@reader_options
@click.option("--label-field", default=None)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write metrics.json and errors.json here.")
def evaluate(data, predictions, task, na_prob_file, na_prob_thresh, f1_below, fmt, text_field, pair_field, id_field,
             split, limit, every, offset, label_field, out):
    """Score PREDICTIONS ({id: answer}) against DATA with the official SQuAD v2 semantics (or accuracy).

    \b
    Example:
      lookalike evaluate ../shared/data/squad2_dev500 runs/qa-pred/predictions.json \\
          --na-prob-file runs/qa-pred/null_odds.json
    """
    from .analysis.scoring import evaluate as do_eval

    reader = {k: v for k, v in dict(fmt=fmt, text_field=text_field, pair_field=pair_field, id_field=id_field,
                                     split=split, limit=limit, every=every, offset=offset,
                                     label_field=label_field).items() if v is not None}
    metrics = do_eval(data, predictions, task=task, na_probs=na_prob_file, na_prob_thresh=na_prob_thresh,
                      f1_below=f1_below, reader=reader, out=out)
    click.echo(json.dumps(metrics, indent=2))


@cli.command()
@click.argument("model")
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["qa", "cls"]), required=True)
@reader_options
@click.option("--label-field", default=None)
@click.option("--learning-rate", type=float, default=None, help="[qa 3e-5, cls 2e-5]")
@click.option("--epochs", type=float, default=None, help="[2]")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after N steps (overrides epochs).")
@click.option("--batch-size", type=int, default=None, help="[qa 12, cls 16]")
@click.option("--max-length", type=int, default=None, help="[qa 384, cls 256]")
@click.option("--doc-stride", type=int, default=None, help="[128]")
@click.option("--save-steps", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--answerable-only", is_flag=True, help="QA: train on answerable questions only (tiny data sets).")
def finetune(model, data, out, task, fmt, text_field, pair_field, id_field, split, limit, every, offset, label_field,
             learning_rate, epochs, max_steps, batch_size, max_length, doc_stride, save_steps, seed, answerable_only):
    """Fine-tune MODEL on DATA for QA (SQuAD v2 style) or classification (IMDB style); resumable.

    \b
    Example:
      lookalike finetune minilm ../shared/data/imdb/imdb_1k.tsv runs/minilm-imdb --task cls --every 2 --offset 0
      lookalike finetune bert-base-uncased squad_v2:train runs/bb-squad2 --task qa
    """
    from .exporters.finetune import finetune as do_finetune
    from .models import resolve_model

    reader = {k: v for k, v in dict(fmt=fmt, text_field=text_field, pair_field=pair_field, id_field=id_field,
                                     split=split, label_field=label_field).items() if v is not None}
    path = do_finetune(task, resolve_model(model), data, out, reader=reader, learning_rate=learning_rate,
                       epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length,
                       doc_stride=doc_stride, seed=seed, save_steps=save_steps, every=every, offset=offset,
                       limit=limit, answerable_only=answerable_only)
    click.echo((path / "lookalike-finetune.json").read_text())


# --------------------------------------------------------------------------- attack / bench

@cli.command()
@click.argument("target_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--mlm", required=True, help="Attack masked-LM: hub id (paper: bert-base-uncased) or local folder.")
@click.option("--max-candidates", type=int, default=48, show_default=True,
              help="MLM candidates per word: TextAttack's / BERT-Attack's K.")
@click.option("--top-words", type=int, default=None,
              help="Attack only the N most important words: the paper's 'K=3' as it describes K. [all]")
@click.option("--n", "n", type=int, default=1000, show_default=True, help="Examples (seeded sample, same for every target).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-percent", type=float, default=0.4, show_default=True, help="Max fraction of words perturbed.")
@click.option("--similarity", type=click.Choice(["engine", "use", "none"]), default="engine", show_default=True,
              help="engine: cosine of a local encoder (offline stand-in for USE); use: TF-Hub USE.")
@click.option("--similarity-threshold", type=float, default=0.2, show_default=True)
@click.option("--similarity-model", type=click.Path(path_type=Path), default=None,
              help="Feature-extraction export for --similarity engine [packaged MiniLM].")
@click.option("--max-length", type=int, default=512, show_default=True)
@reader_options
@click.option("--label-field", default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--progress/--no-progress", default=None)
def attack(target_dir, data, out, mlm, max_candidates, top_words, n, seed, max_percent, similarity,
           similarity_threshold, similarity_model, max_length, fmt, text_field, pair_field, id_field, split, limit,
           every, offset, label_field, device, progress):
    """BERT-Attack (TextAttack components) against an ONNX classifier; JSONL per example + Table 3 summary.

    \b
    Example:
      lookalike attack runs/imdb-cls ../shared/data/imdb/imdb_1k.tsv runs/attack --mlm bert-base-uncased --top-words 3
    Re-running the same command resumes where it stopped.
    """
    import sys

    from .attack import run_attack
    from .models import resolve_model

    reader = {k: v for k, v in dict(fmt=fmt, text_field=text_field, pair_field=pair_field, id_field=id_field,
                                     split=split, limit=limit, every=every, offset=offset,
                                     label_field=label_field).items() if v is not None}
    s = run_attack(target_dir, data, out, mlm=resolve_model(mlm), max_candidates=max_candidates, top_words=top_words,
                   n=n, seed=seed, max_percent=max_percent, similarity=similarity,
                   similarity_threshold=similarity_threshold, similarity_model=similarity_model, max_length=max_length,
                   device=device, reader=reader, progress=sys.stderr.isatty() if progress is None else progress)
    click.echo(json.dumps({k: v for k, v in s.items() if not k.startswith("setting_")}, indent=2))


@cli.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch-sizes", default="1,8,32", show_default=True)
@click.option("--seq-lengths", default="32,128,384", show_default=True)
@click.option("--repeat", type=int, default=20, show_default=True)
@click.option("--corpus", default=None, help="Also measure full-engine throughput on this corpus.")
@click.option("--corpus-limit", type=int, default=2000, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("bench"), show_default=True)
def bench(model_dirs, batch_sizes, seq_lengths, repeat, corpus, corpus_limit, device, out):
    """Latency p50/p90/p99 and throughput per model, FLOPs/token, ratio to this machine's matmul ceiling.

    \b
    Example:
      lookalike bench runs/minilm runs/minilm-int8 --batch-sizes 1,8 --seq-lengths 128 --corpus corpus.jsonl
    Writes OUT/bench.json, OUT/bench.md and OUT/bench.png.
    """
    from .engine.bench import run_bench

    run_bench(model_dirs, _int_list(batch_sizes), _int_list(seq_lengths), repeat=repeat, corpus=corpus,
                    corpus_limit=corpus_limit, device=device, out=out)
    click.echo((out / "bench.md").read_text())


# --------------------------------------------------------------------------- analysis

def _named(values: tuple[str, ...], option: str) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{v!r}: expected NAME=PATH", param_hint=option)
        out[name] = Path(path)
    return out


@cli.command()
@click.option("--knn", "knns", multiple=True, help="NAME=neighbours.h5 (from `lookalike knn`), one per model.")
@click.option("--ood", "oods", multiple=True, help="NAME=ood.json (from `lookalike ood`), one per model.")
@click.option("--errors", "errs", multiple=True, help="NAME=errors.json (from `lookalike predict`), one per model.")
@click.option("--k", type=int, default=10, show_default=True, help="K for representation and OOD agreement.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write OUT.md/.csv/.json too.")
def agree(knns, oods, errs, k, fmt, out):
    """Pairwise agreement (Jaccard) between models from stored artifacts, in the given model order.

    \b
    Example:
      lookalike agree --knn large=runs/l.knn.h5 --knn int8=runs/q.knn.h5 --k 10
      lookalike agree --errors large=runs/pl/errors.json --errors mini=runs/pm/errors.json --format csv
    """
    import csv as _csv
    import io

    from .analysis.agreement import distribution_agreement, error_agreement, pairs, representation_agreement
    from .analysis.knn import load_knn
    from .analysis.ood import load_ood
    from .analysis.scoring import load_errors
    from .analysis.report import markdown_table, write_table

    knns, oods, errs = _named(knns, "--knn"), _named(oods, "--ood"), _named(errs, "--errors")
    names = list(dict.fromkeys([*knns, *oods, *errs]))
    if len(names) < 2:
        raise click.UsageError("give artifacts of at least two models")
    K = {n: load_knn(p) for n, p in knns.items()}
    O = {n: load_ood(p) for n, p in oods.items()}
    E = {n: load_errors(p) for n, p in errs.items()}
    rows = []
    for a, b in pairs(names):
        row = {"model_i": a, "model_j": b}
        if a in E and b in E:
            e = error_agreement(E[a], E[b])
            row.update(errors_jaccard=e["jaccard"], i_errors_subset_of_j=e["a_subset_of_b"], frac_i_in_j=e["frac_a_in_b"])
        if a in K and b in K:
            r = representation_agreement(K[a], K[b], k)
            row.update(repr_mean=r["mean"], repr_var=r["variance"])
        if a in O and b in O:
            row["ood_jaccard"] = distribution_agreement(O[a], O[b], k)["jaccard"]
        rows.append(row)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    if out:
        write_table(rows, cols, out)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        w = _csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        click.echo(buf.getvalue().rstrip())
    else:
        click.echo(markdown_table(rows, cols))


@cli.command()
@click.argument("experiment", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Output folder [config's out:].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def run(experiment, out, device):
    """Run an experiment config end to end (cached steps) and write report/.

    \b
    Example:
      lookalike run examples/shared-data.yaml -o runs/shared
    A re-run skips finished steps; changing a parameter redoes only what depends on it.
    """
    from .experiment import run_experiment

    report = run_experiment(experiment, out, echo=lambda s: click.echo(s, err=True), device=device)
    click.echo(f"report: {report / 'report.md'}")


@cli.command()
@click.argument("out", type=click.Path(path_type=Path), default="lookalike-demo")
@click.option("--docs", type=int, default=1500, show_default=True, help="Docstrings in the corpus.")
@click.option("--code", type=int, default=300, show_default=True, help="Source snippets (the OOD set).")
@click.option("--no-fp16", is_flag=True, help="Leave the fp16 variant out (slow on some CPUs).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def demo(out, docs, code, no_fp16, device):
    """Offline demo: packaged MiniLM vs its int8, fp16 and layer-dropped variants on stdlib text.

    \b
    Example:
      lookalike demo            # writes lookalike-demo/report/report.md
    """
    import time

    from .demo import run_demo

    t0 = time.perf_counter()
    report = run_demo(out, docs, code, echo=lambda s: click.echo(s, err=True), device=device, fp16=not no_fp16)
    click.echo((report / "table2_agreement.md").read_text())
    click.echo(f"report: {report / 'report.md'} ({time.perf_counter() - t0:.0f} s)")


def main():
    cli(prog_name="lookalike")


if __name__ == "__main__":
    main()
