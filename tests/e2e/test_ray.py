"""The Ray backend makes the same store and predictions as the local one, also after a worker is killed mid-run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lookalike.data import CorpusSpec
from lookalike.engine import RayOptions, embed, open_store
from lookalike.core.cluster import init_ray
from lookalike.params import EmbedParams, PredictParams

ray = pytest.importorskip("ray")  # installed by the test extra; skipped only where the extra is absent


FAULTS = Path(tempfile.gettempdir()) / f"lookalike-ray-faults-{os.getpid()}.json"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray whose workers can be told to die once (tests/ray_faults.py, through `kill_once`)."""
    tests_dir = str(Path(__file__).resolve().parents[1])  # tests/: ray_faults.py
    env = {"LOOKALIKE_TEST_FAULTS": str(FAULTS),
           "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    before = _listening()
    init_ray(num_cpus=2, object_store_memory=100 * 1024 ** 2,
             runtime_env={"worker_process_setup_hook": "ray_faults.install", "env_vars": env})
    # nothing the local cluster opened listens beyond loopback (Ray has no authentication; its job API runs code)
    opened = _listening() - before
    assert opened, "found no listening socket of the Ray node (the check would see nothing)"
    exposed = sorted((ip, port) for ip, port in opened if not _loopback(ip))
    assert not exposed, f"the local Ray listens beyond loopback: {exposed}"
    yield
    ray.shutdown()
    FAULTS.unlink(missing_ok=True)


def _listening() -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def _loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def kill_once(marker: Path, **where) -> None:
    """The next worker that reaches `where` (kill_shard_at_row=ROW or kill_part_at_id=ID) dies, once."""
    FAULTS.write_text(json.dumps({"marker": str(marker), **where}))


@pytest.mark.slow
def test_ray_store_equals_local_and_survives_a_killed_worker(local_ray, tiny_exports, shared_data, tmp_path):
    data = CorpusSpec(shared_data / "squad2_dev500", limit=90)
    params = EmbedParams(max_length=128, shard_rows=20, sort_window=8)
    local = embed(tiny_exports["bert2"], data, tmp_path / "local", params, threads=1)
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray", params, backend="ray", ray=RayOptions(workers=2))
    assert res["backend"] == "ray" and res["rows"] == local["rows"] == 90 and res["shards"] == 5
    a, b = open_store(tmp_path / "local"), open_store(tmp_path / "ray")
    assert list(a.ids) == list(b.ids)
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-5)
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    ma = json.loads((tmp_path / "local" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert [(s["row_start"], s["row_end"]) for s in ma["shards"]] == [(s["row_start"], s["row_end"]) for s in mb["shards"]]
    # a worker dies while on shard 2; Ray restarts it and retries the task: nothing lost, nothing doubled
    marker = tmp_path / "killed"
    kill_once(marker, kill_shard_at_row=2 * params.shard_rows)
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray-killed", params, backend="ray",
                ray=RayOptions(workers=2))
    assert marker.exists() and res["rows"] == 90
    c = open_store(tmp_path / "ray-killed")
    assert list(c.ids) == list(a.ids)
    np.testing.assert_allclose(c.embeddings(), a.embeddings(), atol=1e-5)
    # resume across the cluster: drop the last two shards from the manifest, re-run, only they are redone
    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    m["shards"], m["complete"] = m["shards"][:3], False
    (tmp_path / "ray" / "manifest.json").write_text(json.dumps(m))
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray", params, backend="ray", ray=RayOptions(workers=2))
    assert res["resumed_from"] == 60 and res["rows_this_run"] == 30
    np.testing.assert_allclose(open_store(tmp_path / "ray").embeddings(), a.embeddings(), atol=1e-5)


@pytest.mark.slow
def test_ray_predictions_equal_local_after_a_killed_worker_and_resume(local_ray, tiny_exports, shared_data,
                                                                     tmp_path):
    from lookalike.jobs import predict

    qa = shared_data / "squad2_dev500"
    qa = CorpusSpec(qa, limit=40)
    opts = dict(params=PredictParams(max_length=128, doc_stride=48))
    predict(tiny_exports["qa"], qa, tmp_path / "local", task="qa", **opts)
    marker = tmp_path / "killed"
    kill_once(marker, kill_part_at_id=list(qa.records())[2 * 8].id)  # the first record of part 2
    ray_opts = RayOptions(workers=2, part_rows=8)
    info = predict(tiny_exports["qa"], qa, tmp_path / "ray", task="qa", backend="ray", ray=ray_opts, **opts)
    assert marker.exists() and info["backend"] == "ray" and info["n"] == 40
    for name in ("predictions.json", "null_odds.json"):
        local = json.loads((tmp_path / "local" / name).read_text())
        remote = json.loads((tmp_path / "ray" / name).read_text())
        assert list(local) == list(remote)  # same ids, same order
        if name == "predictions.json":
            assert local == remote
        else:
            np.testing.assert_allclose([local[k] for k in local], [remote[k] for k in local], rtol=1e-4, atol=1e-4)
    # resume: a lost part is the only one redone; parts of another run in the same OUT are refused
    parts = tmp_path / "ray" / "parts"
    (parts / "part-00003.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.json")}
    predict(tiny_exports["qa"], qa, tmp_path / "ray", task="qa", backend="ray", ray=RayOptions(workers=2, part_rows=8),
            **opts)
    after = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.json")}
    assert set(after) == set(before) | {"part-00003.json"} and all(after[k] == v for k, v in before.items())
    from lookalike.errors import InputError

    with pytest.raises(InputError, match="another prediction run"):
        predict(tiny_exports["qa"], qa, tmp_path / "ray", task="qa", backend="ray",
                ray=RayOptions(workers=2, part_rows=8), params=PredictParams(max_length=96, doc_stride=48))
    # classification through the same mechanism
    imdb = shared_data / "imdb" / "imdb_1k.tsv"
    imdb = CorpusSpec(imdb, limit=30)
    predict(tiny_exports["cls"], imdb, tmp_path / "cls-local", task="cls", params=PredictParams(max_length=128))
    predict(tiny_exports["cls"], imdb, tmp_path / "cls-ray", task="cls", params=PredictParams(max_length=128),
            backend="ray", ray=RayOptions(workers=2, part_rows=10))
    a = json.loads((tmp_path / "cls-local" / "predictions.json").read_text())
    b = json.loads((tmp_path / "cls-ray" / "predictions.json").read_text())
    assert list(a) == list(b) and [v["label_id"] for v in a.values()] == [v["label_id"] for v in b.values()]


