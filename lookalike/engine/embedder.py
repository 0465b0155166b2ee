"""The Python API on lists: an export loaded once, `encode(texts) -> np.ndarray`, through the engine itself.

    from lookalike import Embedder
    model = Embedder("runs/minilm", pooling="auto")          # the model's own embeddings (sentence-transformers)
    vectors = model.encode(["a great movie", "terrible acting"])

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
from ..files import progress_bar
from ..params import EmbedParams
from .plan import make_plan
from .runtime import OnnxModel
from .stages import staged
from .windows import WindowEmbedder


class Embedder:
    """An export ready to embed lists of texts.

    pooling: "cls" (the default, as the paper), "mean", or "auto" (the model's own, from sentence-transformers'
    modules.json when the export records one, else cls). normalize: L2-normalise (auto adds the model's own).
    Every setting given to the constructor is the default of `encode`, which can override it per call.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "auto", threads: int | None = None,
                 pooling: str = "cls", normalize: bool = False, max_length: int | None = None,
                 batch_tokens: int | None = None, dtype: str = "float32", prompt: str | None = None,
                 prompt_name: str | None = None, truncate_dim: int | None = None):
        self.model = OnnxModel(model_dir, task="feature-extraction", device=device, threads=threads)
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
        return self._plans[params]

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_tokens: int | None = None,
               pooling: str | None = None, normalize: bool | None = None, max_length: int | None = None,
               dtype: str | None = None, prompt: str | None = None, prompt_name: str | None = None,
               truncate_dim: int | None = None, progress: bool = False, ranges=None) -> np.ndarray:
        """Vectors of `texts` (and `pairs`, for question-context or sentence pairs), one row per text, in order.

        dtype: float32, float16, or quantised as sentence-transformers' quantize_embeddings: int8/uint8 (with
        `ranges`, shape (2, dim), or else the minimum and maximum of this call's vectors, as sentence-transformers
        does), binary/ubinary (signs packed 8 to a byte)."""
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


def _text_list(values, name: str) -> list:
    """`values` as a list; one string or a non-sequence is refused (a string would be taken as its characters)."""
    if isinstance(values, str):
        raise InputError(f"encode takes a list of {name}, not one string (wrap it: [text])")
    if values is None or isinstance(values, (bytes, dict)) or not hasattr(values, "__iter__"):
        raise InputError(f"encode takes a list of {name}, got {type(values).__name__}")
    return list(values)
