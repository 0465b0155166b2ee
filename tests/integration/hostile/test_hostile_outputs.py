"""Class 1, outputs: no command replaces or deletes a file lookalike did not write (outputs.OwnedFolder)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hostile_tools import one_line, run_cli, snapshot, unchanged

USER = "a user's own notes\n"


def test_agree_does_not_replace_a_users_table_files(small_knn, tmp_path):
    for suffix in (".md", ".csv", ".json"):
        (tmp_path / f"notes{suffix}").write_text(USER)
        before = snapshot(tmp_path)
        r = run_cli("agree", "--knn", f"a={small_knn}", "--knn", f"b={small_knn}", "--k", "2", "--reps", "0",
                    "-o", tmp_path / "notes")
        one_line(r, f"notes{suffix}", "not written by lookalike")
        unchanged(before, tmp_path)
        # refused before anything was written: no other table file appeared
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("notes") and p.name != f"notes{suffix}"]
        (tmp_path / f"notes{suffix}").unlink()


def test_agree_into_a_store_does_not_touch_its_manifest(small_store, small_knn, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    before = snapshot(store)
    r = run_cli("agree", "--knn", f"a={small_knn}", "--knn", f"b={small_knn}", "--k", "2", "--reps", "0",
                "-o", store / "manifest")
    one_line(r, "manifest.json", "not written by lookalike")
    unchanged(before, store)
    assert run_cli("knn", store, tmp_path / "ok.h5", "--k", "2").rc == 0  # the store still opens


def test_agree_replaces_its_own_table_but_not_an_edited_one(small_knn, tmp_path):
    args = ("agree", "--knn", f"a={small_knn}", "--knn", f"b={small_knn}", "--k", "2", "--reps", "0",
            "-o", tmp_path / "t")
    assert run_cli(*args).rc == 0
    assert run_cli(*args).rc == 0  # its own files: replaced
    (tmp_path / "t.md").write_text((tmp_path / "t.md").read_text() + "my edit\n")
    before = snapshot(tmp_path)
    one_line(run_cli(*args), "t.md", "or was changed since")
    unchanged(before, tmp_path)


def test_evaluate_and_predict_keep_a_users_files(tiny_exports, corpus_file, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "predictions.json").write_text('{"mine": 1}\n')
    before = snapshot(out)
    one_line(run_cli("predict", tiny_exports["cls"], corpus_file, out, "--task", "cls"), "predictions.json")
    unchanged(before, out)
    assert not (out / "predict_info.json").exists()

    good = tmp_path / "good"
    assert run_cli("predict", tiny_exports["cls"], corpus_file, good, "--task", "cls").rc == 0
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text(USER)
    before = snapshot(ev)
    one_line(run_cli("evaluate", corpus_file, good / "predictions.json", "--task", "cls", "-o", ev), "metrics.json")
    unchanged(before, ev)
    assert not (ev / "errors.json").exists()


def test_bench_keeps_a_users_bench_md(tiny_exports, tmp_path):
    (tmp_path / "bench.md").write_text(USER)
    before = snapshot(tmp_path)
    r = run_cli("bench", tiny_exports["bert2"], "--batch-sizes", "1", "--seq-lengths", "8", "--repeat", "1",
                "-o", tmp_path)
    one_line(r, "bench.md")
    unchanged(before, tmp_path)
    assert not (tmp_path / "bench.json").exists()


def test_finetune_refuses_a_users_config_before_training(tiny_models, corpus_file, tmp_path):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}\n')
    before = snapshot(out)
    r = run_cli("finetune", tiny_models["cls"], corpus_file, out, "--task", "cls", "--max-steps", "1",
                "--max-length", "16")
    one_line(r, "config.json")
    unchanged(before, out)
    assert not (out / "checkpoints").exists() and not (out / "model.safetensors").exists()


def test_export_overwrite_removes_only_its_own_files(tiny_models, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", tiny_models["bert2"], out, "--task", "feature-extraction").rc == 0
    (out / "my-notes.txt").write_text(USER)
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00" * 10)
    before = snapshot(out)
    one_line(run_cli("export", tiny_models["bert2"], out, "--task", "feature-extraction", "--overwrite"),
             "my-notes.txt", "refusing to replace the export")
    unchanged(before, out)
    # without the foreign files, --overwrite replaces the export
    (out / "my-notes.txt").unlink()
    shutil.rmtree(out / "sub")
    assert run_cli("export", tiny_models["bert2"], out, "--task", "feature-extraction", "--overwrite").rc == 0


def test_export_overwrite_refuses_an_edited_export_file(tiny_models, tmp_path):
    out = tmp_path / "exp"
    assert run_cli("export", tiny_models["bert2"], out, "--task", "feature-extraction").rc == 0
    (out / "vocab.txt").write_text((out / "vocab.txt").read_text() + "myword\n")
    before = snapshot(out)
    one_line(run_cli("export", tiny_models["bert2"], out, "--task", "feature-extraction", "--overwrite"), "vocab.txt")
    unchanged(before, out)


def test_embed_overwrite_refuses_before_deleting_the_old_store(tiny_exports, corpus_file, small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    (store / "README.txt").write_text(USER)
    before = snapshot(store)
    one_line(run_cli("embed", tiny_exports["bert2"], corpus_file, store, "--overwrite", "--max-length", "32"),
             "README.txt", "refusing to remove the store")
    unchanged(before, store)


@pytest.mark.parametrize("command", ["knn", "ood"])
def test_single_file_outputs_refuse_a_users_file_and_a_symlink(command, small_store, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text(USER)
    (tmp_path / "out.json").write_text(USER)
    os.symlink(target, tmp_path / "link.json")
    before = snapshot(tmp_path)
    for name in ("out.json", "link.json"):
        args = (["knn", small_store, tmp_path / name, "--k", "2"] if command == "knn" else
                ["ood", "--train", small_store, "--test", small_store, "--allow-overlap", "--k", "2", tmp_path / name])
        one_line(run_cli(*args), name, "not written by lookalike")
    unchanged(before, tmp_path)
    assert target.read_text() == USER


def test_attack_keeps_a_users_summary(tiny_exports, corpus_file, tmp_path):
    out = tmp_path / "att"
    out.mkdir()
    (out / "summary.json").write_text(USER)
    before = snapshot(out)
    r = run_cli("attack", tiny_exports["cls"], corpus_file, out, "--mlm", "bert-base-uncased", "--n", "2")
    one_line(r, "summary.json")
    unchanged(before, out)


def test_fit_mlm_keeps_a_users_config(minilm_dir, corpus_file, tmp_path):
    out = tmp_path / "mlm"
    out.mkdir()
    (out / "config.json").write_text(USER)
    before = snapshot(out)
    one_line(run_cli("fit-mlm", minilm_dir, corpus_file, out, "--epochs", "1", "--limit", "4"), "config.json")
    unchanged(before, out)


def test_run_refuses_a_users_file_in_its_report_folder(tiny_models, corpus_file, tmp_path):
    import yaml

    (tmp_path / "out" / "report").mkdir(parents=True)
    (tmp_path / "out" / "report" / "report.md").write_text(USER)
    cfg = {"models": [{"name": "a", "base": str(tiny_models["bert2"])}, {"name": "b", "base": str(tiny_models["bert4"])}],
           "datasets": {"representation": {"path": str(corpus_file)}}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    before = snapshot(tmp_path / "out")
    one_line(run_cli("run", tmp_path / "exp.yaml", "-o", tmp_path / "out"), "report.md")
    unchanged(before, tmp_path / "out")
    assert not (tmp_path / "out" / "steps").exists()  # refused before any step ran


def test_tokenize_into_a_users_folder_is_refused(tiny_exports, corpus_file, tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "part-notes.txt").write_text(USER)
    before = snapshot(out)
    one_line(run_cli("tokenize", tiny_exports["bert2"], corpus_file, out), "part-notes.txt")
    unchanged(before, out)


def test_the_ledger_records_what_was_written(small_knn, tmp_path):
    from lookalike.outputs import LEDGER, OwnedFolder

    assert run_cli("agree", "--knn", f"a={small_knn}", "--knn", f"b={small_knn}", "--k", "2", "--reps", "0",
                   "-o", tmp_path / "t").rc == 0
    ledger = json.loads((tmp_path / LEDGER).read_text())
    assert sorted(ledger["files"]) == ["t.csv", "t.json", "t.md"]
    folder = OwnedFolder(tmp_path)
    assert folder.foreign() == [] and folder.status("t.md") == "ours"
    (tmp_path / "mine.txt").write_text(USER)
    assert folder.foreign() == ["mine.txt"]
    with pytest.raises(Exception, match="mine.txt"):
        folder.clear()
    assert (tmp_path / "t.md").exists()  # nothing removed
    (tmp_path / "mine.txt").unlink()
    assert folder.clear() == 3 and not any(tmp_path.iterdir())