@pytest.mark.slow
def test_knn_and_ood_on_ray_equal_the_local_runner_also_after_a_killed_worker(local_ray, tiny_exports, shared_data,
                                                                               tmp_path):
    """Bank blocks searched by Ray tasks, merged on the driver: sampled and exhaustive neighbour files and OOD
    scores byte-identical to the local runner's; a worker killed mid-block is retried and changes nothing."""
    from lookalike.analysis.knn import knn_sampled, knn_self
    from lookalike.analysis.ood import deep_knn_ood

    data = CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=400)
    embed(tiny_exports["bert2"], data, tmp_path / "s", EmbedParams(max_length=64, shard_rows=90))
    test = CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=60)
    embed(tiny_exports["bert2"], test, tmp_path / "t", EmbedParams(max_length=64))
    store, challenge = open_store(tmp_path / "s"), open_store(tmp_path / "t")
    on_ray = {"workers": 2}
    local = knn_sampled(store, 5, 50, seed=1, bank_rows=70)
    remote = knn_sampled(store, 5, 50, seed=1, bank_rows=70, ray=on_ray)
    assert remote.content_sha256() == local.content_sha256()
    whole = knn_self(store, 5)
    disk = knn_self(store, 5, bank_rows=70, ray=on_ray)
    assert disk.content_sha256() == whole.content_sha256()
    a = deep_knn_ood(store, challenge, [1, 5], bank_rows=70, seed=2)
    b = deep_knn_ood(store, challenge, [1, 5], bank_rows=70, seed=2, ray=on_ray)
    assert all(a.scores[k].tobytes() == b.scores[k].tobytes() for k in (1, 5)) and a.thresholds == b.thresholds
    # a worker dies while searching the block at row 140; Ray retries the task: the same file
    marker = tmp_path / "killed"
    kill_once(marker, kill_knn_block_at=140)
    again = knn_sampled(store, 5, 50, seed=1, bank_rows=70, ray=on_ray)
    assert marker.exists() and again.content_sha256() == local.content_sha256()
