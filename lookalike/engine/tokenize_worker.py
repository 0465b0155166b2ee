"""A tokenizer worker process of `batching.TokenizerPool`: reads length-prefixed pickles on stdin, answers on stdout.

The first message is (the backend tokenizer's JSON, whether the model takes token type ids); every later one is a
list of inputs (texts or (text, pair) tuples), answered with ("ok", Encoded) or ("error", message).
"""

from __future__ import annotations

import pickle
import sys

from .batching import _encode


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    return pickle.loads(stream.read(int.from_bytes(head, "little")))


def _write(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=5)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def main() -> int:
    from tokenizers import Tokenizer

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = _read(stdin)
    if setup is None:
        return 0
    backend, with_types = Tokenizer.from_str(setup[0]), setup[1]
    _write(stdout, ("ok", None))
    while (inputs := _read(stdin)) is not None:
        try:
            _write(stdout, ("ok", _encode(backend, inputs, with_types)))
        except Exception as exc:  # reported to the engine, which raises it there
            _write(stdout, ("error", f"{type(exc).__name__}: {exc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
