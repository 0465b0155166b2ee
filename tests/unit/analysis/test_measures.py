"""The field's other measures against their dense O(n²) definitions, written here independently of the streamed
code (METHODS.md; platonic-rep's `metrics.py` formulas re-implemented in numpy): linear CKA biased and debiased,
mutual-kNN and CKNNA, at n in {5, 50, 2000}; their invariances; and the jackknife interval's coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.analysis.knn import knn_self
from lookalike.analysis.measures import cka_from_blocks, cka_stores, cknna, mutual_knn
from lookalike.errors import InputError


def _norm(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dense_hsic_biased(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def dense_hsic_unbiased(k, l):  # platonic-rep's hsic_unbiased
    m = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    value = (np.sum(kt * lt.T) + np.sum(kt) * np.sum(lt) / ((m - 1) * (m - 2)) - 2 * np.sum(kt @ lt) / (m - 2))
    return value / (m * (m - 3))


def dense_cka(x, y, hsic):
    x, y = _norm(x), _norm(y)
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def dense_cknna(x, y, topk):  # platonic-rep's cknna, unbiased, on normalised features
    x, y = _norm(x), _norm(y)
    k, l = x @ x.T, y @ y.T
    n = len(k)

    def sim(k, l):
        kh, lh = k.copy(), l.copy()
        np.fill_diagonal(kh, -np.inf)
        np.fill_diagonal(lh, -np.inf)
        mk, ml = np.zeros((n, n)), np.zeros((n, n))
        np.put_along_axis(mk, np.argsort(-kh, axis=1)[:, :topk], 1, axis=1)
        np.put_along_axis(ml, np.argsort(-lh, axis=1)[:, :topk], 1, axis=1)
        mask = mk * ml
        return dense_hsic_unbiased(mask * k, mask * l)

    return sim(k, l) / (math.sqrt(sim(k, k) * sim(l, l)) + 1e-6)


def _pair(n, p, q, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) + 0.2
    y = x @ rng.normal(size=(p, q)) + 1.5 * rng.normal(size=(n, q))
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("n", [5, 50, 2000])
@pytest.mark.parametrize("p, q", [(12, 12), (24, 6)])
def test_streamed_cka_equals_the_gram_definitions(n, p, q):
    x, y = _pair(n, p, q, n)
    blocks = [(x[i:i + 7], y[i:i + 7]) for i in range(0, n, 7)]  # streamed in blocks of 7 rows
    got = cka_from_blocks(blocks, groups=min(20, n), n=n)
    assert got["n"] == n and got["groups"] == min(20, n)
    assert got["cka"] == pytest.approx(dense_cka(x, y, dense_hsic_biased), rel=1e-6)
    assert got["cka_debiased"] == pytest.approx(dense_cka(x, y, dense_hsic_unbiased), rel=1e-6, abs=1e-9)


def test_cka_on_real_vectors_equals_the_gram_definition(minilm_dir, shared_data):
    """Real MiniLM vectors (384-d: the learned input embeddings of 50 distinct words of IMDB reviews, read from the
    packaged weights, no export) against a random projection of them to 128-d: the paper's case of widths."""
    from safetensors.numpy import load_file

    from lookalike.data import read_corpus

    vocab = {w: i for i, w in enumerate((minilm_dir / "vocab.txt").read_text().splitlines())}
    words = [w for r in read_corpus(shared_data / "imdb" / "imdb_1k.tsv", limit=200) for w in r.text.lower().split()]
    ids = list(dict.fromkeys(vocab[w] for w in words if w in vocab))[:50]
    table = load_file(str(minilm_dir / "model.safetensors"))
    (name,) = [k for k in table if k.endswith("word_embeddings.weight")]
    x = table[name][ids].astype(np.float32)
    assert x.shape == (50, 384)
    y = (x @ np.random.default_rng(0).normal(size=(384, 128))).astype(np.float32) ** 2
    got = cka_from_blocks([(x[:20], y[:20]), (x[20:], y[20:])], groups=5, n=50)
    assert got["cka"] == pytest.approx(dense_cka(x, y, dense_hsic_biased), rel=1e-6)
    assert got["cka_debiased"] == pytest.approx(dense_cka(x, y, dense_hsic_unbiased), rel=1e-6)


