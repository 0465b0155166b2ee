"""The `lookalike` command line: thin wrappers that parse options and call one library function each.

Errors lookalike raises on purpose, and operating-system errors (disk full, permission denied), are one line on
stderr with exit code 2. Warnings print one line each unless -q.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from . import jobs, tasks
from .analysis.ood import summary_by_k as ood_summary_by_k
from .analysis.report import csv_text, write_bench, write_table
from .attack import run_attack
from .core.store_formats import FORMATS as STORE_FORMATS
from .core.store_formats import export_store
from .core.store import remove_store
from .core.heads import TASKS as EXPORT_TASKS
from .data import FORMATS, CorpusSpec
from .data.stdin import spooled_stdin
from .demo import run_demo
from .engine import embed as do_embed
from .engine.bench import run_bench
from .engine.plan import RayOptions
from .engine.tokens import export_tokenizer, tokenize_corpus
from .errors import LookalikeError
from .experiment import run_experiment
from .exporters import export as do_export
from .exporters import export_summary
from .exporters.variant import INT8_SCHEMES, Variant
from .files import interactive, json_safe, status
from .finetune import finetune as do_finetune
from .mlm import fit_mlm_head
from .models import resolve_model
from .notes import NOTICE
from .params import (
    DTYPES,
    INDEXES,
    POOLINGS,
    SIMILARITIES,
    AttackParams,
    EmbedParams,
    FinetuneParams,
    KnnParams,
    OodParams,
    PredictParams,
)

log = logging.getLogger("lookalike")


class CLIError(click.ClickException):
    """One line on stderr, exit code 2."""

    exit_code = 2


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "-vv", "-vvv", "--verbose")


class _Group(click.Group):
    def parse_args(self, ctx, args):
        """-q / -v are the group's: accepted after the subcommand too (moved to the front; `--` ends the scan)."""
        args = list(args)
        end = args.index("--") if "--" in args else len(args)
        moved = [a for a in args[:end] if a in GLOBAL_FLAGS]
        if moved:
            args = moved + [a for a in args[:end] if a not in GLOBAL_FLAGS] + args[end:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            _say_causes(exc)
            raise CLIError(str(exc)) from exc
        except OSError as exc:  # disk full, permission denied, ...: one line, not a traceback
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            if exc.errno == errno.ENOSPC or "No space left" in str(exc):  # HDF5 says it in several raw lines
                raise CLIError(f"{where}No space left on device; free space and re-run the same command (finished "
                               "shards and files are kept)") from exc
            text = str(exc.strerror or exc).strip().splitlines()
            raise CLIError(f"{where}{text[0] if text else type(exc).__name__}") from exc
        except KeyboardInterrupt:
            click.echo("interrupted; re-run the same command to resume", err=True)
            sys.exit(130)
        except BaseException as exc:  # a panic in a Rust library (tokenizers), raised as a BaseException by PyO3
            if type(exc).__name__ != "PanicException":
                raise
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "a panic")[:160]
            raise CLIError(f"the tokenizers library failed ({first}); the model's tokenizer cannot read this input")\
                from exc


def _say_causes(exc: BaseException) -> None:
    """Under -vv, the chain of causes behind a one-line error (the library errors it was raised from)."""
    log = logging.getLogger("lookalike.cli")
    if log.isEnabledFor(logging.DEBUG) and (exc.__cause__ or exc.__context__):
        import traceback

        log.debug("caused by:\n%s", "".join(traceback.format_exception(exc)).rstrip())


class _OneLine(logging.Formatter):
    def format(self, record):
        msg = record.getMessage().splitlines()[0] if record.getMessage() else ""
        return f"{record.levelname.lower()}: {msg}"


class _OncePerRun(logging.Filter):
    """Each note and warning once per run: a model's pooling note, said by every step that plans an embedding,
    prints the first time only (errors always print)."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record):
        if record.levelno >= logging.ERROR:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def setup_logging(verbose: int, quiet: bool) -> None:
    """lookalike's warnings print by default (one line each, each once); -q: errors only; -v info; -vv debug,
    libraries too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_OncePerRun())
    handler.setFormatter(_OneLine() if verbose < 2 else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)  # other libraries: errors only unless -vv
    level = logging.ERROR if quiet else (NOTICE, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.getLogger("lookalike").setLevel(level)
    # libraries' own warnings (Python warnings: TracerWarning, deprecations) go through logging too, so they obey
    # the same switch: shown with -vv, not otherwise; transformers' own logger likewise
    logging.captureWarnings(True)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose >= 2 else "error")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity(logging.INFO if verbose >= 2 else logging.ERROR)


