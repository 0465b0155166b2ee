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
