"""The export manifest as one read-only value, checked whole when loaded."""

from __future__ import annotations


def test_an_export_manifest_is_one_read_only_value_checked_whole(tmp_path):
    """ExportManifest: loaded and checked whole (a wrong-typed optional field is one line naming it), typed
    accessors, read-only, and still the JSON object it was read from (written and pickled as such)."""
    import json
    import pickle

    import pytest

    from lookalike.core.manifest import MANIFEST, ExportManifest, load_manifest
    from lookalike.errors import ModelError

    m = {"format_version": 1, "task": "feature-extraction", "file": "model.onnx", "sha256": "ab" * 32,
         "hidden_size": 8, "variant": {"description": "fp32"}, "source": {"model": "tiny"}, "outputs": ["cls"],
         "files": {}}
    (tmp_path / "model.onnx").write_bytes(b"not checked here")
    ExportManifest(m).write(tmp_path)
    assert (tmp_path / MANIFEST).read_text() == json.dumps(m, indent=2) + "\n"
    got = load_manifest(tmp_path)
    assert isinstance(got, ExportManifest) and got == m and got.sha256 == "ab" * 32 and got.hidden_size == 8
    assert (got.task, got.source_model, got.variant_description, got.outputs) == ("feature-extraction", "tiny",
                                                                                   "fp32", ["cls"])
    assert pickle.loads(pickle.dumps(got)) == got and json.loads(json.dumps(got)) == m
    with pytest.raises(TypeError, match="read-only"):
        got["sha256"] = "forged"
    (tmp_path / MANIFEST).write_text(json.dumps({**m, "vocab_size": "30522"}))
    with pytest.raises(ModelError, match="field 'vocab_size' is str, not int"):
        load_manifest(tmp_path)


def test_the_spinning_switch_reaches_the_session(monkeypatch):
    import pytest

    from lookalike.core import session
    from lookalike.errors import ModelError

    for value, want in (("0", "0"), ("1", "1")):
        monkeypatch.setenv(session.SPIN_ENV, value)
        opts, _, _ = session.session_setup("cpu")
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == want
    monkeypatch.setenv(session.SPIN_ENV, "yes")
    with pytest.raises(ModelError, match="LOOKALIKE_ORT_SPINNING='yes': give 1"):
        session.session_setup("cpu")
    monkeypatch.delenv(session.SPIN_ENV)
    assert session.spinning() is session.SPIN_DEFAULT
