"""Cut very long texts before tokenizing, so memory is bounded by the model's length, not the text's, while the
ids (and the truncation flag) are exactly those of tokenizing the whole text.

A text is cut only at white space: tokenizers split there before they tokenize (BERT's WordPiece, byte-level BPE
and SentencePiece's Metaspace alike), so the tokens of text[:p], with text[p] a space, are the first tokens of
the whole text (for left truncation, text[p:] gives its last ones). A single text is cut to a prefix of at least
max_length + 1 tokens: truncation then keeps the same tokens and still reports the row truncated. For a pair,
"longest first" truncation keeps a number of tokens of each side that depends on the shorter side's length and
on which side is longer, so each side's whole length is counted in bounded pieces first, and the cuts keep that
order. Texts under `LONG_FACTOR * max_length` characters are never touched (the fast path for every ordinary
corpus). A text with no white space past the cut point is tokenized whole.
"""

from __future__ import annotations

import re

LONG_FACTOR = 32  # characters per token of max_length before a text counts as long
_SPACE = re.compile(r"\s")
_PIECE = 1 << 18  # characters per piece when a whole text's tokens are counted


def _counter(backend):
    """A copy of the backend without truncation or padding, to count tokens."""
    from tokenizers import Tokenizer

    made = getattr(backend, "_lookalike_counter", None)
    if made is None:
        made = Tokenizer.from_str(backend.to_str())
        made.no_truncation()
        made.no_padding()
        try:
            backend._lookalike_counter = made
        except AttributeError:  # a Rust object that takes no attributes: no cache
            pass
    return made


def _count(counter, text: str) -> int:
    return len(counter.encode(text, add_special_tokens=False).ids)


def _boundary(text: str, at: int, side: str) -> int | None:
    """A cut position: for "right", the first white space at or after `at` (keep text[:p]); for "left", the last
    one before len - at (keep text[p:]). None when there is none."""
    if side == "right":
        m = _SPACE.search(text, at)
        return m.start() if m else None
    end = len(text) - at
    for p in range(end, -1, -1):  # the scan is bounded by one word's length in practice
        if p < len(text) and text[p].isspace():
            return p + 1
        if end - p > (1 << 20):
            return None
    return None


def _piece(text: str, chars: int, side: str) -> str:
    if chars >= len(text):
        return text
    p = _boundary(text, chars, side)
    if p is None:
        return text
    return text[:p] if side == "right" else text[p:]


def _cut(counter, text: str, need: int, side: str, start: int) -> tuple[str, int]:
    """The shortest tried piece of `text` with at least `need` tokens (or the whole text), and its token count."""
    chars = start
    while True:
        piece = _piece(text, chars, side)
        n = _count(counter, piece)
        if n >= need or piece is text or len(piece) == len(text):
            return piece, n
        chars *= 2


def count_tokens(counter, text: str) -> int:
    """The whole text's token count, tokenized in pieces cut at white space (bounded memory)."""
    total, at = 0, 0
    while at < len(text):
        if len(text) - at <= _PIECE:
            return total + _count(counter, text[at:])
        m = _SPACE.search(text, at + _PIECE)
        if m is None:
            return total + _count(counter, text[at:])
        total += _count(counter, text[at:m.start()])
        at = m.start()
    return total


def cut_long(backend, inputs: list) -> list:
    """`inputs` (texts or (text, pair) tuples) with very long texts cut; the backend's ids for the result are its
    ids for the original inputs."""
    trunc = backend.truncation
    if not trunc:
        return inputs
    max_length, side = int(trunc["max_length"]), trunc.get("direction", "right")
    long_chars = LONG_FACTOR * max_length + 1024

    def is_long(x) -> bool:
        return len(x) > long_chars if isinstance(x, str) else (len(x[0]) > long_chars or len(x[1]) > long_chars)

    if not any(is_long(x) for x in inputs):
        return inputs
    counter = _counter(backend)
    start = long_chars // 2
    out = []
    for x in inputs:
        if not is_long(x):
            out.append(x)
        elif isinstance(x, str):
            out.append(_cut(counter, x, max_length + 1, side, start)[0])
        else:
            out.append(_cut_pair(counter, x, max_length + 1, side, start))
    return out


def _cut_pair(counter, pair: tuple[str, str], need: int, side: str, start: int) -> tuple[str, str]:
    a, b = pair
    la, lb = count_tokens(counter, a), count_tokens(counter, b)
    # cut the side that must stay shorter (or equal) first, then the other to keep the order of the whole lengths
    if la > lb:
        b2, nb = _cut(counter, b, need, side, start)
        a2, _ = _cut(counter, a, max(need, nb + 1), side, start)
    elif lb > la:
        a2, na = _cut(counter, a, need, side, start)
        b2, _ = _cut(counter, b, max(need, na + 1), side, start)
    else:  # equal: no swap in longest-first, which needs len(a) <= len(b) after the cut too
        a2, na = _cut(counter, a, need, side, start)
        b2, _ = _cut(counter, b, max(need, na), side, start)  # reachable: b's whole length is a's >= na
    return a2, b2