def test_cka_invariances_and_identity():
    x, y = _pair(300, 16, 8, 1)
    base = cka_from_blocks([(x, y)], groups=10, n=300)
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(16, 16)))[0]
    for xx, yy in ((3.7 * x, y), (x @ rot, y), (x, 0.01 * y)):
        moved = cka_from_blocks([(xx, yy)], groups=10, n=300)
        for m in ("cka", "cka_debiased"):
            assert moved[m] == pytest.approx(base[m], rel=1e-6)
    self_ = cka_from_blocks([(x, x)], groups=10, n=300)
    assert self_["cka"] == pytest.approx(1, abs=1e-9) and self_["cka_debiased"] == pytest.approx(1, abs=1e-9)


def test_the_jackknife_interval_covers_the_population_value():
    """50 seeded draws of 2,000 points: the 95% interval holds the population CKA (estimated once from 400,000
    points) at least 45 times (90%)."""
    rng = np.random.default_rng(0)
    p, q = 16, 8
    w = rng.normal(size=(p, q))

    def draw(n, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(n, p)) * np.linspace(0.5, 2, p) + 0.3
        return x, x @ w + 2.0 * r.normal(size=(n, q))

    population = cka_from_blocks((draw(50000, 100 + i) for i in range(8)), groups=2, n=400000)
    for m in ("cka", "cka_debiased"):
        hits = 0
        for s in range(50):
            r = cka_from_blocks([draw(2000, s)], groups=20, n=2000)
            assert r["groups"] == 20  # the jackknife has its 20 groups (a wide t(1) interval covers anything)
            hits += r[f"{m}_lo"] <= population[m] <= r[f"{m}_hi"]
        assert hits >= 45, (m, hits)


@pytest.mark.parametrize("n, k", [(50, 5), (400, 10)])
def test_mutual_knn_and_cknna_equal_their_dense_definitions(n, k):
    x, y = _pair(n, 12, 6, k)
    a, b = knn_self(x, k), knn_self(y, k)
    per = mutual_knn(a, b, k)
    xs, ys = _norm(x), _norm(y)
    sa, sb = xs @ xs.T, ys @ ys.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    ta, tb = np.argsort(-sa, axis=1)[:, :k], np.argsort(-sb, axis=1)[:, :k]
    want = np.array([len(set(u) & set(v)) / k for u, v in zip(ta, tb)])
    np.testing.assert_allclose(per, want)
    got = cknna(a, b, k, groups=4)
    assert got["cknna"] == pytest.approx(dense_cknna(x, y, k), rel=1e-5, abs=1e-7)
    assert got["cknna_lo"] <= got["cknna"] <= got["cknna_hi"]
    # a model against itself: 1 but for platonic-rep's 1e-6 in the denominator
    same = cknna(a, a, k, groups=4)["cknna"]
    assert same == pytest.approx(dense_cknna(x, x, k), rel=1e-6) and same > 0.999


def test_cknna_refuses_k_below_2_and_sampled_files():
    x, y = _pair(60, 4, 4, 0)
    with pytest.raises(InputError, match="k >= 2"):
        cknna(knn_self(x, 3), knn_self(y, 3), 1)
    from lookalike.analysis.knn import knn_sampled

    with pytest.raises(InputError, match="exhaustive self-kNN"):
        cknna(knn_sampled(x, 3, 10), knn_sampled(y, 3, 10), 3)


def test_cka_stores_refuses_other_points_and_gives_a_chance_level():
    x, y = _pair(500, 8, 8, 3)
    out = cka_stores(x, y, block_rows=64, chance_seed=5)
    assert out["groups"] == 20 and all(np.isfinite(out[f"cka{s}_{e}"]) for s in ("", "_debiased") for e in ("lo", "hi"))
    assert out["chance"] == {"seed": 5, "rows": 500, "how": "row-permuted partner"}
    assert abs(out["cka_debiased_chance"]) < 0.05 < out["cka_debiased"]
    with pytest.raises(InputError, match="different points"):
        cka_stores(x, y[:499])


