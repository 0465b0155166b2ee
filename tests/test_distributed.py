"""The Ray backend makes the same store as the local one, also after a worker is killed mid-run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.engine import embed, open_store

ray = pytest.importorskip("ray")  # installed by the test extra; skipped only where the extra is absent


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 ** 2,
             ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_store_equals_local_and_survives_a_killed_worker(local_ray, tiny_exports, shared_data, tmp_path):
    data = shared_data / "squad2_dev500"
    kw = dict(limit=90, max_length=128, shard_rows=20, sort_window=8)
    local = embed(tiny_exports["bert2"], data, tmp_path / "local", threads=1, **kw)
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray", backend="ray", workers=2, **kw)
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
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray-killed", backend="ray", workers=2,
                _fault={"kill_shard": 2, "marker": str(marker)}, **kw)
    assert marker.exists() and res["rows"] == 90
    c = open_store(tmp_path / "ray-killed")
    assert list(c.ids) == list(a.ids)
    np.testing.assert_allclose(c.embeddings(), a.embeddings(), atol=1e-5)
    # resume across the cluster: drop the last two shards from the manifest, re-run, only they are redone
    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    m["shards"], m["complete"] = m["shards"][:3], False
    (tmp_path / "ray" / "manifest.json").write_text(json.dumps(m))
    res = embed(tiny_exports["bert2"], data, tmp_path / "ray", backend="ray", workers=2, **kw)
    assert res["resumed_from"] == 60 and res["rows_this_run"] == 30
    np.testing.assert_allclose(open_store(tmp_path / "ray").embeddings(), a.embeddings(), atol=1e-5)
