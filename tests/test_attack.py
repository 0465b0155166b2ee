"""BERT-Attack offline: a tiny random classifier attacked with a tiny random MLM on real IMDB reviews."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import transformers

from lookalike.attack import NLTK_DATA, run_attack, select_examples, summarize
from lookalike.errors import InputError, ModelError
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


def test_attack_bad_inputs(tiny_models, tiny_exports, shared_data, tmp_path):
    with pytest.raises(ModelError, match="needs 'text-classification'"):
        run_attack(tiny_exports["bert2"], shared_data / "imdb" / "imdb_1k.tsv", tmp_path / "a", AttackParams(mlm="x"))
    bad = tmp_path / "bad.tsv"
    bad.write_text("a fine film\t7\n")
    with pytest.raises(InputError, match="label 7 is not one of the model's labels"):
        run_attack(tiny_exports["cls"], bad, tmp_path / "b", AttackParams(mlm=str(tiny_models["mlm"])))


def test_select_and_summarize_by_hand():
    from lookalike.data import Record

    recs = [Record(str(i), "t", label=0) for i in range(10)]
    a = select_examples(recs, 4, seed=3)
    assert [r.id for r in a] == [r.id for r in select_examples(recs, 4, seed=3)] and len(a) == 4
    assert [r.id for r in a] == sorted((r.id for r in a), key=int)
    rows = [{"status": "succeeded", "perturbed_words_pct": 10.0, "queries": 20},
            {"status": "failed", "perturbed_words_pct": 0.0, "queries": 40},
            {"status": "skipped", "perturbed_words_pct": 0.0, "queries": 0},
            {"status": "succeeded", "perturbed_words_pct": 30.0, "queries": 60}]
    s = summarize(rows, {"mlm": "m", "max_candidates": 48, "top_words": 3, "max_percent": 0.4, "similarity": "none",
                         "similarity_threshold": 0.2, "n": 4, "seed": 0})
    assert s["original_accuracy"] == 0.75 and s["accuracy_after_attack"] == 0.25
    assert s["absolute_change"] == pytest.approx(0.5) and s["percent_change"] == pytest.approx(100 * 0.5 / 0.75)
    assert s["attack_success_rate"] == pytest.approx(2 / 3) and s["avg_perturbed_words_pct"] == 20.0
    assert s["avg_queries"] == pytest.approx(40.0)


def test_the_untrained_minilm_mlm_alias_is_refused_with_the_way_forward():
    """`minilm-mlm` (an untrained head: noise substitutions) is replaced by `lookalike fit-mlm` (a fitted head
    with measured fill-mask accuracy, tested in test_report.py)."""
    from lookalike.models import resolve_model

    with pytest.raises(ModelError, match="lookalike fit-mlm"):
        resolve_model("minilm-mlm")


def test_subword_combinations_are_the_exact_top_k_by_perplexity():
    """The beam over sub-word positions returns exactly the K best of the full K^L product, best first."""
    import itertools

    from lookalike.attack import top_subword_combinations

    rng = np.random.default_rng(0)
    for L, K, k in ((2, 6, 5), (3, 5, 12), (4, 4, 7)):
        logits = rng.normal(size=(L, 50)) * 3
        logprobs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        cands = np.stack([rng.choice(50, size=K, replace=False) for _ in range(L)])
        brute = sorted(((float(np.exp(-np.mean([logprobs[i, t] for i, t in enumerate(c)]))), tuple(int(t) for t in c))
                        for c in itertools.product(*cands)), key=lambda x: (x[0], x[1]))[:k]
        got = top_subword_combinations(logprobs, cands, k)
        assert [c for c, _ in got] == [c for _, c in brute]
        np.testing.assert_allclose([p for _, p in got], [p for p, _ in brute], rtol=1e-9)


def test_a_group_writable_install_still_finds_the_stopwords(tmp_path):
    """NLTK refuses a data root other accounts can write to (a umask-002 install, an unpacked archive) and says the
    resource is missing; lookalike then reads a private copy of its stopwords from its cache."""
    import shutil
    import subprocess
    import sys

    shared = tmp_path / "install" / "nltk_data"
    shutil.copytree(NLTK_DATA, shared)
    for p in (shared, *shared.rglob("*")):
        p.chmod(0o775 if p.is_dir() else 0o664)
    code = ("import sys, lookalike.attack as a; from pathlib import Path; a.NLTK_DATA = Path(sys.argv[1]); "
            "a._prepare_textattack(); from nltk.corpus import stopwords; print(len(stopwords.words('english')), "
            "a.nltk_root())")
    env = {**__import__("os").environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(shared)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n, root = r.stdout.split()
    assert int(n) == len((NLTK_DATA / "corpora" / "stopwords" / "english").read_text().split())
    assert root.startswith(str(tmp_path / "cache")) and (shared / "corpora").stat().st_mode & 0o020  # install kept