def test_paired_differences_of_the_other_measures():
    """CKA and CKNNA differences (ref vs x against ref vs y) equal the difference of the two values; a model
    against itself differs by 0 with a 0-width interval; a close model against a far one is larger than the
    noise; the CKA difference's paired jackknife covers the population difference in >= 45 of 50 draws."""
    from lookalike.analysis.measures import cka_difference, cknna_difference

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(600, 12))
    close = ref + 0.3 * rng.normal(size=ref.shape)
    far = ref + 3.0 * rng.normal(size=ref.shape)
    for name in ("cka", "cka_debiased"):
        d, lo, hi = cka_difference(ref, close, far, name)
        want = cka_from_blocks([(ref, close)], n=600)[name] - cka_from_blocks([(ref, far)], n=600)[name]
        assert d == pytest.approx(want, rel=1e-6) and 0 < lo <= d <= hi  # blocks normalised in float32
        assert cka_difference(ref, close, close, name) == (0.0, 0.0, 0.0)
    kr, kc, kf = (knn_self(v.astype(np.float32), 8) for v in (ref, close, far))
    d, lo, hi = cknna_difference(kr, kc, kf, 8)
    assert d == pytest.approx(cknna(kr, kc, 8)["cknna"] - cknna(kr, kf, 8)["cknna"], abs=1e-12)
    assert 0 < lo <= d <= hi
    assert cknna_difference(kr, kc, kc, 8) == (0.0, 0.0, 0.0)

    w = rng.normal(size=(8, 8))

    def draw(n, seed):
        r = np.random.default_rng(seed)
        x = r.normal(size=(n, 8))
        return x, x @ w + 1.0 * r.normal(size=(n, 8)), x @ w + 2.5 * r.normal(size=(n, 8))

    big = [draw(50000, 500 + i) for i in range(4)]
    population = (cka_from_blocks(((x, a) for x, a, _ in big), groups=2, n=200000)["cka"]
                  - cka_from_blocks(((x, b) for x, _, b in big), groups=2, n=200000)["cka"])
    hits = sum(lo <= population <= hi for _, lo, hi in (cka_difference(*draw(1500, s)) for s in range(50)))
    assert hits >= 45, hits


def test_the_report_s_noise_table_carries_the_other_measures(tmp_path):
    from lookalike.analysis.tables import ModelArtifacts, noise_rows
    from support import make_store

    rng = np.random.default_rng(4)
    ref = rng.normal(size=(300, 6)).astype(np.float32)
    views = {"ref": ref, "close": ref + 0.2 * rng.normal(size=ref.shape).astype(np.float32),
             "far": ref + 2.0 * rng.normal(size=ref.shape).astype(np.float32)}
    arts = {n: ModelArtifacts(knn={"before": knn_self(v, 6)}, stores={"before": make_store(tmp_path / n, v).path})
            for n, v in views.items()}
    rows = noise_rows(list(arts), arts, k=6, reps=200, measures=("mutual_knn", "cknna", "cka", "cka_debiased"))
    metrics = [r["metric"] for r in rows]
    assert metrics == ["representation before FT (K=6)", "mutual-kNN (K=6) before FT", "CKNNA (K=6) before FT",
                       "linear CKA before FT", "linear CKA (debiased) before FT"]
    assert all(r["verdict"] == "larger than the noise" and r["difference"] > 0 for r in rows)


def test_a_measure_declared_once_reaches_agree_and_the_noise_table(tmp_path, monkeypatch):
    """The registry is the one place a measure is declared: a toy measure added there (and nowhere else) gets
    its column and chance column in `agree` and its paired difference in the report's noise table."""
    from lookalike import jobs
    from lookalike.analysis import measures
    from lookalike.analysis.tables import ModelArtifacts, noise_rows

    def cells(a, b, k, reps, seed):
        v = float((a.neighbors[:, :k] == b.neighbors[:, :k]).mean())
        return {"same_rank": v, "same_rank_lo": v - 0.01, "same_rank_hi": v + 0.01, "same_rank_chance": 0.0}

    toy = measures.Measure("same_rank", "same neighbour at the same rank", "knn", "a toy", cells,
                           lambda r, x, y, k, reps: (0.5, 0.4, 0.6))
    monkeypatch.setitem(measures.MEASURES, "same_rank", toy)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    files = {}
    for name, v in (("ref", x), ("a", x + 0.1 * rng.normal(size=x.shape).astype(np.float32)),
                    ("b", x + rng.normal(size=x.shape).astype(np.float32))):
        knn_self(v, 5).save(tmp_path / f"{name}.knn.h5")
        files[name] = tmp_path / f"{name}.knn.h5"
    table = jobs.agreement(files, {}, {}, [5], reps=0, measures=("jaccard", "same_rank"))
    assert "same_rank" in table.columns and "same_rank_chance" in table.columns
    assert "same neighbour at the same rank" in table.markdown[0]
    arts = {n: ModelArtifacts.load(knn={"before": f}) for n, f in files.items()}
    rows = noise_rows(list(arts), arts, k=5, reps=50, measures=("same_rank",))
    assert [r["metric"] for r in rows if "same neighbour" in r["metric"]] == \
        ["same neighbour at the same rank (K=5) before FT"]