def _int_list(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 1,5,10") from exc
    if not out or min(out) < 0:
        raise click.BadParameter(f"{value!r}: expected non-negative integers")
    return out


def _int_list_option(ctx, param, value):
    return None if value is None else _int_list(value)


POSITIVE = click.IntRange(min=1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug including libraries).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only (no warnings).")
@click.version_option(package_name="lookalike")
def cli(verbose: int, quiet: bool):
    """lookalike: does the compressed model behave like the large model it replaces?

    Export models to ONNX, bulk-embed corpora into HDF5 shards, and compare models on
    prediction errors, data representation (kNN), data distribution (deep-kNN OOD) and
    adversarial vulnerability, as Jaccard agreements between model pairs.
    """
    setup_logging(verbose, quiet)


# --------------------------------------------------------------------------- shared options

CORPUS_DEFAULTS = {"format": None, "text_field": "text", "pair_field": None, "id_field": None, "label_field": None,
                   "split": None, "limit": None, "every": None, "offset": 0}


def corpus_options(arg: str, format_flag: str = "--format"):
    """The corpus options every command that reads a corpus takes; the command receives one CorpusSpec as `arg`."""
    def decorate(f):
        opts = [
            click.option(format_flag, "corpus_fmt", type=click.Choice(FORMATS), default=None,
                         help="Corpus format (detected from the path when omitted)."),
            click.option("--text-field", default="text", show_default=True, help="JSONL/JSON/CSV/Parquet text field."),
            click.option("--pair-field", default=None, help="Second text field (sentence pairs)."),
            click.option("--id-field", default=None,
                         help="Id field [the records' 'id' field when they have one, else row numbers]."),
            click.option("--label-field", default=None, help="Label field [label, for classification]."),
            click.option("--split", default=None, help="Split for aclImdb folders, NewsQA JSON, saved HF datasets."),
            click.option("--limit", type=POSITIVE, default=None, help="Only the first N records."),
            click.option("--every", type=POSITIVE, default=None,
                         help="Deterministic subset: keep rows with row % EVERY == OFFSET."),
            click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="See --every."),
        ]

        @functools.wraps(f)
        def wrapper(*args, **kw):
            given = {"format": kw.pop("corpus_fmt"), "text_field": kw.pop("text_field"), "pair_field": kw.pop("pair_field"),
                     "id_field": kw.pop("id_field"), "label_field": kw.pop("label_field"), "split": kw.pop("split"),
                     "limit": kw.pop("limit"), "every": kw.pop("every"), "offset": kw.pop("offset")}
            if kw[arg] is None:  # an optional corpus (agree --dataset, bench --corpus, export --calibration)
                set_ = [k for k, v in given.items() if v != CORPUS_DEFAULTS[k]]
                if set_:
                    raise click.UsageError(f"--{set_[0].replace('_', '-')} applies to --{arg}, which is not given")
                return f(*args, **kw)
            kw[arg] = CorpusSpec(kw[arg], **given)
            return f(*args, **kw)

        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper
    return decorate


def ray_options(f):
    """--backend local|ray and the Ray options (command line only), shared by embed and predict."""
    opts = [
        click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--address", default=None, help="Ray: auto, ray://HOST:10001, or none (or local) for a local Ray [none]."),
        click.option("--workers", type=POSITIVE, default=None, help="Ray: actors [cluster CPUs / CPUs per worker]."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Ray: GPUs per actor."),
        click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0,
                     show_default=True, help="Ray: CPUs per actor."),
    ]

    @functools.wraps(f)
    def wrapper(*args, **kw):
        kw["ray"] = RayOptions(address=kw.pop("address"), workers=kw.pop("workers"),
                               gpus_per_worker=kw.pop("gpus_per_worker"), cpus_per_worker=kw.pop("cpus_per_worker"))
        return f(*args, **kw)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


def _device(ctx, param, value):
    from .core.session import split_device

    try:
        split_device(value)
    except Exception as exc:
        raise click.BadParameter(str(exc)) from exc
    if split_device(value)[0] not in ("auto", "cpu", "cuda"):
        raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


DEVICE = click.option("--device", default="auto", show_default=True, callback=_device,
                      help="auto, cpu, cuda or cuda:N (the N-th GPU).")


def _echo_json(obj) -> None:
    click.echo(json.dumps(json_safe(obj), indent=2, default=str))


# --------------------------------------------------------------------------- export

@cli.command()
@click.argument("model")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(list(EXPORT_TASKS)),
              default=None, help="[inferred from the checkpoint's architectures: …ForSequenceClassification -> "
                                 "text-classification, …ForQuestionAnswering -> question-answering, else "
                                 "feature-extraction]")
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="int8 quantisation.")
@click.option("--int8-scheme", type=click.Choice(["auto", *INT8_SCHEMES]), default=None,
              help="Implies --quantize int8. auto [default]: measure every scheme on this CPU, keep the fastest "
                   "that stays close to fp32; a named scheme is used as is (recorded as not measured).")
@click.option("--per-channel", is_flag=True, help="Same as --int8-scheme dynamic-per-channel.")
@click.option("--calibration", default=None,
              help="Corpus of sample texts for the int8 measurement and static scales [stdlib docstrings].")
@click.option("--fp16", is_flag=True, help="float16 weights and activations (for GPU).")
@click.option("--keep-layers", callback=_int_list_option, help="Layer dropping: e.g. 0,2,4.")
@click.option("--optimize/--no-optimize", default=None,
              help="ONNX Runtime Attention/BiasGelu fusions, checked for parity [default: on; a fused graph that "
                   "fails parity falls back to the plain one].")
