"""Stratified samples: the same share of every group, drawn with a seed (a deep-kNN bank that covers every
article of a training set instead of the first few)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError


def stratified_positions(sizes: Sequence[int], n: int, seed: int) -> list[np.ndarray]:
    """Per group of `sizes[g]` items, the sorted positions drawn: round(size * n / total) of each, at least one and
    at most all, with one generator seeded `seed` drawing group by group (the same seed gives the same sample)."""
    total = int(sum(sizes))
    if total <= 0 or n < 1:
        raise InputError(f"a stratified sample needs items and n >= 1 (have {total} items, n={n})")
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        take = min(size, max(1, round(size * n / total))) if size else 0
        out.append(np.sort(rng.choice(size, size=take, replace=False)) if take else np.zeros(0, dtype=np.int64))
    return out


def stratified_squad(squad: dict, n: int, seed: int) -> tuple[list[dict], dict]:
    """About `n` question + context pairs from a SQuAD-format dict, the same share of every article's questions:
    (rows {"id", "text": question, "pair": context, "article"}, what was drawn)."""
    articles = squad.get("data") if isinstance(squad, dict) else None
    if not isinstance(articles, list) or not articles:
        raise InputError("not a SQuAD file (no top-level 'data' list of articles)", field="data")
    qas = [[(q, p["context"]) for p in art["paragraphs"] for q in p["qas"]] for art in articles]
    picks = stratified_positions([len(a) for a in qas], n, seed)
    rows = [{"id": a[i][0]["id"], "text": a[i][0]["question"], "pair": a[i][1], "article": art.get("title", str(g))}
            for g, (art, a, pick) in enumerate(zip(articles, qas, picks)) for i in pick]
    per_article = [len(p) for p in picks]
    return rows, {"articles": len(articles), "questions_in_train": sum(len(a) for a in qas),
                  "bank_questions": len(rows), "seed": seed, "per_article_min": min(per_article),
                  "per_article_max": max(per_article)}
