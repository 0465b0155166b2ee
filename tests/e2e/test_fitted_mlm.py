"""The attack's offline masked-LM: a fitted head beats the untrained one on held-out words."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_fitted_mlm_head_beats_the_untrained_one_on_held_out_words(minilm_dir, tmp_path):
    from lookalike.data.stdlib import stdlib_corpora
    from lookalike.demo import write_jsonl
    from lookalike.mlm import describe, fit_mlm_head

    docs, _ = stdlib_corpora(160, 0)
    write_jsonl(docs[:120], tmp_path / "fit.jsonl")
    write_jsonl(docs[120:], tmp_path / "held.jsonl")
    rep = fit_mlm_head(minilm_dir, tmp_path / "fit.jsonl", tmp_path / "mlm", eval_corpus=tmp_path / "held.jsonl",
                       max_length=64, epochs=2)
    acc, base = rep["fill_mask_accuracy"], rep["untrained_head_accuracy"]
    assert rep["eval_positions"] > 100 and 0 <= acc["top1"] <= acc["top10"] <= acc["top48"] <= 1
    assert acc["top48"] > base["top48"] + 0.1  # the fitted head predicts held-out words; the untrained one does not
    import transformers

    mlm = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")  # an ordinary HF folder
    assert mlm.config.vocab_size == 30522 and "fill-mask accuracy" in describe(tmp_path / "mlm")