@click.option("--opset", type=click.IntRange(min=14), default=18, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Parity tolerance for the fp32 graph.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in OUT_DIR.")
@click.option("--st-folder", is_flag=True, help="Also make OUT_DIR load in sentence-transformers as is "
              "(SentenceTransformer(OUT_DIR, backend='onnx')): the model's own modules, or CLS pooling.")
@corpus_options("calibration")
def export(model, out_dir, task, quantize, int8_scheme, per_channel, calibration, fp16, keep_layers, optimize, opset,
           atol, revision, overwrite, st_folder):
    """Export MODEL (hub id, local folder, or `minilm`) to a verified ONNX folder.

    \b
    Example:
      lookalike export minilm runs/minilm
      lookalike export minilm runs/minilm-int8 --quantize int8          # scheme measured on this CPU
      lookalike export minilm runs/minilm-q8 --quantize int8 --int8-scheme dynamic-per-channel
      lookalike export bert-base-uncased runs/bb-l6 --keep-layers 0,2,4,6,8,10
    """
    texts = calibration.sample_texts(512) if calibration else None  # a classifier is judged on up to 512
    variant = Variant(quantize=quantize, int8_scheme=int8_scheme, per_channel=per_channel, fp16=fp16,
                      keep_layers=keep_layers, optimize=optimize)
    m = do_export(resolve_model(model), out_dir, task, variant, opset=opset, overwrite=overwrite, atol=atol,
                  revision=revision, calibration_texts=texts, st_folder=st_folder)
    _echo_json(export_summary(m, out_dir))


# --------------------------------------------------------------------------- embed

@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("corpus")
@click.argument("out_dir", type=click.Path(path_type=Path))
@corpus_options("corpus")
@click.option("--pooling", type=click.Choice(POOLINGS), default=EmbedParams.pooling, show_default=True,
              help="cls (the paper's), mean, max, mean_sqrt_len, weightedmean, lasttoken (as sentence-transformers' "
                   "Pooling), or auto: the model's own embedding.")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Longer inputs are truncated (counted) [the model's own: its sentence-transformers max_seq_length "
                   "under --pooling auto, else its positions].")
@click.option("--prompt-name", default=None,
              help="One of the model's own prompts (config_sentence_transformers.json), e.g. query [under --pooling "
                   "auto, the model's default prompt].")
@click.option("--prompt", default=None, help="A text put before every text, e.g. 'query: ' ('' for none).")
@click.option("--truncate-dim", type=POSITIVE, default=None,
              help="Keep the first N dimensions (Matryoshka models), after normalising, as sentence-transformers.")
@click.option("--batch-tokens", type=click.IntRange(min=2), default=None,
              help="Padded tokens per batch [CPU 1024, CUDA 65536].")
@click.option("--shard-rows", type=POSITIVE, default=EmbedParams.shard_rows, show_default=True)
@click.option("--sort-window", type=POSITIVE, default=EmbedParams.sort_window, show_default=True,
              help="Rows sorted by length together (less padding); windows never cross a shard.")
@click.option("--precision", "--dtype", "dtype", type=click.Choice(DTYPES), default=EmbedParams.dtype,
              show_default=True, help="Stored precision: int8/uint8 with per-dimension ranges fixed once per store "
              "(recorded), binary/ubinary signs 8 to a byte; as sentence-transformers' quantize_embeddings.")
@click.option("--calibration-rows", type=POSITIVE, default=EmbedParams.calibration_rows, show_default=True,
              help="int8/uint8: the ranges are the min/max of the first N records' vectors.")
@click.option("--ranges-from", default=None, help="int8/uint8: take the ranges of this store (or a .npy of shape "
              "(2, dim)), so two stores quantise alike.")
@click.option("--chunk-tokens", type=POSITIVE, default=None,
              help="Long documents: one row per window of N text tokens (ids ID#0, ID#1, ...; parent_id and chunk "
                   "stored) instead of truncating.")
@click.option("--chunk-stride", "--chunk-overlap", "chunk_stride", type=click.IntRange(min=0),
              default=EmbedParams.chunk_stride, show_default=True,
              help="Tokens each window shares with the one before it (the tokenizers' stride).")
@click.option("--pool-chunks", type=click.Choice(["mean"]), default=None,
              help="With --chunk-tokens: one row per record, the mean of its windows' vectors.")
@click.option("--normalize", is_flag=True, help="L2-normalise the stored vectors.")
@DEVICE
@click.option("--threads", type=POSITIVE, default=None, help="ONNX Runtime intra-op threads [physical cores].")
@click.option("--tokenize-workers", type=click.IntRange(min=0), default=None,
              help="Processes that tokenize the text [0 on CPU; all cores but two on CUDA]. Same store either way.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal].")
@click.option("--tokens", type=click.Path(path_type=Path), default=None,
              help="Token cache to read instead of the text [a matching one from `lookalike tokenize`, if any].")
@click.option("--no-tokens", is_flag=True, help="Never read a token cache; tokenize the text.")
@click.option("--overwrite", is_flag=True, help="Replace a store lookalike made in OUT_DIR (instead of resuming it).")
@ray_options
def embed(model_dir, corpus, out_dir, pooling, max_length, prompt_name, prompt, truncate_dim, batch_tokens,
          shard_rows, sort_window, dtype, calibration_rows, ranges_from, chunk_tokens, chunk_stride, pool_chunks,
          normalize, device, threads, tokenize_workers, progress, tokens, no_tokens, overwrite, backend, ray):
    """Embed CORPUS with the export MODEL_DIR into HDF5 shards in OUT_DIR (resumable). CORPUS `-` reads standard
    input (a text per line, or --format jsonl/csv/...).

    \b
    Example:
      lookalike embed runs/minilm ../shared/data/imdb/imdb_1k.tsv runs/imdb-minilm
      lookalike embed runs/minilm corpus.txt runs/own --pooling auto     # the model's own embeddings
      lookalike embed runs/minilm queries.txt runs/q --pooling auto --prompt "query: "
      lookalike embed runs/minilm corpus.txt runs/bits --pooling auto --precision ubinary
      lookalike embed runs/minilm ../shared/data/cuad runs/cuad --chunk-tokens 254 --chunk-stride 32
      cat reviews.txt | lookalike embed runs/minilm - runs/reviews
      lookalike embed runs/minilm ../shared/data/squad2_dev500 runs/squad-minilm --max-length 384
      lookalike embed runs/minilm big.jsonl /nfs/stores/big --backend ray --address auto --workers 8
    Re-running the same command after a crash continues from the last complete shard.
    """
    params = EmbedParams(pooling=pooling, max_length=max_length, batch_tokens=batch_tokens, shard_rows=shard_rows,
                         sort_window=sort_window, dtype=dtype, normalize=normalize, prompt=prompt,
                         prompt_name=prompt_name, truncate_dim=truncate_dim, calibration_rows=calibration_rows,
                         ranges_from=ranges_from, chunk_tokens=chunk_tokens, chunk_stride=chunk_stride,
                         pool_chunks=pool_chunks)
    if overwrite:
        remove_store(out_dir)
    stdin = click.get_binary_stream("stdin")
    with spooled_stdin(corpus, out_dir, stdin) if corpus.path == "-" else contextlib.nullcontext(corpus) as corpus:
        _echo_json(do_embed(model_dir, corpus, out_dir, params, device=device, threads=threads, progress=progress,
                            backend=backend, ray=ray, tokens=False if no_tokens else tokens,
                            tokenize_workers=tokenize_workers))


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("corpus")
@click.argument("out_dir", type=click.Path(path_type=Path), required=False)
@corpus_options("corpus")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="As the embed runs that will read it (longer inputs are truncated, counted) [the model's "
                   "positions].")
