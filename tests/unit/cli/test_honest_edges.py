"""Honest edges: nothing scored is an error, `--address none` is a local Ray, the bench plot draws every sequence
length."""

from __future__ import annotations

import pytest

import json

from click.testing import CliRunner

from lookalike.cli import cli

TEXTS = ["a great movie", "terrible acting and a worse plot", "what is the capital of France?", "naïve café"]


def test_nothing_scored_is_an_error(shared_data, tmp_path):
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"other-id": "x"}))
    r = CliRunner().invoke(cli, ["evaluate", str(shared_data / "squad2_dev500"), str(preds), "--allow-missing"])
    assert r.exit_code != 0 and "nothing to score" in r.output and "Traceback" not in r.output


def test_address_none_is_a_local_ray():
    from lookalike.core.cluster import _connect

    ray = FakeRay("127.0.0.1:6379")
    assert _connect(ray, "none", None) and ray.address is None
    assert ray.kw["include_dashboard"] is False


class FakeRay:
    def __init__(self, gcs):
        self.gcs, self.stopped = gcs, False

    def is_initialized(self):
        return False

    def init(self, address=None, **kw):
        self.address, self.kw = address, kw
        from ray._private import ray_constants  # what the local node's servers read while it starts

        self.local_only = ray_constants.ENABLE_RAY_CLUSTER is False

    def get_runtime_context(self):
        return type("Ctx", (), {"gcs_address": self.gcs})()

    def shutdown(self):
        self.stopped = True


def test_a_local_ray_is_started_loopback_only_and_refused_otherwise():
    from lookalike.core.cluster import _connect
    from lookalike.errors import LookalikeError

    ok = FakeRay("127.0.0.1:6379")
    assert _connect(ok, None, None) and ok.local_only
    exposed = FakeRay("10.1.2.3:6379")
    with pytest.raises(LookalikeError, match="not on loopback"):
        _connect(exposed, "local", None)
    assert exposed.stopped
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:  # the user's own cluster: their choice, joined as given
        port = server.getsockname()[1]
        address = f"ray://127.0.0.1:{port}"
        remote = FakeRay("10.1.2.3:6379")
        assert _connect(remote, address, None) and remote.address == address and not remote.stopped
    # closed now: nothing listens there
    with pytest.raises(LookalikeError, match="cannot reach a Ray cluster"):
        _connect(FakeRay("x"), f"127.0.0.1:{port}", None)


def test_the_bench_plot_draws_every_length(tmp_path, monkeypatch):
    """bench.png: one latency line per model and sequence length, and a throughput-by-length line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lookalike.analysis import report

    seen = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path: seen.setdefault("fig", fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    rows = [{"batch_size": b, "seq_len": L, "p50_ms": b * L / 50 + 1, "p90_ms": b * L / 40 + 1,
             "seq_per_s": 1000 * b / (b * L / 50 + 1)} for L in (32, 128, 384) for b in (1, 8)]
    report.plot_bench([{"model": "runs/a", "latency": rows}, {"model": "runs/b", "latency": rows}],
                      tmp_path / "b.png")
    left, right = seen["fig"].axes
    assert sorted(t.get_text() for t in left.get_legend().texts) == sorted(
        f"{m} L={L}" for m in "ab" for L in (32, 128, 384))
    assert [list(line.get_xdata()) for line in right.get_lines()] == [[32, 128, 384]] * 2


def test_errors_chain_their_cause_and_vv_shows_it(tmp_path):
    """A one-line error keeps its cause (raise ... from exc, not from None): -vv prints the chain, the default
    prints one line."""
    from click.testing import CliRunner

    from lookalike.cli import cli

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    args = ["agree", "--errors", f"a={deep}", "--errors", f"b={deep}"]
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 2 and len(plain.stderr.strip().splitlines()) == 1
    verbose = CliRunner().invoke(cli, ["-vv", *args])
    assert "caused by" in verbose.stderr and "RecursionError" in verbose.stderr, verbose.stderr[-2000:]
    import ast
    from pathlib import Path

    import lookalike

    swallowed = [f"{p.name}:{n.lineno}" for p in Path(lookalike.__file__).parent.rglob("*.py")
                 for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Raise)
                 and isinstance(n.cause, ast.Constant) and n.cause.value is None]
    assert swallowed == []  # no cause is dropped anywhere
