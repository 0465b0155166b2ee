"""Long-document chunking: the window starts cover every token."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lookalike.engine.chunks import Chunker


@given(n=st.integers(0, 3000), size=st.integers(1, 300), data=st.data())
def test_chunk_starts_cover_every_token(n, size, data):
    stride = data.draw(st.integers(0, size - 1))
    c = Chunker.__new__(Chunker)
    c.size, c.step = size, size - stride
    starts = c.starts(n)
    assert starts[0] == 0 and starts[-1] + size >= n  # the last window reaches the end
    assert all(b - a == size - stride for a, b in zip(starts, starts[1:]))  # neighbours share `stride` tokens
    assert len(starts) == 1 or starts[-2] + size < n  # no window past the one that reaches the end
