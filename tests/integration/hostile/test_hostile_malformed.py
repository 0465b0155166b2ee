"""Hostile suite, class 5: malformed input. A file of the right kind with a wrong field (a string where a list
belongs, a duplicated key, NaN, a NUL in an id, an out-of-range size) is one error line naming the file, the record
and the field, from the real command; never a traceback from inside a library, never a number computed from it."""

from __future__ import annotations

import json
import shutil

import pytest
from hostile_tools import one_line, run_cli


def _squad(tmp_path, qa_patch=None, para_patch=None, name="bad.json"):
    qa = {"id": "q1", "question": "Who wrote it?", "answers": [{"text": "Ann", "answer_start": 0}],
          "is_impossible": False}
    para = {"context": "Ann wrote it.", "qas": [qa]}
    qa.update(qa_patch or {})
    para.update(para_patch or {})
    p = tmp_path / name
    p.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [para]}]}))
    (tmp_path / "pred.json").write_text(json.dumps({"q1": "Ann"}))
    return p


@pytest.mark.parametrize("qa_patch, para_patch, field", [
    ({"answers": ["Ann"]}, None, "answers[0]"),
    ({"answers": "Ann"}, None, "answers"),
    ({"answers": [{"text": "Ann", "answer_start": "0"}]}, None, "answers[0].answer_start"),
    ({"answers": [{"text": 7, "answer_start": 0}]}, None, "answers[0].text"),
    ({"is_impossible": "yes"}, None, "is_impossible"),
    ({"question": None}, None, "question"),
    (None, {"qas": "q1"}, "qas"),
    (None, {"context": None}, "context"),
], ids=["answer-string", "answers-string", "start-string", "text-number", "impossible-yes", "question-null",
        "qas-string", "context-null"])
def test_squad_fields_of_the_wrong_type_are_one_line(tmp_path, qa_patch, para_patch, field):
    data = _squad(tmp_path, qa_patch, para_patch)
    line = one_line(run_cli("evaluate", data, tmp_path / "pred.json", "-o", tmp_path / "ev"), "bad.json", field)
    assert "data[0].paragraphs[0]" in line or "question q1" in line  # the record
    assert not (tmp_path / "ev").exists()


def test_an_id_with_a_nul_or_of_a_megabyte_is_refused_at_the_reader(tiny_exports, tmp_path):
    for name, rid, needle in (("nul.jsonl", "a\0b", "NUL"), ("long.jsonl", "x" * 1_000_000, "longer than")):
        (tmp_path / name).write_text(json.dumps({"id": "ok", "text": "fine"}) + "\n"
                                     + json.dumps({"id": rid, "text": "also fine"}) + "\n")
        line = one_line(run_cli("embed", tiny_exports["bert2"], tmp_path / name, tmp_path / f"o-{name}"),
                        name, needle, "record 1")
        assert "'id'" in line or "field id" in line
        assert not (tmp_path / f"o-{name}").exists()


def test_a_key_given_twice_is_refused_in_every_json_lookalike_reads(tmp_path):
    data = _squad(tmp_path)
    (tmp_path / "pred.json").write_text('{"q1": "Ann", "q1": "Bob"}')  # json keeps the last one, silently
    one_line(run_cli("evaluate", data, tmp_path / "pred.json"), "pred.json", "appears twice", "q1")
    (tmp_path / "pred.json").write_text('{"q1": "Ann"}')
    (tmp_path / "na.json").write_text('{"q1": 0.1, "q1": 0.9}')
    one_line(run_cli("evaluate", data, tmp_path / "pred.json", "--na-prob-file", tmp_path / "na.json"),
             "na.json", "appears twice")
    # an experiment config's mapping keys are unique too (YAML keeps the last one)
    (tmp_path / "exp.yaml").write_text("title: t\ntitle: u\nmodels: [{name: a, base: minilm}]\n")
    one_line(run_cli("run", tmp_path / "exp.yaml", "-o", tmp_path / "r"), "exp.yaml", "title")


def test_a_key_given_twice_in_a_corpus_record(tiny_exports, tmp_path):
    (tmp_path / "twice.jsonl").write_text('{"id": "a", "text": "one", "text": "two"}\n')
    one_line(run_cli("embed", tiny_exports["bert2"], tmp_path / "twice.jsonl", tmp_path / "o"), "twice.jsonl",
             "appears twice", "text")
    assert not (tmp_path / "o").exists()


