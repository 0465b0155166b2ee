"""The task kernels: what one worker does with a loaded export and a list of records, the same under the local
and the Ray runner.

QA: sliding windows over long contexts (max length, doc stride) with offset mapping; n-best span decoding
with a maximum answer length; no-answer when null score - best span score > null_score_diff_threshold
(as Hugging Face's run_qa post-processing). Classification: argmax labels, probabilities.
"""

from __future__ import annotations

import numpy as np

from ..core.manifest import labels as manifest_labels
from ..errors import InputError, ModelError
from .batching import Encoded, token_budget_batches, tokenize
from .runtime import OnnxModel


def run_batched(model: OnnxModel, enc: Encoded, outputs: list[str], batch_tokens: int) -> list[list[np.ndarray]]:
    """Outputs for every row of `enc` (unpadded per row for sequence outputs), in row order, through the
    engine's token-budget batches."""
    results: list[list] = [[None] * len(enc) for _ in outputs]
    for b in token_budget_batches(enc, batch_tokens, model.pad_id):
        outs = model.run(outputs, b.input_ids, b.attention_mask, b.token_type_ids)
        for o, arr in enumerate(outs):
            for j, r in enumerate(b.rows):
                results[o][r] = arr[j, : enc.n_tokens[r]] if arr.ndim == 2 and arr.shape[1] == b.input_ids.shape[1] \
                    else arr[j]
    return results


def predict_qa(model: OnnxModel, records, *, max_length: int = 384, doc_stride: int = 128, n_best: int = 20,
               max_answer_length: int = 30, null_score_diff_threshold: float = 0.0,
               batch_tokens: int | None = None, chunk: int = 256) -> tuple[dict, dict]:
    """({id: answer text or ""}, {id: null score - best span score}) for extractive QA records."""
    tok = model.tokenizer
    if tok.padding_side != "right":
        raise ModelError("QA decoding expects right padding")
    max_length = model.clamp(max_length)
    batch_tokens = batch_tokens or max(2048, max_length * 2)
    preds: dict[str, str] = {}
    odds: dict[str, float] = {}
    records = list(records)
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        for i, r in enumerate(part):
            if r.text_pair is None:
                raise InputError("QA record has no context (need question + context)", record=f"question {r.id}",
                                 field="context")
        enc = tok([r.text.lstrip() for r in part], [r.text_pair for r in part], truncation="only_second",
                  max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                  return_offsets_mapping=True, padding=False)
        features = Encoded.from_lists(enc["input_ids"], enc.get("token_type_ids"))
        starts, ends = run_batched(model, features, ["start_logits", "end_logits"], batch_tokens)
        by_example: dict[int, list[int]] = {}
        for f, ex in enumerate(enc["overflow_to_sample_mapping"]):
            by_example.setdefault(ex, []).append(f)
        for ex, feats in by_example.items():
            rec = part[ex]
            null = None
            best_score, best_text = -np.inf, ""
            for f in feats:
                s_log, e_log = starts[f], ends[f]
                offsets = enc["offset_mapping"][f]
                seq_ids = enc.sequence_ids(f)
                cls = enc["input_ids"][f].index(tok.cls_token_id) if tok.cls_token_id in enc["input_ids"][f] else 0
                score_null = float(s_log[cls] + e_log[cls])
                null = score_null if null is None or score_null < null else null
                top_s = np.argsort(s_log)[::-1][:n_best]
                top_e = np.argsort(e_log)[::-1][:n_best]
                for si in top_s:
                    if seq_ids[si] != 1:
                        continue
                    for ei in top_e:
                        if seq_ids[ei] != 1 or ei < si or ei - si + 1 > max_answer_length:
                            continue
                        score = float(s_log[si] + e_log[ei])
                        if score > best_score:
                            best_score = score
                            best_text = rec.text_pair[offsets[si][0]:offsets[ei][1]]
            diff = null - best_score if np.isfinite(best_score) else np.inf
            odds[rec.id] = float(diff) if np.isfinite(diff) else 1e9
            preds[rec.id] = "" if diff > null_score_diff_threshold else best_text
    return preds, odds


def predict_cls(model: OnnxModel, records, *, max_length: int = 512, batch_tokens: int | None = None,
                chunk: int = 1024, tokens=None) -> dict:
    """{id: {"label": name, "label_id": i, "probs": [...]}} for classification records.

    tokens: a TokenCache of exactly these records (same order) at this max length, read instead of tokenizing.
    """
    labels = manifest_labels(model.manifest)
    out = {}
    records = list(records)
    batch_tokens = batch_tokens or 2048
    max_length = model.clamp(max_length)
    cached = tokens.windows(0, chunk, 1 << 62, model.vocab_size) if tokens is not None else None
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        if cached is not None:
            _, ids, enc, _ = next(cached)
            if ids != [r.id for r in part]:
                raise ModelError(f"{tokens.path}: token cache rows do not match the records at row {start}")
        else:
            enc = tokenize(model.tokenizer, part, max_length)
        (logits,) = run_batched(model, enc, ["logits"], batch_tokens)
        for r, lg in zip(part, logits):
            lg = np.asarray(lg, dtype=np.float64)
            p = np.exp(lg - lg.max())
            p /= p.sum()
            i = int(p.argmax())
            out[r.id] = {"label": labels.get(i, str(i)), "label_id": i, "probs": [round(float(x), 6) for x in p]}
    return out

