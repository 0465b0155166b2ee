"""Official SQuAD v2 scoring semantics, classification accuracy, and error sets.

Follows the official `evaluate-v2.0.py`: normalisation (lower-case, drop punctuation, drop the articles
a/an/the, collapse whitespace); gold answers are those whose normalised text is non-empty, else [""];
EM and F1 take the max over gold answers; F1 is token overlap with a Counter intersection and, when either
side has no tokens, F1 = (both empty); no-answer probabilities above `na_prob_thresh` turn a prediction
into "no answer"; best_exact/best_f1 sweep that threshold. Questions without a prediction are left out
of the totals (as the official script does) and counted in `missing`; `lookalike.jobs.evaluate` refuses them
unless told.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core.heads import label_index
from ..data import CorpusSpec, Record
from ..data.opener import read_document
from ..errors import InputError
from ..files import unique_keys

log = logging.getLogger(__name__)

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold, pred = get_tokens(a_gold), get_tokens(a_pred)
    if not gold or not pred:
        return float(gold == pred)
    common = collections.Counter(gold) & collections.Counter(pred)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def raw_scores(records: Iterable[Record], preds: dict[str, str]) -> tuple[dict, dict, dict, list[str]]:
    """Per-question EM and F1 (max over gold), has-answer flags, and the ids with no prediction."""
    exact, f1, has_ans, missing = {}, {}, {}, []
    for r in records:
        has_ans[r.id] = bool(r.answers)
        gold = [a for a in r.answers if normalize_answer(a)] or [""]
        if r.id not in preds:
            missing.append(r.id)
            continue
        p = preds[r.id]
        exact[r.id] = max(compute_exact(a, p) for a in gold)
        f1[r.id] = max(compute_f1(a, p) for a in gold)
    return exact, f1, has_ans, missing


def apply_no_ans_threshold(scores: dict, na_probs: dict, has_ans: dict, thresh: float) -> dict:
    return {q: float(not has_ans[q]) if na_probs[q] > thresh else s for q, s in scores.items()}


def _eval_dict(exact: dict, f1: dict, qids=None) -> dict:
    qids = list(exact) if qids is None else qids
    total = len(qids)
    if not total:
        return {"exact": 0.0, "f1": 0.0, "total": 0}
    return {"exact": 100.0 * sum(exact[q] for q in qids) / total, "f1": 100.0 * sum(f1[q] for q in qids) / total,
            "total": total}


def _best_thresh(preds: dict, scores: dict, na_probs: dict, has_ans: dict) -> tuple[float, float]:
    num_no_ans = sum(1 for q in has_ans if not has_ans[q])
    cur = best = num_no_ans
    best_thresh = 0.0
    for q in sorted(na_probs, key=lambda k: na_probs[k]):
        if q not in scores:
            continue
        if has_ans[q]:
            diff = scores[q]
        else:
            diff = -1 if preds[q] else 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[q]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_eval(records: Iterable[Record], preds: dict[str, str], na_probs: dict[str, float] | None = None,
                  na_prob_thresh: float = 1.0) -> tuple[dict, dict, dict]:
    """(metrics with the official names, per-id exact, per-id f1) after the no-answer threshold."""
    records = list(records)
    given_probs = na_probs is not None
    na_probs = dict(na_probs) if given_probs else {q: 0.0 for q in preds}
    exact_raw, f1_raw, has_ans, missing = raw_scores(records, preds)
    for q in exact_raw:
        na_probs.setdefault(q, 0.0)
    exact = apply_no_ans_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1 = apply_no_ans_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)
    out = _eval_dict(exact, f1)
    has = [q for q in exact if has_ans[q]]
    no = [q for q in exact if not has_ans[q]]
    if has:
        out.update({f"HasAns_{k}": v for k, v in _eval_dict(exact, f1, has).items()})
    if no:
        out.update({f"NoAns_{k}": v for k, v in _eval_dict(exact, f1, no).items()})
    if given_probs and exact_raw:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(preds, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(preds, f1_raw, na_probs, has_ans)
    if missing:
        out["missing"] = len(missing)
    return out, exact, f1


def _label_key(v):
    """A label as compared without the model's label names: an integer id, or a name (case-insensitive)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
        return int(v)
    if isinstance(v, str):
        return v.strip().lower()
    raise InputError(f"label {v!r} is neither an id nor a name", field="label")


