"""The one way lookalike loads a Hugging Face config, tokenizer or model: no code from the model runs.

transformers runs Python shipped with a model (`auto_map` in `config.json` or `tokenizer_config.json`) when asked
with `trust_remote_code=True`, and *asks on standard input* when the argument is left out: one "y" from a pipe runs
the folder's code. Every load here passes `trust_remote_code=False`, and a model that declares custom code is
refused before transformers reads it, in one line naming the `auto_map` entry (local folders and hub ids alike:
a hub id's two JSON files are read first, through the same cache transformers uses).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelError

CODE_FILES = ("config.json", "tokenizer_config.json")


def _json_file(model: str, name: str, revision: str | None) -> tuple[Path | None, object]:
    """(path, parsed JSON) of a model's file, (None, None) when it has none or it cannot be fetched."""
    local = Path(model)
    if local.is_dir():
        path = local / name
        if not path.is_file():
            return None, None
    else:
        try:
            from transformers.utils import cached_file

            got = cached_file(model, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                              _raise_exceptions_for_connection_errors=False)
        except Exception:  # offline or no such id: the load itself says so, in its own words
            return None, None
        if got is None:
            return None, None
        path = Path(got)
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return path, None  # not JSON: transformers' load names the file


def custom_code(model: str, revision: str | None = None) -> str | None:
    """"FILE: auto_map.KEY -> VALUE" for the first custom-code entry a model declares, or None."""
    for name in CODE_FILES:
        path, data = _json_file(model, name, revision)
        if not isinstance(data, dict):
            continue
        auto_map = data.get("auto_map")
        if auto_map:
            if isinstance(auto_map, dict):
                key, value = next(iter(auto_map.items()))
                return f"{path}: auto_map.{key} -> {value}"
            return f"{path}: auto_map {str(auto_map)[:80]}"
    return None


def refuse_custom_code(model: str, revision: str | None = None) -> None:
    """ModelError when the model declares code of its own (it would run on load)."""
    entry = custom_code(str(model), revision)
    if entry is not None:
        raise ModelError(f"{model}: the model ships Python code of its own ({entry}); lookalike never runs code from "
                         "a model folder (trust_remote_code is off): use a model whose architecture transformers "
                         "implements, or export it yourself and give lookalike the ONNX folder")


def load(cls, model, **kwargs):
    """`cls.from_pretrained(model, trust_remote_code=False, **kwargs)`, after refusing a model with custom code.

    transformers' own refusal (a remote-code model whose files were not readable beforehand) becomes the same
    one-line ModelError; every other exception passes through for the caller to word."""
    model = str(model)
    refuse_custom_code(model, kwargs.get("revision"))
    try:
        return cls.from_pretrained(model, trust_remote_code=False, **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(f"{model}: the model needs Python code of its own to load; lookalike never runs code "
                             "from a model (trust_remote_code is off)") from exc
        raise


def tokenizer(model, **kwargs):
    """The model's fast tokenizer (AutoTokenizer, use_fast=True), loaded without running any code of the model's."""
    import transformers

    return load(transformers.AutoTokenizer, model, use_fast=True, **kwargs)


def config(model, **kwargs):
    import transformers

    return load(transformers.AutoConfig, model, **kwargs)