@click.option("--shard-rows", type=POSITIVE, default=EmbedParams.shard_rows, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar [on when stderr is a terminal].")
def tokenize(model_dir, corpus, out_dir, max_length, shard_rows, progress):
    """Tokenize CORPUS once with MODEL_DIR's tokenizer into a token cache (resumable).

    Every export that shares the tokenizer (a model and its int8/fp16/layer-dropped variants; the paper's six
    BERTs share bert-base-uncased's vocabulary) then embeds from token ids: `embed` uses a matching cache from
    the shared location ($LOOKALIKE_CACHE/tokens, the default OUT_DIR) by itself, or the one `--tokens` names.

    \b
    Example:
      lookalike tokenize runs/minilm ../shared/data/squad2/cs224n-dev-v2.0.json --max-length 384
      lookalike embed runs/minilm-int8 ../shared/data/squad2/cs224n-dev-v2.0.json runs/sq-int8 --max-length 384
    """
    tok, max_length = export_tokenizer(model_dir, max_length, warn=True)
    _echo_json(tokenize_corpus(tok, corpus, out_dir, max_length=max_length, shard_rows=shard_rows, progress=progress))


# --------------------------------------------------------------------------- knn / ood

@cli.command("export-store")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(STORE_FORMATS), default="npy", show_default=True,
              help="npy: embeddings.npy + ids.jsonl; parquet: embeddings.parquet (id, embedding, n_tokens, ...).")
@click.option("--with-text", is_flag=True, help="Also the source text of each row (read again from the store's "
                                                 "corpus, which must be unchanged): texts.jsonl, or a text column.")
def export_store_cmd(store, out, fmt, with_text):
    """Write STORE's vectors and ids into the folder OUT as .npy or Parquet (streamed shard by shard, after the
    store is verified), for vector databases and dataframes; the store stays the source of truth.

    \b
    Example:
      lookalike export-store runs/imdb-minilm runs/imdb-npy
      lookalike export-store runs/imdb-minilm runs/imdb-parquet --format parquet --with-text
    DuckDB reads the Parquet embedding as FLOAT[]; cast it for its array functions: embedding::FLOAT[384].
    """
    status(f"export-store: verifying {store}")
    _echo_json(export_store(store, out, fmt, texts=jobs.source_texts if with_text else None))


@cli.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--k", type=POSITIVE, default=KnnParams.k, show_default=True, help="Neighbours kept (slice for smaller K).")
@click.option("--index", type=click.Choice(INDEXES), default=KnnParams.index, show_default=True,
              help="flat is exact; ivf/hnsw are approximate and report recall@K on a sample.")
@click.option("--gpu/--no-gpu", default=None, help="FAISS GPU [when FAISS sees one].")
@click.option("--block-rows", type=POSITIVE, default=KnnParams.block_rows, show_default=True,
              help="Queries per search block.")
@click.option("--queries", type=click.Path(path_type=Path), default=None,
              help="A store of queries (the same model's features) to search against STORE instead of self-kNN.")
@click.option("--write-index", type=click.Path(path_type=Path), default=None,
              help="Also write a FAISS flat inner-product index of the normalised vectors (rows in store order) "
                   "to this file, for faiss.read_index.")
@click.option("--sample", type=POSITIVE, default=None,
              help="Draw this many points (uniformly, seeded) and give each its exact K neighbours among all "
                   "points, the bank streamed from disk: agreement is then estimated from the draw, with its "
                   "interval [every point].")
