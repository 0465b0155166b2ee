"""SQuAD v2 scoring against hand-computed cases and against the official evaluation script's rules; classification
scoring."""

from __future__ import annotations

import collections
import json
import re
import string

import numpy as np
import pytest

from lookalike.analysis.scoring import compute_f1, load_errors, normalize_answer, squad_v2_eval
from lookalike.data import Record
from lookalike.errors import InputError
from lookalike.jobs import evaluate


# ---- the official evaluate-v2.0.py rules, transcribed independently as the test's reference ----
def _off_normalize(s):
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _off_tokens(s):
    return _off_normalize(s).split() if s else []


def _off_f1(a_gold, a_pred):
    g, p = _off_tokens(a_gold), _off_tokens(a_pred)
    common = collections.Counter(g) & collections.Counter(p)
    num_same = sum(common.values())
    if len(g) == 0 or len(p) == 0:
        return int(g == p)
    if num_same == 0:
        return 0
    precision, recall = num_same / len(p), num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


def _official(dataset_qas, preds, na_probs):
    qid_to_has_ans = {q["id"]: bool(q["answers"]) for q in dataset_qas}
    exact_raw, f1_raw = {}, {}
    for qa in dataset_qas:
        gold = [a for a in qa["answers"] if _off_normalize(a)] or [""]
        if qa["id"] not in preds:
            continue
        p = preds[qa["id"]]
        exact_raw[qa["id"]] = max(int(_off_normalize(a) == _off_normalize(p)) for a in gold)
        f1_raw[qa["id"]] = max(_off_f1(a, p) for a in gold)

    def thresh(scores):
        return {q: float(not qid_to_has_ans[q]) if na_probs[q] > 1.0 else s for q, s in scores.items()}

    ex, f1 = thresh(exact_raw), thresh(f1_raw)

    def mk(qids):
        return {"exact": 100.0 * sum(ex[k] for k in qids) / len(qids), "f1": 100.0 * sum(f1[k] for k in qids) / len(qids),
                "total": len(qids)}

    out = mk(list(ex))
    out.update({f"HasAns_{k}": v for k, v in mk([q for q in ex if qid_to_has_ans[q]]).items()})
    out.update({f"NoAns_{k}": v for k, v in mk([q for q in ex if not qid_to_has_ans[q]]).items()})

    def best(scores):
        cur = best_score = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
        best_t = 0.0
        for q in sorted(na_probs, key=lambda k: na_probs[k]):
            if q not in scores:
                continue
            diff = scores[q] if qid_to_has_ans[q] else (-1 if preds[q] else 0)
            cur += diff
            if cur > best_score:
                best_score, best_t = cur, na_probs[q]
        return 100.0 * best_score / len(scores), best_t

    out["best_exact"], out["best_exact_thresh"] = best(exact_raw)
    out["best_f1"], out["best_f1_thresh"] = best(f1_raw)
    return out


def test_hand_computed_cases():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    recs = [Record("q1", "?", "c", answers=("the Eiffel Tower",)),
            Record("q2", "?", "c", answers=("Paris", "city of Paris")),
            Record("q3", "?", "c", answers=()),  # unanswerable
            Record("q4", "?", "c", answers=()),
            Record("q5", "?", "c", answers=("1998",))]
    preds = {"q1": "Eiffel tower.", "q2": "the city", "q3": "", "q4": "something", "q5": "in 1999"}
    m, exact, f1 = squad_v2_eval(recs, preds)
    assert exact == {"q1": 1, "q2": 0, "q3": 1, "q4": 0, "q5": 0}
    # q2: best gold "city of Paris" -> tokens [city, of, paris] vs [city]: P=1, R=1/3, F1=0.5
    assert f1["q2"] == pytest.approx(0.5)
    assert f1["q4"] == 0.0 and f1["q3"] == 1.0
    # q5: [1998] vs [in, 1999]: no overlap
    assert f1["q5"] == 0.0
    assert compute_f1("x b c", "b c d") == pytest.approx(2 / 3)
    assert compute_f1("a b c", "b c d") == pytest.approx(0.8)  # "a" is an article: gold is [b, c]
    assert m["exact"] == pytest.approx(40.0) and m["total"] == 5
    assert m["HasAns_total"] == 3 and m["NoAns_total"] == 2 and m["NoAns_exact"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(100 * (1 + 0.5 + 1 + 0 + 0) / 5)


def test_matches_official_rules_on_squad_sample(shared_data, tmp_path):
    folder = shared_data / "squad2_dev500"
    truth = json.loads((folder / "ground_truth.json").read_text())
    queries = json.loads((folder / "queries.json").read_text())["queries"]
    rng = np.random.default_rng(0)
    preds, na = {}, {}
    for i, q in enumerate(queries):
        ans = truth[q["id"]]["answers"]
        r = rng.random()
        ans = [a for a in ans if a]
        if ans and r < 0.4:
            preds[q["id"]] = "The " + ans[-1] + "."
        elif ans and r < 0.6:
            preds[q["id"]] = " ".join(ans[0].split()[:1] + ["extra", "words"])
        elif r < 0.8:
            preds[q["id"]] = ""
        else:
            preds[q["id"]] = q["context"][:20]
        na[q["id"]] = float(rng.normal())
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "na.json").write_text(json.dumps(na))
    ours = evaluate(folder, tmp_path / "p.json", na_probs=tmp_path / "na.json", out=tmp_path / "ev")
    # the sample writes unanswerable gold as [""]; the official SQuAD JSON has an empty list there
    ref = _official([{"id": q["id"], "answers": [a for a in truth[q["id"]]["answers"] if a]} for q in queries],
                    preds, na)
    assert set(ref) <= set(ours)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-9), k
    errors = load_errors(tmp_path / "ev").ids
    scores = json.loads((tmp_path / "ev" / "errors.json").read_text())["scores"]
    assert errors == {q for q, s in scores.items() if s["exact"] == 0} and 0 < len(errors) < 500


def test_cls_scoring_and_bad_labels(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": l}) for t, l in [("a", 1), ("b", 0), ("c", 1)]) + "\n")
    preds = {"0": {"label_id": 1}, "1": {"label_id": 1}, "2": {"label_id": 1}}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    m = evaluate(data, tmp_path / "p.json", task="cls", out=tmp_path / "o")
    assert m["accuracy"] == pytest.approx(2 / 3) and m["confusion"] == {"gold=0,pred=1": 1, "gold=1,pred=1": 2}
    assert load_errors(tmp_path / "o").ids == {"1"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "label": "maybe"}) + "\n")
    with pytest.raises(InputError, match="label 'maybe' is not one of the model's labels"):
        evaluate(bad, {"0": {"label_id": 0}}, task="cls", labels={0: "negative", 1: "positive"})
