"""kill -9 at random moments of embed, then resume: the store is byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from support import recorded

# kill -9 at random points, then resume: byte-identical results --------------------------------------------------
KILLABLE = textwrap.dedent("""
    import sys
    from lookalike.cli import main
    sys.argv = ["lookalike", *sys.argv[1:]]
    main()
""")


def _cli_process(tmp_path, *args):
    script = tmp_path / "cli.py"
    script.write_text(KILLABLE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(script), "-q", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)


def _run_killed(tmp_path, rng, args, seconds: float, kills: int = 3) -> list[float]:
    """Start the command and SIGKILL it at random moments of a run that takes about `seconds`, `kills` times."""
    when = []
    for _ in range(kills):
        p = _cli_process(tmp_path, *args)
        t = float(rng.uniform(0.3, 1.0) * seconds)
        try:
            p.wait(timeout=t)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            when.append(round(t, 2))
    return when


def _kill_after_shards(tmp_path, rng, args, out, n_shards: int, kills: int = 3) -> list[int]:
    """SIGKILL an embed once its manifest lists a random number of shards (mid-write, not during imports)."""
    at = []
    for _ in range(kills):
        target = int(rng.integers(1, n_shards))
        p = _cli_process(tmp_path, *args)
        while p.poll() is None:
            try:
                done = len(recorded(out)["shards"])
            except (OSError, ValueError):
                done = 0
            if done >= target:
                p.kill()
                p.wait()
                at.append(done)
                break
            time.sleep(0.005)
    return at


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_gives_identical_bytes(tiny_exports, shared_data, tmp_path):
    rng = np.random.default_rng(14)
    data = shared_data / "squad2_dev500"
    model, qa = tiny_exports["bert2"], tiny_exports["qa"]
    jobs = {
        "embed": (["embed", model, data, "{out}", "--shard-rows", "25", "--max-length", "128", "--limit", "400"],
                  lambda out: [s["sha256"] for s in recorded(out)["shards"]]),
        "predict": (["predict", qa, data, "{out}", "--task", "qa", "--limit", "150", "--max-length", "128",
                     "--doc-stride", "64"], lambda out: (out / "predictions.json").read_bytes()),
    }
    for name, (args, result) in jobs.items():
        ref_out, out = tmp_path / f"{name}-ref", tmp_path / f"{name}-killed"
        t0 = time.perf_counter()
        p = _cli_process(tmp_path, *[a if a != "{out}" else ref_out for a in args])
        assert p.wait() == 0, p.stderr.read().decode()
        seconds = time.perf_counter() - t0
        run_args = [a if a != "{out}" else out for a in args]
        if name == "embed":
            killed_at = _kill_after_shards(tmp_path, rng, run_args, out, n_shards=16)
            assert len(killed_at) == 3 and not recorded(out)["complete"]
        else:
            killed_at = _run_killed(tmp_path, rng, run_args, seconds)
        p = _cli_process(tmp_path, *[a if a != "{out}" else out for a in args])
        assert p.wait() == 0, (name, killed_at, p.stderr.read().decode())
        assert result(out) == result(ref_out), (name, killed_at)
    # knn on the finished store: killed runs leave no partial neighbour file, the re-run is byte-identical
    store = tmp_path / "embed-ref"
    t0 = time.perf_counter()
    p = _cli_process(tmp_path, "knn", store, tmp_path / "ref.h5", "--k", "10")
    assert p.wait() == 0
    _run_killed(tmp_path, rng, ["knn", store, tmp_path / "nn.h5", "--k", "10"], time.perf_counter() - t0)
    # a kill never leaves a partial file under the real name (only a run that finished before its kill wrote it)
    assert not (tmp_path / "nn.h5").exists() or (tmp_path / "nn.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    p = _cli_process(tmp_path, "knn", store, tmp_path / "nn.h5", "--k", "10")
    assert p.wait() == 0
    assert (tmp_path / "nn.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    # a SIGKILLed writer's temporary (its pid now dead) is removed by the next run
    assert [f.name for f in tmp_path.glob("nn.h5.*")] == []
    shutil.rmtree(tmp_path / "embed-killed")