@click.option("--sample-seed", type=int, default=0, show_default=True, help="Seed of the --sample draw.")
@ray_options
def knn(store, out, k, index, gpu, block_rows, write_index, queries, sample, sample_seed, backend, ray):
    """K nearest neighbours (cosine) of every point of STORE, excluding itself; written to OUT (HDF5).

    \b
    Example:
      lookalike knn runs/imdb-minilm runs/imdb-minilm.knn.h5 --k 50
      lookalike knn runs/imdb-minilm runs/imdb-minilm.knn.h5 --write-index runs/imdb-minilm.faiss
      lookalike knn runs/corpus runs/q-vs-corpus.knn.h5 --queries runs/queries --k 10
      lookalike knn runs/big runs/big.knn.h5 --sample 10000 --sample-seed 0
      lookalike knn /nfs/stores/big /nfs/big.knn.h5 --sample 10000 --backend ray --address auto
    With --queries QSTORE, each point of QSTORE gets its K nearest points of STORE (the bank) instead.
    With --sample M, M drawn points get their exact neighbours among all points (O(M·n), the bank streamed);
    `agree` over two such files of the same draw estimates the all-points mean Jaccard with its interval.
    """
    if queries is not None and index != "flat":
        raise CLIError("--queries searches exactly (--index flat)")
    _, said = jobs.knn(store, out, k, index=index, gpu=gpu, block_rows=block_rows, queries=queries,
                       write_index=write_index, sample=sample, sample_seed=sample_seed, backend=backend, ray=ray,
                       status=status)
    _echo_json(said)


@cli.command()
@click.option("--train", "train", required=True, type=click.Path(path_type=Path), help="In-distribution bank.")
@click.option("--test", "test", required=True, type=click.Path(path_type=Path), help="Challenge set (scored).")
@click.option("--val", default=None, type=click.Path(path_type=Path),
              help="In-distribution validation store for the threshold [held-out split of train].")
@click.option("--in-test", default=None, type=click.Path(path_type=Path),
              help="Held-out in-distribution test store: enables AUROC and FPR@TPR.")
@click.option("--k", "ks", default=str(OodParams.k), show_default=True, callback=_int_list_option,
              help="k, or several for a sweep: 1,5,10,20,50.")
@click.option("--tpr", type=click.FloatRange(0, 1, min_open=True), default=OodParams.tpr, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=OodParams.val_fraction,
              show_default=True)
@click.option("--seed", type=int, default=OodParams.seed, show_default=True)
@click.option("--gpu/--no-gpu", default=None)
@click.option("--allow-overlap", is_flag=True,
              help="Accept val/in-test/test stores that share points with the bank (refused by default; recorded).")
@click.argument("out", type=click.Path(path_type=Path))
@ray_options
def ood(train, test, val, in_test, ks, tpr, val_fraction, seed, gpu, allow_overlap, out, backend, ray):
    """Deep-kNN OOD: score TEST against the TRAIN bank, flag points below the TPR threshold.

    Deep Nearest Neighbors (Sun, Ming, Zhu and Li, ICML 2022) on L2-normalised features. All stores must
    hold the same model's features (model, pooling, normalisation, max length).

    \b
    Example:
      lookalike ood --train runs/squad-minilm --test runs/cuad-minilm --k 1,5,10,20 runs/ood-minilm.json
    """
    status("ood: verifying the stores, scoring against the bank")
    res = jobs.ood(train, test, out, ks, val=val, in_test=in_test, tpr=tpr, val_fraction=val_fraction, seed=seed,
                   gpu=gpu, allow_overlap=allow_overlap, backend=backend, ray=ray)
    summary, failing = ood_summary_by_k(res)
    if failing:
        log.warning("the OOD set is not meaningful at k=%s (%s); agreements over it say little",
                    ",".join(str(k) for k, _ in failing), failing[0][1])
    _echo_json({"out": str(out), "val": res.meta["val"], "pooling": res.meta.get("pooling"), "results": summary})


# --------------------------------------------------------------------------- predict / evaluate / finetune

@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(tasks.NAMES), required=True)
@corpus_options("data")
@click.option("--max-length", type=click.IntRange(min=8), default=None, help="[qa 384, cls 512]")
@click.option("--doc-stride", type=POSITIVE, default=PredictParams.doc_stride, show_default=True,
              help="QA window overlap.")
@click.option("--n-best", type=POSITIVE, default=PredictParams.n_best, show_default=True)
@click.option("--max-answer-length", type=POSITIVE, default=PredictParams.max_answer_length, show_default=True)
@click.option("--null-score-diff-threshold", type=float, default=PredictParams.null_score_diff_threshold,
              show_default=True)
@click.option("--f1-below", type=float, default=None, help="QA error set: F1 below this instead of EM = 0.")
@DEVICE
@ray_options
def predict(model_dir, data, out, task, max_length, doc_stride, n_best, max_answer_length, null_score_diff_threshold,
            f1_below, device, backend, ray):
    """Predict with an ONNX QA or classification export; write predictions, metrics and the error set to OUT.

    \b
    Example:
      lookalike predict runs/qa ../shared/data/squad2_dev500 runs/qa-pred --task qa
      lookalike predict runs/sst ../shared/data/imdb/imdb_1k.tsv runs/imdb-pred --task cls
      lookalike predict runs/qa squad-dev.json /nfs/qa-pred --task qa --backend ray --address auto
    """
    params = PredictParams(max_length=max_length, doc_stride=doc_stride, n_best=n_best,
                           max_answer_length=max_answer_length, null_score_diff_threshold=null_score_diff_threshold,
                           f1_below=f1_below)
    info, metrics = jobs.predict_and_score(model_dir, data, out, task=task, params=params, device=device,
                                      backend=backend, ray=ray)
    _echo_json({"out": str(out), "n": info["n"], "seconds": info["seconds"], **metrics})


