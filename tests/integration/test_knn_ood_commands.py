"""`knn`, `ood` and `bench` on real stores from tiny exports: files, summaries and structure."""

from __future__ import annotations

from lookalike.analysis.knn import load_knn


def test_cli_knn_and_ood_on_stores(tiny_exports, shared_data, tmp_path):
    import json

    from click.testing import CliRunner

    from lookalike.cli import cli
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    embed(tiny_exports["bert2"], CorpusSpec(shared_data / "squad2_dev500", limit=120), tmp_path / "sq",
          EmbedParams(max_length=128))
    embed(tiny_exports["bert2"], CorpusSpec(shared_data / "cuad500", limit=40), tmp_path / "cu",
          EmbedParams(max_length=128))
    r = CliRunner().invoke(cli, ["knn", str(tmp_path / "sq"), str(tmp_path / "nn.h5"), "--k", "5"])
    assert r.exit_code == 0, r.output
    nn = load_knn(tmp_path / "nn.h5")
    assert nn.neighbors.shape == (120, 5) and nn.ids[0] == "572a06af3f37b3190047866a"
    r = CliRunner().invoke(cli, ["ood", "--train", str(tmp_path / "sq"), "--test", str(tmp_path / "cu"),
                                 "--k", "1,5", str(tmp_path / "ood.json")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["results"]) == {"1", "5"} and out["results"]["5"]["n_test"] == 40
    r = CliRunner().invoke(cli, ["knn", str(tmp_path / "cu"), str(tmp_path / "x.h5"), "--k", "40"])
    assert r.exit_code == 2 and "k=40 needs more than k points" in r.output


def test_bench_output_structure(tiny_exports, shared_data, tmp_path):
    import json

    from click.testing import CliRunner

    from lookalike.cli import cli

    r = CliRunner().invoke(cli, ["bench", str(tiny_exports["bert2"]), str(tiny_exports["cls"]), "--batch-sizes", "1,2",
                                 "--seq-lengths", "16", "--repeat", "2", "--corpus",
                                 str(shared_data / "imdb" / "imdb_1k.tsv"), "--corpus-limit", "20",
                                 "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert len(res["models"]) == 2 and res["gemm_ceiling_gflops"] > 0
    lat = res["models"][0]["latency"]
    assert [(x["batch_size"], x["seq_len"]) for x in lat] == [(1, 16), (2, 16)]
    assert all(x["p50_ms"] <= x["p99_ms"] for x in lat)
    assert res["models"][0]["corpus_throughput"]["rows"] == 20 and "corpus_throughput" not in res["models"][1]
    assert (tmp_path / "b" / "bench.png").stat().st_size > 1000 and "| bert2 |" in (tmp_path / "b" / "bench.md").read_text()


def test_knn_sample_and_agree_estimate_from_the_draw(tiny_exports, shared_data, tmp_path):
    """`knn --sample` on two models' stores of the same records, then `agree`: the drawn points' rows equal the
    exhaustive files' rows, the table says the mean is estimated from the draw, and a file of another draw is
    refused in one line naming the field."""
    import json

    import numpy as np
    from support import _one_line_error, _run

    from lookalike.analysis.knn import sample_rows
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    data = CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=300)
    for name in ("bert2", "bert4"):
        embed(tiny_exports[name], data, tmp_path / name, EmbedParams(max_length=64, shard_rows=64))
        assert _run("knn", tmp_path / name, tmp_path / f"{name}.h5", "--k", "5").exit_code == 0
        r = _run("knn", tmp_path / name, tmp_path / f"{name}-s.h5", "--k", "5", "--sample", "40",
                 "--sample-seed", "2")
        assert r.exit_code == 0, r.output
        full, part = load_knn(tmp_path / f"{name}.h5"), load_knn(tmp_path / f"{name}-s.h5")
        rows = sample_rows(300, 40, 2)
        np.testing.assert_array_equal(part.neighbors, full.neighbors[rows])
        assert list(part.ids) == list(full.ids[rows]) and part.sample["n"] == 300
    r = _run("agree", "--knn", f"a={tmp_path / 'bert2-s.h5'}", "--knn", f"b={tmp_path / 'bert4-s.h5'}", "--k", "5",
             "--format", "json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0] if isinstance(json.loads(r.stdout), dict) else json.loads(r.stdout)[0]
    assert row["repr_basis"] == "estimated from 40 of 300 points (seed 2)"
    r = _run("agree", "--knn", f"a={tmp_path / 'bert2-s.h5'}", "--knn", f"b={tmp_path / 'bert4-s.h5'}", "--k", "5")
    assert "estimated from 40 of 300 points" in r.stdout, r.stdout
    assert _run("knn", tmp_path / "bert4", tmp_path / "other.h5", "--k", "5", "--sample", "40",
                "--sample-seed", "3").exit_code == 0
    r = _run("agree", "--knn", f"a={tmp_path / 'bert2-s.h5'}", "--knn", f"b={tmp_path / 'other.h5'}", "--k", "5")
    _one_line_error(r, "sample.seed")
    for bad, needle in ((["--sample", "300"], "below the 300 points"),
                        (["--sample", "5", "--queries", str(tmp_path / "bert2")], "--sample draws points"),
                        (["--sample", "5", "--index", "hnsw"], "searches exactly")):
        _one_line_error(_run("knn", tmp_path / "bert2", tmp_path / "bad.h5", "--k", "5", *bad), needle)


def test_agree_measures_beside_the_jaccard(tiny_exports, shared_data, tmp_path):
    """`agree --measure jaccard,mutual_knn,cknna,cka,cka_debiased`: one column per measure with its interval and
    chance level, each equal to the measure computed directly; a measure without its inputs, or an unknown one,
    is one line naming it."""
    import json

    import numpy as np
    from support import _one_line_error, _run

    from lookalike.analysis.measures import cka_stores, cknna, mutual_knn
    from lookalike.core.store import open_store
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    data = CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=120)
    for name in ("bert2", "bert4"):
        embed(tiny_exports[name], data, tmp_path / name, EmbedParams(max_length=64, shard_rows=50))
        assert _run("knn", tmp_path / name, tmp_path / f"{name}.h5", "--k", "5").exit_code == 0
    args = ["agree", "--knn", f"a={tmp_path / 'bert2.h5'}", "--knn", f"b={tmp_path / 'bert4.h5'}",
            "--store", f"a={tmp_path / 'bert2'}", "--store", f"b={tmp_path / 'bert4'}", "--k", "5", "--reps", "50"]
    r = _run(*args, "--measure", "jaccard,mutual_knn,cknna,cka,cka_debiased", "--format", "json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    a, b = load_knn(tmp_path / "bert2.h5"), load_knn(tmp_path / "bert4.h5")
    assert row["mutual_knn"] == np.mean(mutual_knn(a, b, 5))
    assert row["cknna"] == cknna(a, b, 5)["cknna"]
    direct = cka_stores(open_store(tmp_path / "bert2"), open_store(tmp_path / "bert4"))
    assert row["cka"] == direct["cka"] and row["cka_debiased"] == direct["cka_debiased"]
    for m in ("mutual_knn", "cknna", "cka", "cka_debiased"):
        assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"] and f"{m}_chance" in row and row[f"{m}_basis"]
    md = _run(*args, "--measure", "jaccard,cka").stdout
    assert "linear CKA" in md and "CKA: chance" in md and "mutual-kNN" not in md
    _one_line_error(_run("agree", "--knn", f"a={tmp_path / 'bert2.h5'}", "--knn", f"b={tmp_path / 'bert4.h5'}",
                         "--measure", "cka"), "--measure cka reads embedding stores")
    _one_line_error(_run(*args, "--measure", "cca"), "unknown measure 'cca'")
    _one_line_error(_run(*args, "--measure", "cknna", "--k", "1"), "k >= 2")