def test_a_nan_no_answer_probability_is_refused(tmp_path):
    data = _squad(tmp_path)
    (tmp_path / "na.json").write_text('{"q1": NaN}')  # Python's json reads the NaN literal
    one_line(run_cli("evaluate", data, tmp_path / "pred.json", "--na-prob-file", tmp_path / "na.json"),
             "na.json", "question q1", "finite")
    (tmp_path / "na.json").write_text('{"q1": "0.3"}')
    one_line(run_cli("evaluate", data, tmp_path / "pred.json", "--na-prob-file", tmp_path / "na.json"),
             "na.json", "question q1")


def test_classification_labels_given_by_name_score_against_predicted_ids(tmp_path):
    rows = [("a", "positive"), ("b", "negative"), ("c", "positive"), ("d", "negative")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": i, "text": "t", "label": lab}) + "\n"
                                                 for i, lab in rows))
    names = {0: "negative", 1: "positive"}
    pred = {"a": 1, "b": 0, "c": 0, "d": 0}  # c is wrong
    (tmp_path / "pred.json").write_text(json.dumps({k: {"label": names[v], "label_id": v} for k, v in pred.items()}))
    r = run_cli("evaluate", tmp_path / "data.jsonl", tmp_path / "pred.json", "--task", "cls", "-o", tmp_path / "ev")
    assert r.rc == 0, r.err[-2000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(0.75)
    # a label that is neither an id nor one of the predictions' names is one line, not a wrong accuracy
    (tmp_path / "data.jsonl").write_text(json.dumps({"id": "a", "text": "t", "label": "neutral"}) + "\n")
    (tmp_path / "pred.json").write_text(json.dumps({"a": {"label": "positive", "label_id": 1}}))
    one_line(run_cli("evaluate", tmp_path / "data.jsonl", tmp_path / "pred.json", "--task", "cls"), "neutral")


def _edited_export(src, dst, **fields):
    shutil.copytree(src, dst)
    m = json.loads((dst / "lookalike.json").read_text())
    m.update(fields)
    (dst / "lookalike.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("fields, needle", [
    ({"max_position_embeddings": 10 ** 9}, "max_position_embeddings"),
    ({"max_position_embeddings": "512"}, "max_position_embeddings"),
    ({"max_position_embeddings": True}, "max_position_embeddings"),
    ({"vocab_size": 100}, "tokenizer has"),
    ({"hidden_size": "32"}, "hidden_size"),
    ({"files": ["tokenizer.json"]}, "files"),
], ids=["positions-1e9", "positions-string", "positions-bool", "vocab-smaller", "hidden-string", "files-list"])
def test_a_manifest_field_out_of_range_is_one_line(tiny_exports, corpus_file, tmp_path, fields, needle):
    model = _edited_export(tiny_exports["bert2"], tmp_path / "m", **fields)
    one_line(run_cli("embed", model, corpus_file, tmp_path / "o"), needle)
    assert not (tmp_path / "o").exists()


def test_a_step_parameter_of_the_wrong_type_is_refused_not_taken_as_true(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        "title: t\nmodels: [{name: a, base: minilm}, {name: b, base: minilm}]\n"
        "datasets: {representation: corpus.txt}\nsteps: {embed: {normalize: 'yes'}}\n")
    (tmp_path / "corpus.txt").write_text("one\ntwo\n")
    one_line(run_cli("run", tmp_path / "exp.yaml", "-o", tmp_path / "r"), "exp.yaml", "normalize")
    (tmp_path / "exp.yaml").write_text(
        "title: t\nmodels: [{name: a, base: minilm}, {name: b, base: minilm}]\n"
        "datasets: {representation: corpus.txt}\nsteps: {knn: {k: '10'}}\n")
    one_line(run_cli("run", tmp_path / "exp.yaml", "-o", tmp_path / "r"), "exp.yaml", "k")


def test_embedder_refuses_what_is_not_a_list_of_texts(tiny_exports):
    from lookalike.engine import Embedder
    from lookalike.errors import InputError

    e = Embedder(tiny_exports["bert2"])
    assert e.encode("one text").ndim == 1  # one text alone is one vector, as in sentence-transformers
    for texts, pairs, needle in ((None, None, "got NoneType"), (["one text"], "its pair", "not one string"),
                                 (["a", "b"], "ab", "not one string"), (["a"], {"a": 1}, "got dict"),
                                 (b"bytes", None, "got bytes"), (["a", None], None, "")):
        with pytest.raises(InputError, match=needle):
            e.encode(texts, pairs)
    assert e.encode(["a", "b"], ("c", "d")).shape[0] == 2  # a tuple of pairs is a list