@cli.command()
@click.argument("data")
@click.argument("predictions", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(tasks.NAMES), default="qa", show_default=True)
@click.option("--na-prob-file", type=click.Path(path_type=Path), default=None,
              help="No-answer probabilities {id: p} (enables best_exact/best_f1).")
@click.option("--na-prob-thresh", type=float, default=1.0, show_default=True)
@click.option("--f1-below", type=float, default=None, help="Error set by F1 below this (QA).")
@click.option("--allow-missing", is_flag=True,
              help="Score only the records that have a prediction (recorded in the output) instead of failing.")
@corpus_options("data")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write metrics.json and errors.json here.")
def evaluate(data, predictions, task, na_prob_file, na_prob_thresh, f1_below, allow_missing, out):
    """Score PREDICTIONS ({id: answer}) against DATA with the official SQuAD v2 semantics (or accuracy).

    Every record needs a prediction unless --allow-missing.

    \b
    Example:
      lookalike evaluate ../shared/data/squad2_dev500 runs/qa-pred/predictions.json \\
          --na-prob-file runs/qa-pred/null_odds.json
    """
    if out is not None and out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    _echo_json(jobs.evaluate(data, predictions, task=task, na_probs=na_prob_file, na_prob_thresh=na_prob_thresh,
                       f1_below=f1_below, out=out, allow_missing=allow_missing))


@cli.command()
@click.argument("model")
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(tasks.NAMES), required=True)
@corpus_options("data")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None, help="[qa 3e-5, cls 1e-4]")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="[2]")
@click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after N steps (overrides epochs).")
@click.option("--batch-size", type=POSITIVE, default=None, help="[qa 12, cls 16]")
@click.option("--max-length", type=click.IntRange(min=8), default=None, help="[qa 384, cls 256]")
@click.option("--doc-stride", type=POSITIVE, default=None, help="[128]")
@click.option("--save-steps", type=POSITIVE, default=FinetuneParams.save_steps, show_default=True)
@click.option("--seed", type=int, default=FinetuneParams.seed, show_default=True)
@click.option("--answerable-only", is_flag=True, help="QA: train on answerable questions only (tiny data sets).")
@click.option("--keep-layers", callback=_int_list_option, help="Drop encoder layers before training: e.g. 1,3,5.")
@click.option("--shuffle-seed", type=int, default=None,
              help="With --limit: draw the N records with this seed from the whole file [the training seed].")
@click.option("--no-shuffle", is_flag=True, help="With --limit: the first N records (a file sorted by label gives "
                                                 "one class).")
@click.option("--eval", "eval_data", default=None,
              help="Held-out labelled records scored at the end (classification accuracy) [a training sample].")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the trainer's checkpoints after the final save.")
@click.option("--overwrite", is_flag=True,
              help="Train again into a folder of another recipe (removes only what finetune wrote there).")
def finetune(model, data, out, task, learning_rate, epochs, max_steps, batch_size, max_length, doc_stride,
             save_steps, seed, answerable_only, keep_layers, shuffle_seed, no_shuffle, eval_data, keep_checkpoints,
             overwrite):
    """Fine-tune MODEL on DATA for QA (SQuAD v2 style) or classification (IMDB style); resumable. OUT is keyed
    on the whole recipe: the same command resumes or does nothing, another recipe is refused (--overwrite).

    \b
    Example:
      lookalike finetune minilm ../shared/data/imdb/imdb_train_5k.tsv runs/minilm-imdb --task cls \\
          --limit 1000 --epochs 1 --max-length 128 --eval ../shared/data/imdb/imdb_test_2k.tsv
      lookalike finetune bert-base-uncased squad_v2:train runs/bb-squad2 --task qa
    """
    params = FinetuneParams(learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                            max_length=max_length, doc_stride=doc_stride, seed=seed, save_steps=save_steps,
                            answerable_only=answerable_only, keep_layers=keep_layers, shuffle=not no_shuffle,
                            shuffle_seed=shuffle_seed)
    path = do_finetune(task, resolve_model(model), data, out, params, progress=interactive(), overwrite=overwrite,
                       eval_data=eval_data, keep_checkpoints=keep_checkpoints)
    click.echo((path / "lookalike-finetune.json").read_text())


# --------------------------------------------------------------------------- attack / bench

@cli.command()
@click.argument("target_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--mlm", required=True,
              help="Attack masked-LM: hub id (paper: bert-base-uncased) or a local folder (offline: `lookalike fit-mlm`).")
@click.option("--max-candidates", type=POSITIVE, default=AttackParams.max_candidates, show_default=True,
              help="MLM candidates per word: TextAttack's / BERT-Attack's K.")
@click.option("--top-words", type=POSITIVE, default=None,
              help="Attack only the N most important words: the paper's 'K=3' as it describes K. [all]")
@click.option("--n", "n", type=POSITIVE, default=AttackParams.n, show_default=True,
              help="Examples (seeded sample, same for every target).")
@click.option("--seed", type=int, default=AttackParams.seed, show_default=True)
@click.option("--max-percent", type=click.FloatRange(0, 1), default=AttackParams.max_percent, show_default=True,
              help="Max fraction of words perturbed.")