def _predicted_label(p, labels: dict | None, rid: str):
    if isinstance(p, dict):
        if "label_id" not in p or isinstance(p["label_id"], bool) or not isinstance(p["label_id"], int):
            raise InputError("prediction has no integer 'label_id'", record=f"record {rid}", field="label_id")
        return p["label_id"] if labels else _label_key(p["label_id"])
    if labels:
        return label_index(p, labels, f"record {rid}", None)
    try:
        return _label_key(p)
    except InputError as exc:
        raise InputError(f"prediction {p!r} is neither a label id nor a name", record=f"record {rid}") from exc


def _labels_of(preds: dict) -> dict[int, str] | None:
    """The model's {label id: name} as lookalike's predictions record them ({id: {label, label_id}}), else None."""
    out = {}
    for p in preds.values():
        if not (isinstance(p, dict) and isinstance(p.get("label_id"), int) and isinstance(p.get("label"), str)):
            return None
        out.setdefault(p["label_id"], p["label"])
    return out or None


def cls_eval(records: Iterable[Record], preds: dict, labels: dict[int, str] | None = None) -> tuple[dict, dict]:
    """(accuracy and confusion, {id: 1 if correct else 0}). Without the model's `labels`, those its predictions
    record are used, so data labelled by name ("positive") scores against predicted ids."""
    labels = labels or _labels_of(preds)
    correct, confusion = {}, collections.Counter()
    missing = 0
    for r in records:
        if r.label is None:
            raise InputError("record has no label", record=f"record {r.id}", field="label")
        if r.id not in preds:
            missing += 1
            continue
        p = preds[r.id]
        pid = _predicted_label(p, labels, r.id)
        gid = label_index(r.label, labels, f"record {r.id}", None) if labels else _label_key(r.label)
        correct[r.id] = int(pid == gid)
        confusion[(gid, pid)] += 1
    n = len(correct)
    gold, pred = collections.Counter(), collections.Counter()
    for (g, p), c in confusion.items():
        gold[str(g)] += c
        pred[str(p)] += c
    out = {"accuracy": sum(correct.values()) / n if n else 0.0, "total": n,
           "confusion": {f"gold={g},pred={p}": c for (g, p), c in sorted(confusion.items(), key=lambda kv: str(kv[0]))},
           "class_counts": {"gold": dict(sorted(gold.items())), "predicted": dict(sorted(pred.items()))}}
    if missing:
        out["missing"] = missing
    return out, correct


def error_set(exact: dict, f1: dict | None = None, f1_below: float | None = None) -> list[str]:
    """Ids the model got wrong: exact match 0 (the paper), or F1 below a threshold if given."""
    if f1_below is not None:
        return sorted(q for q, s in (f1 or {}).items() if s < f1_below)
    return sorted(q for q, s in exact.items() if not s)


def ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


COLLAPSED_SHARE = 0.95  # a classifier predicting one class for this share of the records has collapsed


@dataclass
class ErrorSet:
    """The ids a model got wrong, and the ids it was scored on (None when unknown: an external id list)."""

    ids: set[str]
    universe: frozenset[str] | None
    source: str
    dataset_fingerprint: str | None = None
    task: str | None = None  # the task scored (lookalike's errors.json says it; None for an external id list)
    class_counts: dict | None = None  # classification: {"gold": {label: n}, "predicted": {label: n}}

    @property
    def degenerate(self) -> str | None:
        """Why comparing these errors says little, or None: an evaluation set of one class, or a classifier that
        predicts one class for ≥ 95% of the records (collapsed): its errors are then "every record of the other
        classes", whatever it learned."""
        counts = self.class_counts or {}
        gold, pred = counts.get("gold") or {}, counts.get("predicted") or {}
        if len(gold) == 1:
            (label, n), = gold.items()
            return f"the evaluation set has one class (gold label {label} for all {n} records)"
        total = sum(pred.values())
        if total:
            label, n = max(pred.items(), key=lambda kv: kv[1])
            if n / total >= COLLAPSED_SHARE:
                return f"{Path(self.source).parent.name or self.source} predicts {label} for {n / total:.0%} of the records (collapsed)"
        return None


