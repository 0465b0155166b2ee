"""The attack's pieces by hand: example selection and the summary, the refused untrained-MLM alias, the exact top-k
subword combinations."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.attack import select_examples, summarize
from lookalike.errors import ModelError


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

