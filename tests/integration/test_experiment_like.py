"""An experiment model written `like:` another inherits its fine-tuning recipe but trains its own base."""

from __future__ import annotations


def test_like_inherits_the_recipe_but_trains_its_own_base(tmp_path):
    """`like:` copies a fine-tuning recipe; the model it names trains its own base, unless the recipe names one."""
    from lookalike.experiment import parse_config

    recipe = {"finetune": {"data": "squad_v2:train", "epochs": 2, "every": 2}}
    cfg = {"models": [{"name": "large", "base": "bert-large-uncased", "qa": recipe},
                      {"name": "base", "like": "large", "base": "bert-base-uncased"},
                      {"name": "pinned", "like": "large", "base": "x/y",
                       "qa": {"finetune": {**recipe["finetune"], "model": "my/checkpoint"}}}]}
    models = parse_config(cfg, tmp_path).models
    by = {m.name: m for m in models}
    assert by["large"].qa.model == "bert-large-uncased" and by["base"].qa.model == "bert-base-uncased"
    assert by["base"].qa.params.epochs == 2 and by["base"].qa.corpus.every == 2
    assert by["pinned"].qa.model == "my/checkpoint"
