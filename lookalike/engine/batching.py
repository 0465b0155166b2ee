"""Tokenize a window of records, then cut it into token-budget batches of similar length.

Sorting by length inside a bounded window keeps padding small while memory stays flat;
every batch carries the window positions of its rows so results go back in the caller's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data import Record


@dataclass
class Encoded:
    """Token ids of a window, unpadded, in window order."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    n_tokens: np.ndarray  # tokens used (<= max_length)
    truncated: np.ndarray  # bool: the full input was longer than max_length


@dataclass
class Batch:
    rows: np.ndarray  # positions within the window
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    device_feeds: dict | None = None  # the inputs already on the model's device (OnnxModel.upload)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def tokenize(tokenizer, records: Sequence[Record], max_length: int, chunk: int = 512) -> Encoded:
    """Batched fast tokenization; long inputs are truncated and flagged (never dropped)."""
    ids: list[list[int]] = []
    tts: list[list[int]] | None = [] if "token_type_ids" in tokenizer.model_input_names else None
    n_tokens = np.empty(len(records), dtype=np.int32)
    truncated = np.zeros(len(records), dtype=bool)
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        texts = [r.text for r in part]
        pairs = [r.text_pair for r in part] if any(r.text_pair is not None for r in part) else None
        if pairs is not None:
            pairs = [p or "" for p in pairs]
        full = tokenizer(texts, pairs, truncation=False, add_special_tokens=True, return_attention_mask=False,
                         return_token_type_ids=tts is not None, verbose=False)
        too_long = [i for i, x in enumerate(full["input_ids"]) if len(x) > max_length]
        if too_long:
            cut = tokenizer([texts[i] for i in too_long], [pairs[i] for i in too_long] if pairs else None,
                            truncation=True, max_length=max_length, return_attention_mask=False,
                            return_token_type_ids=tts is not None)
            for k, i in enumerate(too_long):
                full["input_ids"][i] = cut["input_ids"][k]
                if tts is not None:
                    full["token_type_ids"][i] = cut["token_type_ids"][k]
                truncated[start + i] = True
        ids.extend(full["input_ids"])
        if tts is not None:
            tts.extend(full["token_type_ids"])
    for i, x in enumerate(ids):
        n_tokens[i] = len(x)
    return Encoded(ids, tts, n_tokens, truncated)


def token_budget_batches(enc: Encoded, batch_tokens: int, pad_id: int, max_batch: int = 512) -> list[Batch]:
    """Longest first; each batch's padded size (rows × longest row) stays within `batch_tokens`."""
    order = np.argsort(-enc.n_tokens, kind="stable")
    batches: list[Batch] = []
    i = 0
    n = len(order)
    while i < n:
        longest = int(enc.n_tokens[order[i]])
        size = max(1, min(max_batch, batch_tokens // max(longest, 1)))
        rows = order[i:i + size]
        batches.append(_pad(enc, rows, longest, pad_id))
        i += size
    return batches


def _pad(enc: Encoded, rows: np.ndarray, width: int, pad_id: int) -> Batch:
    b = len(rows)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    mask = np.zeros((b, width), dtype=np.int64)
    tt = np.zeros((b, width), dtype=np.int64) if enc.token_type_ids is not None else None
    for j, r in enumerate(rows):
        x = enc.input_ids[r]
        input_ids[j, :len(x)] = x
        mask[j, :len(x)] = 1
        if tt is not None:
            tt[j, :len(x)] = enc.token_type_ids[r]
    return Batch(rows, input_ids, mask, tt)