@click.option("--similarity", type=click.Choice(SIMILARITIES), default=AttackParams.similarity, show_default=True,
              help="engine: cosine of a local encoder (offline stand-in for USE); use: TF-Hub USE.")
@click.option("--similarity-threshold", type=float, default=AttackParams.similarity_threshold, show_default=True)
@click.option("--similarity-model", type=click.Path(path_type=Path), default=None,
              help="Feature-extraction export for --similarity engine [packaged MiniLM].")
@click.option("--max-length", type=click.IntRange(min=8), default=AttackParams.max_length, show_default=True)
@corpus_options("data")
@DEVICE
@click.option("--progress/--no-progress", default=None)
def attack(target_dir, data, out, mlm, max_candidates, top_words, n, seed, max_percent, similarity,
           similarity_threshold, similarity_model, max_length, device, progress):
    """BERT-Attack (TextAttack components) against an ONNX classifier; JSONL per example + Table 3 summary.

    \b
    Example:
      lookalike attack runs/imdb-cls ../shared/data/imdb/imdb_1k.tsv runs/attack --mlm bert-base-uncased --top-words 3
    Re-running the same command resumes where it stopped.
    """
    params = AttackParams(mlm=mlm, max_candidates=max_candidates, top_words=top_words, n=n, seed=seed,
                          max_percent=max_percent, similarity=similarity, similarity_threshold=similarity_threshold,
                          max_length=max_length)
    s = run_attack(target_dir, data, out, params, similarity_model=similarity_model, device=device,
                   progress=interactive() if progress is None else progress)
    _echo_json({k: v for k, v in s.items() if not k.startswith("setting_")})


@cli.command("fit-mlm")
@click.argument("base")
@click.argument("data")
@click.argument("out", type=click.Path(path_type=Path))
@corpus_options("data")
@click.option("--eval", "eval_data", default=None, help="Held-out texts for the fill-mask accuracy.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--epochs", type=POSITIVE, default=3, show_default=True)
def fit_mlm(base, data, out, eval_data, max_length, epochs):
    """Fit a masked-LM head for BASE's frozen encoder on DATA: an offline MLM for `lookalike attack --mlm OUT`.

    The packaged MiniLM ships no MLM head; this fits one (BERT's head, decoder tied to the word embeddings) on
    local text and reports its fill-mask top-1/10/48 accuracy on held-out masked words. Online, the paper's
    setting is `--mlm bert-base-uncased`.

    \b
    Example:
      lookalike fit-mlm minilm ../shared/data/imdb/imdb_train_5k.tsv runs/mlm --every 5 \
          --eval ../shared/data/imdb/imdb_test_2k.tsv
      lookalike attack runs/imdb-cls ../shared/data/imdb/imdb_test_2k.tsv runs/attack --mlm runs/mlm --top-words 3
    """
    report = fit_mlm_head(resolve_model(base), data, out, eval_corpus=CorpusSpec(eval_data, limit=300)
                          if eval_data else None, max_length=max_length, epochs=epochs)
    _echo_json({k: report[k] for k in ("fit_texts", "fit_positions", "eval_positions", "fill_mask_accuracy",
                                       "untrained_head_accuracy", "seconds")})


@cli.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--batch-sizes", default="1,8,32", show_default=True, callback=_int_list_option)
@click.option("--seq-lengths", default="32,128,384", show_default=True, callback=_int_list_option)
@click.option("--repeat", type=POSITIVE, default=20, show_default=True)
@click.option("--corpus", default=None, help="Also measure full-engine throughput on this corpus.")
@click.option("--corpus-limit", type=POSITIVE, default=2000, show_default=True,
              help="Records of --corpus embedded [--limit, when given].")
@DEVICE
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("bench"), show_default=True)
@corpus_options("corpus")
def bench(model_dirs, batch_sizes, seq_lengths, repeat, corpus, corpus_limit, device, out):
    """Latency p50/p90/p99 and throughput per model, FLOPs/token, ratio to this machine's matmul ceiling.

    \b
    Example:
      lookalike bench runs/minilm runs/minilm-int8 --batch-sizes 1,8 --seq-lengths 128 --corpus corpus.jsonl
    Writes OUT/bench.json, OUT/bench.md and OUT/bench.png.
    """
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder")
    result = run_bench(model_dirs, list(batch_sizes), list(seq_lengths), repeat=repeat, corpus=corpus,
                       corpus_limit=corpus_limit, device=device)
    click.echo(write_bench(result, out))


# --------------------------------------------------------------------------- analysis

def _named(values: tuple[str, ...], option: str) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{v!r}: expected NAME=PATH", param_hint=option)
        if name in out:
            raise click.BadParameter(f"{name!r} given twice", param_hint=option)
        out[name] = Path(path)
    return out


@cli.command()
@click.option("--knn", "knns", multiple=True, help="NAME=neighbours.h5 (from `lookalike knn`), one per model.")
@click.option("--ood", "oods", multiple=True, help="NAME=ood.json (from `lookalike ood`), one per model.")
@click.option("--errors", "errs", multiple=True,
              help="NAME=errors.json (from `lookalike predict`), or a JSON list / text file of error ids.")
@click.option("--dataset", default=None,
              help="The corpus error id lists were scored on (checks every id belongs to it).")
