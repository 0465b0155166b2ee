"""The Python API on lists: an export loaded once, `encode(texts) -> np.ndarray`, through the engine itself.

    from lookalike import Embedder, embed_to_store
    model = Embedder("runs/minilm", pooling="auto")          # the model's own embeddings (sentence-transformers)
    vectors = model.encode(["a great movie", "terrible acting"])
    Embedder("minilm")                                       # or a hub id / sentence-transformers folder: exported
                                                             # once into $LOOKALIKE_CACHE/exports, keyed by content
    model.encode("one text", batch_size=32, normalize_embeddings=True)   # sentence-transformers' names work too
    embed_to_store("minilm", ["a text", ...], "runs/store")  # a list, an HF Dataset or a corpus path -> a store

`encode` runs exactly what `lookalike embed` runs (the same plan, sort windows, token-budget batches, session
and pooling), so its rows are the ones a store made with the same settings holds, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.precision import QUANTISED, calibration_ranges, check_ranges, quantize, stored_dtype
from ..data import Record
from ..errors import InputError
from ..files import jsonl_line, progress_bar
from ..params import Device, EmbedParams, Pooling, Precision
from .plan import make_plan
from .runtime import OnnxModel
from .stages import staged
from .windows import WindowEmbedder


class Embedder:
    """An export ready to embed lists of texts.

    Every setting given to the constructor is the default of `encode`, which can override it per call.

    Args:
        model_dir: an export folder, or what `lookalike export` takes (a hub id, a sentence-transformers folder,
            "minilm"), exported once into $LOOKALIKE_CACHE/exports and verified on every use.
        device: "auto" (CUDA when ONNX Runtime has it), "cpu", "cuda" or "cuda:N".
        threads: ONNX Runtime intra-op threads (None: the session recipe's, by measurement).
        pooling: "cls" (the default, as the paper), a sentence-transformers Pooling mode, or "auto" (the
            model's own when the export records one, else cls; said once when it differs from the default).
        normalize: L2-normalise the vectors ("auto" pooling adds the model's own normalisation).
        max_length: tokens per text (None: the model's own, clamped to its positions).
        batch_tokens: padded tokens per batch (None: chosen for the device).
        dtype: "float32", "float16", or quantised as sentence-transformers' quantize_embeddings.
        prompt: a prefix for every text; prompt_name: one of the model's declared prompts.
        truncate_dim: keep the first dimensions (Matryoshka models).
        revision: the hub revision to export (online use).
    """

    def __init__(self, model_dir: str | Path, *, device: Device = "auto", threads: int | None = None,
                 pooling: Pooling = "cls", normalize: bool = False, max_length: int | None = None,
                 batch_tokens: int | None = None, dtype: Precision = "float32", prompt: str | None = None,
                 prompt_name: str | None = None, truncate_dim: int | None = None, revision: str | None = None):
        from .sources import export_for

        self.model = OnnxModel(export_for(model_dir, revision=revision), task="feature-extraction", device=device,
                               threads=threads)
        self.defaults = EmbedParams(pooling=pooling, normalize=normalize, max_length=max_length,
                                    batch_tokens=batch_tokens, dtype=dtype, prompt=prompt, prompt_name=prompt_name,
                                    truncate_dim=truncate_dim)
        self._plans: dict = {}

    @property
    def dim(self) -> int:
        """The vectors' width under the constructor's settings (a Dense module can change it)."""
        return self._plan().dim

    @property
    def device(self) -> str:
        return self.model.device

    # ---- sentence-transformers' conveniences, with its names
    def get_sentence_embedding_dimension(self) -> int:
        """The vectors' width under the constructor's settings (sentence-transformers' name for `dim`)."""
        return self.dim

    @property
    def max_seq_length(self) -> int:
        """The max length `encode` uses (the model's own unless the constructor set one)."""
        return int(self._plan().config["max_length"])

    @property
    def tokenizer(self):
        """The export's fast tokenizer (transformers), loaded without running any code of the model's."""
        return self.model.tokenizer

    @property
    def prompts(self) -> dict:
        """The prompts the model declares (sentence-transformers' config), by name; {} when none."""
        st = self.model.manifest.sentence_transformers or {}
        return dict(st.get("prompts") or {})

    def encode_query(self, texts, **kw):
        """`encode` with the model's "query" prompt when it declares one (as sentence-transformers' encode_query)."""
        if "prompt" not in kw and "prompt_name" not in kw and "query" in self.prompts:
            kw["prompt_name"] = "query"
        return self.encode(texts, **kw)

    def encode_document(self, texts, **kw):
        """`encode` with the model's "document" (or "passage") prompt when it declares one."""
        name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        if "prompt" not in kw and "prompt_name" not in kw and name is not None:
            kw["prompt_name"] = name
        return self.encode(texts, **kw)

    @staticmethod
    def similarity(a, b) -> np.ndarray:
        """Cosine similarity of every row of `a` with every row of `b` (numpy arrays or torch tensors, one vector
        or many): sentence-transformers' default `similarity`, as a float32 numpy matrix."""
        a, b = (np.atleast_2d(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32))
                for x in (a, b))
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (a @ b.T).astype(np.float32)

    def settings(self, **overrides) -> dict:
        """The resolved settings `encode` would use (pooling after "auto", normalisation, max length)."""
        plan = self._plan(**overrides)
        return {k: plan.config[k] for k in ("pooling", "normalize", "max_length", "dtype")} | \
            {"pooling_from": plan.config.get("pooling_from"), "batch_tokens": plan.batch_tokens,
             "prompt": plan.prompt, "dense": plan.dense, "dim": plan.dim}

    def _plan(self, **overrides):
        given = {k: v for k, v in overrides.items() if v is not None}
        params = EmbedParams(**{**self.defaults.__dict__, **given})
        if params not in self._plans:  # resolve once per settings: the pooling note is said once, not per call
            self._plans[params] = make_plan(self.model.manifest, None, params, device=self.model.device,
                                            output_names=self.model.output_names)
            self._plans[params].say_notes()
        return self._plans[params]

    def encode(self, texts: Sequence[str] | str | None = None, pairs: Sequence[str] | None = None, *,
               batch_tokens: int | None = None, pooling: Pooling | None = None, normalize: bool | None = None,
               max_length: int | None = None, dtype: Precision | None = None, prompt: str | None = None,
               prompt_name: str | None = None, truncate_dim: int | None = None, progress: bool = False, ranges=None,
               **st_names):
        """Vectors of `texts` (and `pairs`, for question-context or sentence pairs), one row per text, in order.

        Args:
            texts: the texts; one string gives one vector.
            pairs: second texts (question-context or sentence pairs), one per text.
            batch_tokens, pooling, normalize, max_length, prompt, prompt_name, truncate_dim: as the constructor's,
                for this call.
            dtype: float32, float16, or quantised as sentence-transformers' quantize_embeddings: int8/uint8 (with
                `ranges`), binary/ubinary (signs packed 8 to a byte).
            progress: a progress bar.
            ranges: int8/uint8 ranges, shape (2, dim) (None: this call's own minimum and maximum, as
                sentence-transformers does).
            **st_names: sentence-transformers' names: sentences (texts), batch_size (texts per batch: the token
                budget becomes batch_size × max length), show_progress_bar, normalize_embeddings, precision,
                convert_to_tensor, convert_to_numpy, device, output_value ("token_embeddings": each text's token
                vectors).

        Returns:
            An array (len(texts), dim) of the asked dtype (one vector for one string; a torch tensor with
            convert_to_tensor); with output_value="token_embeddings", a list of (n_tokens, hidden) arrays.
        """
        texts, batch_tokens, progress, normalize, dtype, to_tensor = _st_names(
            texts, batch_tokens, progress, normalize, dtype, st_names, self)
        single = isinstance(texts, str)
        if st_names.get("output_value") == "token_embeddings":
            rows = self.token_embeddings(texts if not single else [texts],
                                         pairs if not single or pairs is None else [pairs], max_length=max_length,
                                         batch_tokens=batch_tokens, prompt=prompt, prompt_name=prompt_name)
            if to_tensor:
                import torch

                rows = [torch.from_numpy(r) for r in rows]
            return rows[0] if single else rows
        out = self._encode(texts if not single else [texts], pairs if not single or pairs is None else [pairs],
                           batch_tokens=batch_tokens, pooling=pooling, normalize=normalize, max_length=max_length,
                           dtype=dtype, prompt=prompt, prompt_name=prompt_name, truncate_dim=truncate_dim,
                           progress=progress, ranges=ranges)
        if single:
            out = out[0]
        if to_tensor:
            import torch

            return torch.from_numpy(out)
        return out

    def token_embeddings(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                         max_length: int | None = None, batch_tokens: int | None = None, prompt: str | None = None,
                         prompt_name: str | None = None) -> list[np.ndarray]:
        """Each text's token vectors (the model's last hidden state, float32, one row per token of the text as
        tokenized, special tokens included, no padding): sentence-transformers' `output_value="token_embeddings"`.
        Prompts are prepended as for sentence vectors."""
        from .batching import run_batched, tokenize

        if "last_hidden_state" not in self.model.output_names:
            raise InputError("this export has no token outputs (last_hidden_state); token embeddings need a "
                             "feature-extraction export", field="output_value")
        texts, pairs = _checked_inputs(texts, pairs)
        plan = self._plan(batch_tokens=batch_tokens, max_length=max_length, prompt=prompt, prompt_name=prompt_name)
        head = plan.prompt or ""
        records = [Record(str(i), head + t, None if pairs is None else pairs[i]) for i, t in enumerate(texts)]
        enc = tokenize(self.tokenizer, records, int(plan.config["max_length"]))
        (rows,) = run_batched(self.model, enc, ["last_hidden_state"], plan.batch_tokens,
                              per_token={"last_hidden_state"})
        return [np.asarray(r, dtype=np.float32) for r in rows]

    def _encode(self, texts, pairs, *, batch_tokens, pooling, normalize, max_length, dtype, prompt, prompt_name,
                truncate_dim, progress, ranges) -> np.ndarray:
        texts, pairs = _checked_inputs(texts, pairs)
        precision = dtype or self.defaults.dtype
        float_run = precision in QUANTISED  # int8/uint8: float vectors first, then one set of ranges for all
        plan = self._plan(batch_tokens=batch_tokens, pooling=pooling, normalize=normalize, max_length=max_length,
                          dtype="float32" if float_run else precision, prompt=prompt, prompt_name=prompt_name,
                          truncate_dim=truncate_dim)
        if ranges is not None and not float_run:
            raise InputError(f"ranges are for int8/uint8 precision, not {precision}", field="ranges")
        out = np.empty((len(texts), plan.stored_dim), dtype=stored_dtype(plan.precision))
        if not texts:
            return out.astype(stored_dtype(precision)) if float_run else out
        records = (Record(str(i), t, None if pairs is None else pairs[i]) for i, t in enumerate(texts))
        runner = WindowEmbedder(self.model, plan)
        bar = progress_bar(progress, total=len(texts), desc="encode")
        try:
            for win, (emb, _) in staged(plan.windows(records, 0), lambda w: runner.prepare(*w),
                                        lambda win: (win, runner.infer(win)), name="lookalike-encode"):
                out[win.start:win.start + len(win.ids)] = emb
                bar.update(len(win.ids))
        finally:
            bar.close()
        if float_run:  # as sentence-transformers' quantize_embeddings: ranges given, else this call's own
            r = check_ranges(ranges, plan.dim, "ranges") if ranges is not None else calibration_ranges(out)
            return quantize(out, precision, r)
        return out


ST_NAMES = ("sentences", "batch_size", "show_progress_bar", "normalize_embeddings", "precision",
            "convert_to_tensor", "convert_to_numpy", "device", "output_value")


def _st_names(texts, batch_tokens, progress, normalize, dtype, st: dict, embedder):
    """encode's own arguments, with sentence-transformers' names for them folded in (an unknown name is refused,
    naming the nearest)."""
    from ..errors import unknown_key_message

    for k in st:
        if k not in ST_NAMES:
            raise InputError(unknown_key_message(k, ST_NAMES + ("texts", "pairs", "batch_tokens", "pooling",
                                                                "normalize", "max_length", "dtype", "prompt",
                                                                "prompt_name", "truncate_dim", "progress")),
                             field=k)
    if "sentences" in st:
        if texts is not None:
            raise InputError("give texts or sentences, not both", field="sentences")
        texts = st["sentences"]
    if st.get("batch_size") is not None:
        n = st["batch_size"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"batch_size must be a positive integer, not {n!r}", field="batch_size")
        if batch_tokens is None:
            batch_tokens = n * embedder.settings()["max_length"]
    if st.get("show_progress_bar") is not None:
        progress = bool(st["show_progress_bar"])
    if st.get("normalize_embeddings") is not None and normalize is None:
        normalize = bool(st["normalize_embeddings"]) or None  # False keeps the run's own (auto may normalise)
    if st.get("precision") is not None:
        dtype = st["precision"]
    if st.get("device") is not None and st["device"] not in ("auto", embedder.device):
        raise InputError(f"this Embedder runs on {embedder.device}; make another Embedder(..., device="
                         f"{st['device']!r}) for that device", field="device")
    if st.get("output_value", "sentence_embedding") not in ("sentence_embedding", "token_embeddings", None):
        raise InputError(f"output_value {st['output_value']!r}: 'sentence_embedding' (vectors) or "
                         "'token_embeddings' (each text's token vectors)", field="output_value")
    to_tensor = bool(st.get("convert_to_tensor"))
    return texts, batch_tokens, progress, normalize, dtype, to_tensor


def _checked_inputs(texts, pairs) -> tuple[list, list | None]:
    """`encode`'s texts (and pairs) as lists of str of one length; InputError naming the first that is not."""
    texts = _text_list(texts, "texts")
    if pairs is not None:
        pairs = _text_list(pairs, "pairs")
        if len(pairs) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(pairs)} pairs")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a str")
        if pairs is not None and not isinstance(pairs[i], str):
            raise InputError(f"pair {i} is a {type(pairs[i]).__name__}, not a str")
    return texts, pairs


def _text_list(values, name: str) -> list:
    """`values` as a list; one string or a non-sequence is refused (a string would be taken as its characters;
    `encode` itself wraps one text given alone)."""
    if isinstance(values, str):
        raise InputError(f"encode takes a list of {name} with a list of texts, not one string (wrap it: [text])")
    if values is None or isinstance(values, (bytes, dict)) or not hasattr(values, "__iter__"):
        raise InputError(f"encode takes a list of {name}, got {type(values).__name__}")
    return list(values)


def embed_to_store(model, data, out: str | Path, *, device: Device = "auto", threads: int | None = None,
                   progress: bool | None = None, **options) -> dict:
    """Embed `data` with `model` into the store `out` (resumable, verified, as `lookalike embed`).

    Args:
        model: an export folder, or what `Embedder` takes (hub id, sentence-transformers folder, "minilm").
        data: a corpus path (any format `lookalike embed` reads), a CorpusSpec, a list of texts, or a Hugging
            Face `Dataset` (its `text_field` column, default "text"; `id_field` for ids, else row numbers).
        out: the store folder (a re-run resumes it; other settings are refused).
        device, threads: as `Embedder`'s.
        progress: a progress bar (None: when stderr is a terminal).
        **options: embedding settings (EmbedParams' fields: pooling, max_length, normalize, dtype, chunk_tokens,
            ...) and corpus options (CorpusSpec's: text_field, id_field, limit, every, offset, ...).

    Returns:
        The run's stats (rows, rows/s, truncated rows, the store's path and settings).

        from lookalike import embed_to_store
        embed_to_store("minilm", ["a great movie", "terrible acting"], "runs/two", pooling="auto")
    """
    import dataclasses
    import shutil
    import tempfile

    from ..data import CorpusSpec
    from .pipeline import embed
    from .sources import export_for

    embed_fields = {f.name for f in dataclasses.fields(EmbedParams)}
    corpus_fields = {f.name for f in dataclasses.fields(CorpusSpec)} - {"path"}
    unknown = [k for k in options if k not in embed_fields | corpus_fields]
    if unknown:
        from ..errors import unknown_key_message

        raise InputError(unknown_key_message(unknown[0], sorted(embed_fields | corpus_fields)), field=unknown[0])
    params = EmbedParams(**{k: v for k, v in options.items() if k in embed_fields})
    corpus_opts = {k: v for k, v in options.items() if k in corpus_fields}
    export_dir = export_for(model)
    if isinstance(data, (str, Path, CorpusSpec)):
        corpus = data.replace(**corpus_opts) if isinstance(data, CorpusSpec) else CorpusSpec(data, **corpus_opts)
        return embed(export_dir, corpus, out, params, device=device, threads=threads, progress=progress)
    rows = _rows_of(data, corpus_opts.get("text_field", "text"), corpus_opts.get("id_field"))
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.texts-", dir=out.parent))
    try:  # a JSON-lines copy of the texts: the store fingerprints and re-reads its corpus like any other
        path = folder / "texts.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i, (rid, text) in enumerate(rows):
                f.write(jsonl_line({"id": str(i) if rid is None else rid, "text": text}))
        spec = CorpusSpec(str(path), format="jsonl", id_field="id",
                          **{k: v for k, v in corpus_opts.items() if k not in ("text_field", "id_field", "format")})
        return embed(export_dir, spec, out, params, device=device, threads=threads, progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rows_of(data, text_field: str, id_field: str | None):
    """(id or None, text) of a list of texts or a Hugging Face Dataset; InputError naming the row that is not."""
    if isinstance(data, (bytes, dict)) or not hasattr(data, "__iter__"):
        raise InputError(f"data must be a corpus path, a list of texts or a Dataset, not {type(data).__name__}")
    columns = getattr(data, "column_names", None)
    if columns is not None:  # a datasets.Dataset
        if text_field not in columns:
            raise InputError(f"the Dataset has no column {text_field!r} (columns: {', '.join(columns)}); pass "
                             "text_field=", field="text_field")
        if id_field is not None and id_field not in columns:
            raise InputError(f"the Dataset has no column {id_field!r}", field="id_field")
        for i, row in enumerate(data):
            text = row[text_field]
            if not isinstance(text, str):
                raise InputError(f"row {i}: {text_field} is a {type(text).__name__}, not a str", field=text_field)
            yield (str(row[id_field]) if id_field else None), text
        return
    for i, text in enumerate(data):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a str")
        yield None, text
