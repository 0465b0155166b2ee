"""The engine's tokenizer without transformers: an export's `tokenizer.json` run by the Rust `tokenizers` library,
with the few settings the engine reads from `tokenizer_config.json`.

Embedding needs token ids, not the whole transformers stack, whose import (it pulls in torch and scikit-learn)
was most of `embed`'s fixed cost. The ids are the ones transformers' fast tokenizer gives for the same folder
(the backend is the same serialised tokenizer; tests compare them), and `tokens.tokenizer_fingerprint` is the
same for both, so token caches made either way match.
"""

from __future__ import annotations

import json
from pathlib import Path

# transformers' order of model inputs (BertTokenizerFast and kin)
_INPUT_ORDER = ("input_ids", "token_type_ids", "attention_mask")


class FastTokenizer:
    """The attributes of a transformers fast tokenizer that the engine reads, from the files alone."""

    is_fast = True

    def __init__(self, folder: str | Path, graph_inputs: list[str]):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        self.padding_side = cfg.get("padding_side") or "right"
        self.truncation_side = cfg.get("truncation_side") or "right"
        # the model's inputs: the tokenizer's own list when it states one, else what the exported graph takes
        self.model_input_names = list(cfg.get("model_input_names") or
                                      [n for n in _INPUT_ORDER if n in graph_inputs or n != "token_type_ids"])
        self.pad_token_id = self._token_id(cfg.get("pad_token"))
        self.cls_token_id = self._token_id(cfg.get("cls_token"))
        self.sep_token_id = self._token_id(cfg.get("sep_token"))

    def _token_id(self, token) -> int | None:
        if isinstance(token, dict):  # {"content": "[PAD]", ...}
            token = token.get("content")
        return self.backend_tokenizer.token_to_id(token) if isinstance(token, str) else None

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)


def load_engine_tokenizer(folder: str | Path, graph_inputs: list[str]):
    """A FastTokenizer when the folder has a tokenizer.json, else None (the caller falls back to transformers)."""
    return FastTokenizer(folder, graph_inputs) if (Path(folder) / "tokenizer.json").is_file() else None