@click.option("--k", "ks", default=str(KnnParams.k), show_default=True, callback=_int_list_option,
              help="K for representation agreement; a list (1,5,10) sweeps, one table per K.")
@click.option("--k-ood", type=POSITIVE, default=None, help="k for OOD agreement [each --k].")
@click.option("--reps", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals (0: none).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write OUT.md/.csv/.json too.")
@click.option("--store", "stores", multiple=True,
              help="NAME=STORE (from `lookalike embed`), one per model: the embeddings --measure cka reads.")
@click.option("--measure", "measures", default="jaccard", show_default=True,
              help="Representation measures, comma-separated: jaccard (the paper's kNN Jaccard), mutual_knn, cknna "
                   "(from --knn files), cka, cka_debiased (from --store stores).")
@corpus_options("dataset", format_flag="--dataset-format")
def agree(knns, oods, errs, dataset, ks, k_ood, reps, fmt, out, stores, measures):
    """Pairwise agreement (Jaccard, with bootstrap 95% intervals) between models from stored artifacts.

    Models appear in the order given; the first is the reference. Error sets over different questions,
    and neighbour/OOD files from different corpora or embedding settings, are refused.

    \b
    Example:
      lookalike agree --knn large=runs/l.knn.h5 --knn int8=runs/q.knn.h5 --k 10
      lookalike agree --knn large=runs/l.knn.h5 --knn int8=runs/q.knn.h5 --k 1,5,10 --format csv
      lookalike agree --errors large=runs/pl/errors.json --errors mini=runs/pm/errors.json --format csv
      lookalike agree --errors a=a_errors.json --errors b=b_errors.txt --dataset ../shared/data/squad2/cs224n-dev-v2.0.json
      lookalike agree --knn a=a.knn.h5 --knn b=b.knn.h5 --store a=runs/a --store b=runs/b \
          --measure jaccard,mutual_knn,cknna,cka,cka_debiased
    """
    knns, oods, errs = _named(knns, "--knn"), _named(oods, "--ood"), _named(errs, "--errors")
    stores = _named(stores, "--store")
    measures = tuple(m.strip() for m in measures.split(",") if m.strip())
    if len(dict.fromkeys([*knns, *oods, *errs, *stores])) < 2:
        raise click.UsageError("give artifacts of at least two models")
    if min(ks) < 1:
        raise click.BadParameter("K must be at least 1", param_hint="--k")
    status(f"agree: {len(dict.fromkeys([*knns, *oods, *errs]))} models, {reps} bootstrap resamples per Jaccard")
    table = jobs.agreement(knns, oods, errs, list(ks), k_ood=k_ood, reps=reps, dataset=dataset, measures=measures,
                           stores=stores)
    if out:
        write_table(table.rows, table.columns, out)
    if fmt == "json":
        _echo_json(table.rows)
    elif fmt == "csv":
        click.echo(csv_text(table.rows, table.columns))
    else:
        click.echo("\n\n".join(table.markdown))
    if table.unchecked:
        click.echo(f"note: the record universe of {', '.join(table.unchecked)} is unchecked (an id list; give "
                   "--dataset to check it), so these error Jaccards have no interval and no chance level: a "
                   "bootstrap needs the records the errors were counted over", err=True)


@cli.command()
@click.argument("experiment", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Output folder [config's out:].")
@click.option("--check", is_flag=True, help="Check the file, its models' sources and its datasets (read whole), "
                                            "and say what would run; run nothing.")
@DEVICE
def run(experiment, out, check, device):
    """Run an experiment config end to end (cached steps) and write report/.

    \b
    Example:
      lookalike run examples/shared-data.yaml --check      # validate first: nothing runs
      lookalike run examples/shared-data.yaml -o runs/shared
    A re-run skips finished steps; changing a parameter redoes only what depends on it.
    """
    if check:
        from .experiment.runner import check_experiment

        for line in check_experiment(experiment, out):
            click.echo(line)
        return
    report = run_experiment(experiment, out, echo=lambda s: click.echo(s, err=True), device=device)
    click.echo(f"report: {report / 'report.md'}")


@cli.command()
@click.argument("out", type=click.Path(path_type=Path), default="lookalike-demo")
@click.option("--docs", type=POSITIVE, default=1200, show_default=True, help="Docstrings in the corpus.")
@click.option("--ood", "n_ood", type=POSITIVE, default=300, show_default=True,
              help="License paragraphs (the OOD challenge set).")
@click.option("--fp16", is_flag=True, help="Add the fp16 variant (slow on CPUs without fp16 arithmetic).")
@click.option("--attack-n", type=POSITIVE, default=20, show_default=True, help="Docstrings attacked per model.")
@DEVICE
def demo(out, docs, n_ood, fp16, attack_n, device):
    """Offline demo: packaged MiniLM vs its int8 and layer-dropped variants on all four characteristics.

    \b
    Example:
      lookalike demo            # writes lookalike-demo/report/report.md
    """
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder; give a folder for the demo")
    t0 = time.perf_counter()
    report = run_demo(out, docs, n_ood, echo=lambda s: click.echo(s, err=True), device=device, fp16=fp16,
                      attack_n=attack_n)
    click.echo((report / "table2_agreement.md").read_text())
    click.echo(f"report: {report / 'report.md'} ({time.perf_counter() - t0:.0f} s)")


def main():
    cli(prog_name="lookalike")


if __name__ == "__main__":
    main()
