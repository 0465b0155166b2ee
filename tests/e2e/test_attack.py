"""BERT-Attack end to end, offline: a tiny random classifier attacked with a tiny random MLM on real IMDB reviews,
resumed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import transformers

from lookalike.attack import NLTK_DATA, run_attack
from lookalike.outputs import OutputError, OwnedFolder
from lookalike.params import AttackParams


def _predict(export_dir, texts):
    """Independent re-prediction: plain tokenizer + InferenceSession."""
    tok = transformers.AutoTokenizer.from_pretrained(export_dir)
    sess = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for t in texts:
        enc = tok([t], truncation=True, max_length=128, return_tensors="np")
        logits = sess.run(["logits"], {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0]
        out.append(int(logits.argmax()))
    return out


@pytest.mark.slow
def test_attack_flips_predictions_respects_constraints_and_resumes(tiny_models, tiny_exports, shared_data, tmp_path):
    data = tmp_path / "short.tsv"
    texts = [l.rsplit("\t", 1)[0] for l in (shared_data / "imdb" / "imdb_1k.tsv").read_text().splitlines()
             if len(l.split()) < 90][:8]
    # gold = the random classifier's own prediction (so it is attacked), except one it gets wrong (skipped)
    labels = _predict(tiny_exports["cls"], texts)
    labels[0] = 1 - labels[0]
    data.write_text("".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    params = AttackParams(mlm=str(tiny_models["mlm"]), max_candidates=16, top_words=3, n=8, seed=1, max_length=128,
                          similarity="engine")
    kw = dict(similarity_model=tiny_exports["bert2"])
    s = run_attack(tiny_exports["cls"], data, tmp_path / "att", params, **kw)
    rows = [json.loads(l) for l in (tmp_path / "att" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 == s["n"] and s["setting_top_words"] == 3 and s["setting_max_candidates"] == 16
    assert s["succeeded"] + s["failed"] + s["skipped"] == 8 and s["skipped"] == 1
    stop = set((NLTK_DATA / "corpora" / "stopwords" / "english").read_text().split())
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    assert succeeded, "a random classifier should fall to at least one attack"
    repred = _predict(tiny_exports["cls"], [r["perturbed_text"] for r in succeeded])
    orig = _predict(tiny_exports["cls"], [r["original_text"] for r in rows])
    for r, p in zip(succeeded, repred):
        assert p != r["label"]  # the success really flips the target
        assert r["perturbed_text"] != r["original_text"]
        assert 0 < r["words_perturbed"] <= 3 and r["perturbed_words_pct"] <= 40.0
        from textattack.shared import AttackedText

        words = AttackedText(r["original_text"]).words
        assert all(words[i].lower() not in stop for i in r["modified_indices"])  # stopwords never modified
        new_words = AttackedText(r["perturbed_text"]).words
        changed = [i for i, (a, b) in enumerate(zip(words, new_words)) if a != b]
        assert set(changed) <= set(r["modified_indices"])
    for r, p in zip(rows, orig):
        assert (r["status"] == "skipped") == (p != r["label"])  # skipped = misclassified before the attack
    # summary arithmetic by hand
    n = 8
    acc = (n - s["skipped"]) / n
    assert s["original_accuracy"] == pytest.approx(acc)
    assert s["accuracy_after_attack"] == pytest.approx(s["failed"] / n)
    if acc:
        assert s["percent_change"] == pytest.approx(100 * (acc - s["failed"] / n) / acc)
    # crash mid-write: two complete lines and a torn third; the re-run finishes without loss or duplicates.
    # A crash leaves the ledger at the last line that was fsynced (it is recorded after each one), so the
    # ledger says two lines and the file holds a torn third past them.
    import hashlib


    text = (tmp_path / "att" / "results.jsonl").read_text().splitlines(keepends=True)
    kept = "".join(text[:2]).encode()
    OwnedFolder(tmp_path / "att")._update(lambda files: files.__setitem__(
        "results.jsonl", {"sha256": hashlib.sha256(kept).hexdigest(), "size": len(kept), "append": True}))
    (tmp_path / "att" / "results.jsonl").write_bytes(kept + text[2][:40].encode())
    s2 = run_attack(tiny_exports["cls"], data, tmp_path / "att", params, **kw)
    rows2 = [json.loads(l) for l in (tmp_path / "att" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows2[:2]] == [r["id"] for r in rows[:2]]
    assert sorted(r["id"] for r in rows2) == sorted(r["id"] for r in rows)
    assert s2["n"] == 8 and s2["succeeded"] == s["succeeded"]
    with pytest.raises(OutputError, match="other settings"):
        run_attack(tiny_exports["cls"], data, tmp_path / "att", dataclasses.replace(params, max_candidates=4), **kw)
