"""Typed exceptions. Library code raises these; the CLI turns them into one line and exit code 2."""

from __future__ import annotations

import difflib


class LookalikeError(Exception):
    """Base class of every error lookalike raises on purpose."""


class InputError(LookalikeError, ValueError):
    """Bad input data: names the file, the record (line or row) and the field where known."""

    def __init__(self, message: str, *, path=None, record=None, field=None):
        self.path, self.record, self.field = path, record, field
        where = [str(x) for x in (path, record) if x is not None]
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where + [message]))


class ModelError(LookalikeError):
    """A model folder that is not what the command needs (not an export, wrong task, no tokenizer...)."""


class StoreError(LookalikeError):
    """An embedding store that cannot be read, resumed or aligned."""


class ExportError(LookalikeError):
    """An export that could not be made or failed its parity check."""


def unknown_key_message(key: str, valid) -> str:
    """"unknown key 'x' (did you mean 'y'? valid: ...)": the one wording for every config and parameter check."""
    near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown key {key!r} ({hint}valid: {', '.join(sorted(valid))})"
