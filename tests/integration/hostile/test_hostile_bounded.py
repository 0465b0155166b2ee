"""Class 5, bounded algorithms: kNN and deep-kNN keep their exact tie semantics at O(n·k) memory whatever the
duplicates; YAML is parsed without unbounded alias expansion. Memory is measured in a child process with its
data segment capped (no timing is asserted: benchmarks/bench_integrity.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hostile_tools import one_line, run_cli

from lookalike.analysis.knn import TIE_DECIMALS, knn_self_exact


def _brute(x: np.ndarray, k: int) -> np.ndarray:
    """The reference order: (-similarity to TIE_DECIMALS places, row), self excluded, numpy in float64."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    return np.stack([np.lexsort((np.arange(len(x)), -np.round(row, TIE_DECIMALS)))[:k] for row in s])


@pytest.mark.parametrize("distinct, k", [(1, 5), (2, 10), (7, 3), (40, 10), (300, 4)])
def test_exact_knn_with_duplicates_equals_brute_force(distinct, k):
    rng = np.random.default_rng(distinct)
    base = rng.standard_normal((distinct, 12)).astype(np.float32)
    x = base[rng.integers(0, distinct, 300)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, rows = knn_self_exact(x, k, bank_rows=64, block_rows=37)
    assert np.array_equal(rows, _brute(x, k))


def test_empty_rows_among_real_ones_keep_the_order():
    """Real corpora: most rows distinct, a block of identical empty-text vectors."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    x[50:120] = x[50]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for k in (1, 10):
        assert np.array_equal(knn_self_exact(x, k, bank_rows=50)[1], _brute(x, k))


def _capped_python(code: str, mem_mb: int) -> subprocess.CompletedProcess:
    cap = f"import resource; resource.setrlimit(resource.RLIMIT_DATA, ({mem_mb << 20}, {mem_mb << 20}))\n"
    return subprocess.run([sys.executable, "-c", cap + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600)


def test_100k_identical_vectors_in_bounded_memory():
    r = _capped_python("""
        import numpy as np
        from lookalike.analysis.knn import knn_self_exact
        x = np.ones((100_000, 64), np.float32) / 8.0
        s, rows = knn_self_exact(x, 10)
        assert rows.shape == (100_000, 10)
        assert list(rows[0]) == list(range(1, 11)) and list(rows[-1]) == list(range(10))
        print("ok")
    """, mem_mb=1500)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_deep_knn_scores_over_an_identical_bank_in_bounded_memory():
    r = _capped_python("""
        import numpy as np
        from lookalike.analysis.ood import kth_distance_scores
        bank = np.ones((100_000, 64), np.float32) / 8.0
        q = np.random.default_rng(0).standard_normal((2_000, 64)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        scores = kth_distance_scores(bank, q, [1, 10, 50])
        assert all(np.allclose(scores[1], scores[k]) for k in (10, 50))  # every neighbour is the same point
        print("ok")
    """, mem_mb=1500)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_knn_over_identical_texts_from_the_command_line(tiny_exports, tmp_path):
    corpus = tmp_path / "same.txt"
    corpus.write_text("the same review\n" * 3000 + "\n" * 500 + "one different line\n")
    assert run_cli("embed", tiny_exports["bert2"], corpus, tmp_path / "s", "--max-length", "16").rc == 0
    r = run_cli("knn", tmp_path / "s", tmp_path / "n.h5", "--k", "10", mem_mb=1500)
    assert r.rc == 0, r.err[-2000:]
    from lookalike.analysis.knn import load_knn

    res = load_knn(tmp_path / "n.h5")
    assert list(res.neighbors[0]) == list(range(1, 11))  # ties broken by row, as always


def test_a_yaml_alias_bomb_is_one_line_in_bounded_memory(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("title: *i")
    lines.append("models: [{name: x, base: minilm}, {name: y, base: minilm}]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "bomb.yaml").stat().st_size < 1000
    r = run_cli("run", tmp_path / "bomb.yaml", mem_mb=1024)
    one_line(r, "bomb.yaml", "expands to more than")
    assert r.max_rss_mb < 800


def test_deeply_nested_json_is_one_line(tiny_exports, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line(run_cli("evaluate", tmp_path / "deep.json", tmp_path / "deep.json"), "deep.json")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"text": "x"}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    one_line(run_cli("embed", tiny_exports["bert2"], tmp_path / "corpus.jsonl", tmp_path / "o"), "corpus.jsonl")


def test_a_commands_memory_is_its_own_not_the_test_processs():
    """The bounded-memory checks measure the command, not the pytest process it was forked from: with 800 MB
    resident here, `--help` still measures tens of MB (wait4's ru_maxrss would say 800+ MB on Linux)."""
    import numpy as np

    ballast = np.ones(100_000_000)  # 800 MB, touched
    r = run_cli("--help")
    assert r.rc == 0 and ballast[-1] == 1.0
    assert r.max_rss_mb < 300, r.max_rss_mb