def test_a_relative_cache_folder_is_refused(tiny_exports, corpus_file, tmp_path):
    one_line(run_cli("embed", tiny_exports["bert2"], corpus_file, tmp_path / "o",
                     env={"LOOKALIKE_CACHE": "cache-here"}, cwd=tmp_path), "LOOKALIKE_CACHE", "relative")
    assert not (tmp_path / "cache-here").exists()


# ---- round four's minor findings: each one line naming the file, record and field, exit 2 --------------------
@pytest.mark.parametrize("base", [5, [1, 2], {"a": 1}, None, ""])
def test_an_experiment_s_base_is_typed_like_every_other_key(tmp_path, base):
    import yaml

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "m", "base": base}],
                                   "datasets": {"representation": str(tmp_path / "c.txt")}}))
    (tmp_path / "c.txt").write_text("one\ntwo\n")
    r = run_cli("run", cfg, "-o", tmp_path / "out")
    one_line(r, "field 'base'", "a path or hub id")
    assert not (tmp_path / "out" / "report").exists()


@pytest.mark.parametrize("damage", ["attr-array", "int-ids"])
def test_a_store_whose_shard_holds_the_wrong_types_is_one_line(small_store, tmp_path, damage):
    import h5py
    import numpy as np

    from lookalike.core.shards import read_manifest
    from lookalike.core.store import StoreFormat
    from lookalike.files import sha256_file

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    shard = store / "part-00000.h5"
    with h5py.File(shard, "r+") as f:
        if damage == "attr-array":
            f.attrs["pooling"] = np.array(["cls", "mean"], dtype=h5py.string_dtype())
        else:
            n = f["id"].shape[0]
            del f["id"]
            f.create_dataset("id", data=np.arange(n))
    m = read_manifest(store, StoreFormat)  # the manifest made to agree with the edit: the shard itself is wrong
    m["shards"][0]["sha256"] = sha256_file(shard)
    (store / "manifest.json").write_text(json.dumps(m))
    r = run_cli("knn", store, tmp_path / "n.h5", "--k", "2")
    one_line(r, "part-00000.h5", "an array" if damage == "attr-array" else "not strings")


def test_deeply_nested_error_lists_are_one_line(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    r = run_cli("agree", "--errors", f"a={p}", "--errors", f"b={p}")
    one_line(r, "deep.json", "nested too deeply")


def test_an_unknown_key_in_an_export_manifest_is_refused(tiny_exports, tmp_path, corpus_file):
    export = tmp_path / "export"
    shutil.copytree(tiny_exports["bert2"], export)
    m = json.loads((export / "lookalike.json").read_text())
    m["pooling_override"] = "mean"
    (export / "lookalike.json").write_text(json.dumps(m))
    r = run_cli("embed", export, corpus_file, tmp_path / "store")
    one_line(r, "lookalike.json", "unknown key 'pooling_override'")


def test_a_hub_id_shadowed_by_a_folder_here_gets_a_note(tiny_models, tmp_path):
    shutil.copytree(tiny_models["bert2"], tmp_path / "bert-base-uncased")
    r = run_cli("export", "bert-base-uncased", tmp_path / "out", cwd=tmp_path)
    assert r.rc == 0, r.err
    notes = [line for line in r.err.splitlines() if "not the hub model" in line]
    assert len(notes) == 1 and str(tmp_path / "bert-base-uncased") in notes[0], r.err
    r = run_cli("export", "./bert-base-uncased", tmp_path / "out2", cwd=tmp_path)  # said plainly: no note
    assert r.rc == 0 and "not the hub model" not in r.err, r.err


def test_a_panic_in_the_tokenizer_library_is_one_line_naming_the_record(tiny_exports, monkeypatch):
    """tokenizers raises a Rust panic (PyO3's PanicException, a BaseException) on a regex over Onig's retry limit:
    the record it fails on is named, and the CLI prints one line whatever raised it."""
    from lookalike.data import Record
    from lookalike.engine import batching
    from lookalike.engine.runtime import OnnxModel
    from lookalike.errors import InputError

    from support import panicking_encode

    monkeypatch.setattr(batching, "_encode", panicking_encode(
        batching, "catastrophic", "called `Result::unwrap()` on an `Err` value: Error(RetryLimitInMatch)\nmore"))
    tok = OnnxModel(tiny_exports["bert2"], device="cpu").encoder
    recs = [Record("fine", "a fine text"), Record("bad-7", "a catastrophic text"), Record("ok", "more")]
    with pytest.raises(InputError, match="record bad-7.*RetryLimitInMatch"):
        batching.tokenize(tok, recs, 32)
