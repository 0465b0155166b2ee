"""Every cached artifact is verified like an input: an export-cache entry is used only when its record names the
source it is keyed by and every file verifies against its manifest; one lookalike made that is damaged is rebuilt
(under a lock), one it did not make is refused in one line and left alone; an int8 choice is used only when its
checksum and content hold; a cache folder other users can write to is refused."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from lookalike.engine import sources
from lookalike.errors import LookalikeError, ModelError


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LOOKALIKE_CACHE", str(root))
    return root


def _vectors(folder, texts=("a first text", "another one entirely")):
    from lookalike import Embedder

    return Embedder(str(folder)).encode(list(texts))


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_entry_is_made_once_and_reused_only_while_it_verifies(own_cache, tiny_models, monkeypatch, caplog):
    first = sources.export_for(tiny_models["bert2"])
    want = _vectors(first)
    record = json.loads((first / sources.CACHE_RECORD).read_text())
    assert record["source"] == str(tiny_models["bert2"]) and record["key"] == first.name

    calls = []
    import lookalike.exporters as exporters

    real = exporters.export
    monkeypatch.setattr(exporters, "export", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert sources.export_for(tiny_models["bert2"]) == first and not calls  # verified, reused

    # damaged (truncated model file): ours, so rebuilt with a warning, and the vectors are the model's again
    model = first / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        again = sources.export_for(tiny_models["bert2"])
    assert again == first and len(calls) == 1 and "damaged" in caplog.text
    np.testing.assert_allclose(_vectors(again), want, atol=1e-6)


def test_a_planted_or_swapped_entry_is_refused_and_left_alone(own_cache, tiny_models, tiny_exports):
    key = sources.source_key(str(tiny_models["bert2"]))
    entry = own_cache / "exports" / key
    entry.parent.mkdir(parents=True, mode=0o700)
    # planted: another model's export (32 wide) under this model's key, with no record
    shutil.copytree(tiny_exports["bert4"], entry)
    before = _tree(entry)
    with pytest.raises(ModelError, match="did not make"):
        sources.export_for(tiny_models["bert2"])
    assert _tree(entry) == before

    # swapped: a record of another source's entry
    (entry / sources.CACHE_RECORD).write_text(json.dumps({"kind": sources.CACHE_KIND, "key": "0" * 16,
                                                          "source": "/elsewhere", "model_sha256": "x"}))
    before = _tree(entry)
    with pytest.raises(ModelError, match="did not make"):
        sources.export_for(tiny_models["bert2"])
    assert _tree(entry) == before

    # a record forged to this key but over another model's files: the model hash gives it away (rebuilt: the
    # record says it is lookalike's entry for this key, and its content is not that)
    good = json.loads(json.dumps({"kind": sources.CACHE_KIND, "key": key, "source": str(tiny_models["bert2"]),
                                  "model_sha256": "0" * 64}))
    (entry / sources.CACHE_RECORD).write_text(json.dumps(good))
    assert sources.entry_problem(entry, str(tiny_models["bert2"]), key) is not None


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_cache_folder_others_can_write_is_refused(own_cache, tiny_models, mode):
    own_cache.mkdir(mode=0o700)
    os.chmod(own_cache, mode)
    with pytest.raises(LookalikeError, match="writable by"):
        sources.export_for(tiny_models["bert2"])
    os.chmod(own_cache, 0o700)
    (own_cache / "exports").mkdir(mode=0o700)
    os.chmod(own_cache / "exports", mode)
    with pytest.raises(LookalikeError, match="writable by"):
        sources.export_for(tiny_models["bert2"])
    assert not any((own_cache / "exports").iterdir())


def test_an_int8_choice_is_believed_only_when_it_verifies(own_cache, tiny_models, tmp_path, caplog):
    """A truncated entry no longer breaks every later int8 export of that shape, and an edited one is measured
    again instead of printed as measured."""
    from lookalike.exporters import export

    export(str(tiny_models["bert2"]), tmp_path / "q1", quantize="int8")
    [choice] = (own_cache / "int8-choices").glob("[!.]*.json")
    stored = json.loads(choice.read_text())
    assert stored["kind"] == "lookalike.int8-choice"

    from lookalike import outputs
    from lookalike.errors import ExportError

    # a choice lookalike wrote in an older form (its own file, per the ledger): measured again, then replaced
    outputs.write_json(choice, stored["report"])
    with caplog.at_level(logging.WARNING):
        m = export(str(tiny_models["bert2"]), tmp_path / "q2", quantize="int8")
    assert "measuring the int8 schemes again" in caplog.text
    assert json.loads(choice.read_text())["kind"] == "lookalike.int8-choice"

    # truncated or edited behind lookalike's back: neither believed nor replaced, one line naming it
    for damage in ("truncate", "edit"):
        good = choice.read_text()
        if damage == "truncate":
            choice.write_text(good[:40])
        else:
            edited = json.loads(good)
            edited["report"]["speedup"] = 9.99
            choice.write_text(json.dumps(edited))
        before = choice.read_bytes()
        with pytest.raises(ExportError, match="neither believes nor replaces"):
            export(str(tiny_models["bert2"]), tmp_path / f"q-{damage}", quantize="int8")
        assert choice.read_bytes() == before
        choice.write_text(good)
    assert m["variant"]["description"]


def test_an_entry_made_by_an_earlier_lookalike_is_verified_and_adopted(own_cache, tiny_models, monkeypatch):
    """Entries made before they carried a record are not refused wholesale (an upgrade would lock every user out
    of their cache): one whose files verify and whose manifest names this source is adopted, without exporting."""
    entry = sources.export_for(tiny_models["bert2"])
    (entry / sources.CACHE_RECORD).unlink()  # as an earlier lookalike left it
    import lookalike.exporters as exporters

    monkeypatch.setattr(exporters, "export", lambda *a, **k: pytest.fail("exported again"))
    assert sources.export_for(tiny_models["bert2"]) == entry
    assert json.loads((entry / sources.CACHE_RECORD).read_text())["adopted"] is True