def _id_list(value, path: Path, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError("expected a list of id strings", path=path, field=field)
    return value


def _error_file(obj: dict, p: Path) -> ErrorSet:
    """An errors.json checked whole: its error ids a list of strings inside its own universe, the universe's ids
    matching the digest written with them."""
    errors = _id_list(obj.get("error_ids"), p, "error_ids")
    universe = obj.get("universe")
    task = obj.get("task") if isinstance(obj.get("task"), str) else None
    if universe is None:
        return ErrorSet(set(errors), None, str(p), obj.get("dataset_fingerprint"), task)
    if not isinstance(universe, dict):
        raise InputError("expected an object with the scored ids", path=p, field="universe")
    ids = _id_list(universe.get("ids"), p, "universe.ids")
    if "sha256" in universe and universe["sha256"] != ids_digest(sorted(ids)):
        raise InputError("the scored ids do not match the digest written with them (edited after scoring?); "
                         "score the predictions again", path=p, field="universe.ids")
    outside = sorted(set(errors) - set(ids))
    if outside:
        raise InputError(f"{len(outside)} error ids are not among the {len(ids)} ids the file says were scored (e.g. "
                         f"{outside[:3]}); the file is inconsistent: score the predictions again", path=p,
                         field="error_ids")
    counts = obj.get("class_counts")
    if counts is not None and not (isinstance(counts, dict) and all(
            isinstance(counts.get(k, {}), dict) and all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in counts.get(k, {}).values()) for k in ("gold", "predicted"))):
        raise InputError("expected {gold: {label: count}, predicted: {label: count}}", path=p, field="class_counts")
    return ErrorSet(set(errors), frozenset(ids), str(p), obj.get("dataset_fingerprint"), task, counts)


def load_errors(path: str | Path, dataset: CorpusSpec | str | Path | None = None) -> ErrorSet:
    """An error set: lookalike's errors.json (or a predict output folder holding one), a plain JSON list of ids,
    or a text file with one id per line (other tools' outputs, e.g. the paper authors' published lists).

    dataset: the corpus the ids were scored on; every id must belong to it, and it becomes the universe of an
    external list (without it, the universe of an external list is unknown and unchecked).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "errors.json"
    if not os.path.lexists(p):
        raise InputError("no such error-set file", path=p)
    try:  # a BOM is not part of the first id
        text = read_document(p, what="error-set file", corpus=False).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"undecodable bytes (not UTF-8) at byte {exc.start}", path=p) from exc
    try:
        obj = json.loads(text, object_pairs_hook=unique_keys(p))
    except json.JSONDecodeError as exc:
        obj = None
        if p.suffix == ".json":
            raise InputError("invalid JSON (expected errors.json or a JSON list of ids)", path=p) from exc
    except RecursionError as exc:
        raise InputError("JSON nested too deeply (expected errors.json or a JSON list of ids)", path=p) from exc
    if isinstance(obj, dict):
        if obj.get("kind") != "lookalike.errors":
            raise InputError("not a lookalike error-set file (made by `lookalike predict` or `evaluate -o`)", path=p)
        es = _error_file(obj, p)
    elif isinstance(obj, list):
        if not all(isinstance(x, (str, int)) for x in obj):
            raise InputError("a JSON list of error ids must hold strings", path=p)
        es = ErrorSet({str(x) for x in obj}, None, str(p))
    else:
        es = ErrorSet({line.strip() for line in text.splitlines() if line.strip()}, None, str(p))
    if dataset is not None:
        dataset = CorpusSpec.coerce(dataset)
        ids = frozenset(r.id for r in dataset.records())
        outside = sorted(es.ids - ids)
        if outside:
            raise InputError(f"{len(outside)} error ids are not in {dataset.path} (e.g. {outside[:3]}); the errors "
                             "were scored on another dataset", path=p)
        if es.universe is not None and es.universe != ids:
            raise InputError(f"scored on {len(es.universe)} ids, but {dataset.path} has {len(ids)}: another "
                             "question set", path=p)
        es.universe = ids
        es.dataset_fingerprint = es.dataset_fingerprint or dataset.fingerprint()
    return es
