"""Extractive question answering (SQuAD v2): options, the kernel, scoring with the official semantics, and
fine-tuning features.

The kernel slides windows over long contexts (max length, doc stride) with offset mapping, decodes n-best
spans up to a maximum answer length, and answers "" when null score - best span score >
null_score_diff_threshold (as Hugging Face's run_qa post-processing). A run also writes null_odds.json (that
difference per question: the official script's no-answer probabilities).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.scoring import error_set, squad_v2_eval
from ..core.heads import QUESTION_ANSWERING as EXPORT
from ..engine.batching import Encoded, run_batched
from ..engine.runtime import OnnxModel
from ..errors import InputError, ModelError
from ..files import load_json
from .base import Options, Predictions, Scored, TaskSpec

MAX_LENGTH = 384  # the default window (SQuAD practice)


@dataclass(frozen=True)
class QaOptions(Options):
    max_length: int = MAX_LENGTH
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    batch_tokens: int | None = None


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
        starts, ends = run_batched(model, features, ["start_logits", "end_logits"], batch_tokens,
                                   per_token={"start_logits", "end_logits"})
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


def qa_features(tokenizer, records, max_length: int, doc_stride: int) -> list[dict]:
    """Training features with start/end token positions (CLS for unanswerable or out-of-window answers)."""
    enc = tokenizer([r.text.lstrip() for r in records], [r.text_pair for r in records], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    feats = []
    for f, ex in enumerate(enc["overflow_to_sample_mapping"]):
        r = records[ex]
        ids = enc["input_ids"][f]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq = enc.sequence_ids(f)
        offsets = enc["offset_mapping"][f]
        start_pos = end_pos = cls
        if r.answers and r.answer_starts and r.answer_starts[0] >= 0:
            s_char = r.answer_starts[0]
            e_char = s_char + len(r.answers[0])
            ts = seq.index(1)
            te = len(seq) - 1 - seq[::-1].index(1)
            if offsets[ts][0] <= s_char and offsets[te][1] >= e_char:
                while ts < len(offsets) and seq[ts] == 1 and offsets[ts][0] <= s_char:
                    ts += 1
                while seq[te] == 1 and offsets[te][1] >= e_char:
                    te -= 1
                start_pos, end_pos = ts - 1, te + 1
        row = {k: enc[k][f] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        row.update(start_positions=start_pos, end_positions=end_pos)
        feats.append(row)
    return feats


def _check_na_probs(probs, path) -> dict[str, float]:
    if not isinstance(probs, dict):
        raise InputError(f"expected a JSON object {{id: no-answer probability}}, got {type(probs).__name__}", path=path)
    for q, v in probs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"no-answer probability {v!r} is not a finite number", path=path,
                             record=f"question {q}")
    return {q: float(v) for q, v in probs.items()}


class QaTask(TaskSpec):
    name = "qa"
    export = EXPORT
    instance = "QUESTION_ANSWERING"
    role = "qa"
    label = "QA"
    eval_dataset = "qa_eval"
    files = ("predictions.json", "null_odds.json")
    finetune_defaults = {"learning_rate": 3e-5, "epochs": 2.0, "max_length": MAX_LENGTH, "doc_stride": 128,
                         "batch_size": 12}

    def options(self, params) -> QaOptions:
        max_length = params.max_length or MAX_LENGTH
        if params.doc_stride >= max_length:
            raise InputError(f"doc_stride {params.doc_stride} must be smaller than max_length {max_length}",
                             field="doc_stride")
        return QaOptions(max_length, params.doc_stride, params.n_best, params.max_answer_length,
                         params.null_score_diff_threshold, params.batch_tokens)

    def predict(self, model: OnnxModel, records: list, options: QaOptions, tokens=None) -> Predictions:
        preds, odds = predict_qa(model, records, **options.as_dict())
        return Predictions(preds, {"null_odds.json": odds})

    def side_files(self, folder: Path) -> dict:
        return {"na_probs": Path(folder) / "null_odds.json"}

    def check_predictions(self, preds: dict, where) -> None:
        for q, v in preds.items():
            if not isinstance(v, str):
                raise InputError(f"prediction is {type(v).__name__}, expected the answer text", path=where,
                                 record=f"question {q}")

    def score(self, records, preds, *, where, known, extra, na_probs=None, na_prob_thresh=1.0, f1_below=None,
              labels=None) -> Scored:
        probs = na_probs
        if isinstance(na_probs, (str, Path)):
            probs = _check_na_probs(load_json(na_probs, "no-answer probability file"), na_probs)
        elif na_probs is not None:
            probs = _check_na_probs(na_probs, None)
        if probs is not None:
            uncovered = [q for q in preds if q in known and q not in probs]
            if uncovered:
                raise InputError(f"the no-answer probability file covers {len(preds) - len(extra) - len(uncovered)} "
                                 f"of the {len(preds) - len(extra)} predicted questions (missing e.g. "
                                 f"{uncovered[:3]}); best_exact/best_f1 need all of them: give the file `predict` "
                                 "wrote with these predictions", path=na_probs if isinstance(na_probs, (str, Path))
                                 else None)
        metrics, exact, f1 = squad_v2_eval(records, preds, probs, na_prob_thresh)
        per_id = {q: {"exact": exact[q], "f1": round(f1[q], 6)} for q in exact}
        criterion = f"f1 < {f1_below}" if f1_below is not None else "exact == 0"
        return Scored(metrics, error_set(exact, f1, f1_below), per_id, criterion)

    def training_rows(self, tok, records, max_length, params, corpus, selection):
        if params.answerable_only:  # tiny training sets: learn spans first, not the majority "no answer"
            records = [r for r in records if r.answers]
        for r in records:
            if r.text_pair is None:
                raise InputError("QA record has no context", path=corpus.path, record=f"question {r.id}",
                                 field="context")
            if r.answers and (not r.answer_starts or r.answer_starts[0] < 0):
                raise InputError("answer text not found in the context (no answer_start)", path=corpus.path,
                                 record=f"question {r.id}", field="answers")
        stride = params.doc_stride or self.finetune_defaults["doc_stride"]
        return records, qa_features(tok, records, max_length, stride), {}, None


QUESTION_ANSWERING = QaTask()
