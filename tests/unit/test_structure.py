"""The code's shape: no import cycle inside lookalike/, and the engine's shared pieces against hand-made cases."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike.engine.batching import Encoded, token_budget_batches
from lookalike.engine.plan import shard_aligned
from lookalike.engine.stages import staged

PKG = Path(__file__).resolve().parents[2] / "lookalike"


def import_graph() -> dict[str, set[str]]:
    """module -> lookalike modules it imports (module level and inside functions: a lazy import is an edge too)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        package = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v):
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_in_lookalike():
    graph = import_graph()
    assert "lookalike.engine.distributed" in graph and len(graph) > 20
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the checker itself finds a cycle when there is one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    # one-way layers: nothing upstream imports the analysis or the CLI; distributed only the shared floor
    for m, deps in graph.items():
        if m.startswith(("lookalike.engine", "lookalike.data", "lookalike.exporters", "lookalike.core")):
            assert not any(d.startswith(("lookalike.analysis", "lookalike.cli")) for d in deps), (m, deps)
    assert not graph["lookalike.engine.distributed"] & {"lookalike.engine.pipeline", "lookalike.jobs"}
    # the task specs sit above the engine and the analysis: no lower floor names them
    for m, deps in graph.items():
        if m.startswith(("lookalike.engine", "lookalike.data", "lookalike.exporters", "lookalike.core",
                         "lookalike.analysis")):
            assert not any(d.startswith(("lookalike.tasks", "lookalike.jobs")) for d in deps), (m, deps)


@pytest.mark.parametrize("budget", [64, 100, 257, 1024])
def test_token_budget_batches_stay_in_budget_and_cover_every_row_once(budget):
    rng = np.random.default_rng(budget)
    n = 300
    lengths = rng.integers(1, 64, size=n)
    enc = Encoded.from_lists([list(range(1, L + 1)) for L in lengths], None, np.zeros(n, bool))
    batches = token_budget_batches(enc, budget, pad_id=0, max_batch=50)
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows.tolist()) == list(range(n))  # every row exactly once
    for b in batches:
        assert b.input_ids.size <= max(budget, int(lengths[b.rows].max()))  # a single long row may exceed it
        assert len(b.rows) <= 50 and b.input_ids.shape[1] == lengths[b.rows].max()
        for j, r in enumerate(b.rows):  # the row's tokens, then padding, and the mask says which is which
            L = lengths[r]
            assert b.input_ids[j, :L].tolist() == list(range(1, L + 1)) and not b.input_ids[j, L:].any()
            assert b.attention_mask[j].sum() == L and b.real_tokens == int(lengths[b.rows].sum())


@pytest.mark.parametrize("start,size,boundary", [(0, 4, 10), (3, 4, 10), (18, 7, 10), (0, 10, 10), (5, 100, 7)])
def test_shard_aligned_never_crosses_a_boundary(start, size, boundary):
    items = list(range(start, start + 53))
    chunks = list(shard_aligned(items, start, size, boundary))
    assert [x for _, c in chunks for x in c] == items
    for first, c in chunks:
        assert c[0] == first and 1 <= len(c) <= size
        assert first // boundary == (first + len(c) - 1) // boundary  # inside one shard


def test_staged_keeps_order_overlaps_stages_and_propagates_errors():
    seen_threads = set()

    def slow_square(x):
        seen_threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return x * x

    t0 = time.perf_counter()
    out = list(staged(range(20), slow_square, lambda x: (seen_threads.add(threading.current_thread().name), x + 1)[1],
                      depth=2))
    assert out == [x * x + 1 for x in range(20)]
    assert len(seen_threads) == 2 and time.perf_counter() - t0 < 5

    def boom(x):
        if x == 3:
            raise ValueError("stage failed on 3")
        return x

    with pytest.raises(ValueError, match="stage failed on 3"):
        list(staged(range(10), boom))

    def bad_source():
        yield 1
        raise KeyError("source failed")

    with pytest.raises(KeyError, match="source failed"):
        list(staged(bad_source(), lambda x: x))
    # a consumer that stops early stops every thread
    before = threading.active_count()
    gen = staged(iter(range(10 ** 6)), lambda x: x)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.3)
    assert threading.active_count() <= before


def test_floors_import_only_downwards():
    """The floors of the README's layout: contracts (core) at the bottom, then exporters, the engine, the analysis.
    exporters and analysis never import the engine, the engine never imports the analysis, core imports none of
    them. The checker itself sees a violation."""
    graph = import_graph()
    assert {"lookalike.core.manifest", "lookalike.core.store", "lookalike.core.session", "lookalike.core.heads"} <= set(graph)
    forbidden = {"lookalike.core": ("lookalike.exporters", "lookalike.engine", "lookalike.analysis", "lookalike.data"),
                 "lookalike.exporters": ("lookalike.engine", "lookalike.analysis"),
                 "lookalike.analysis": ("lookalike.engine", "lookalike.exporters"),
                 "lookalike.engine": ("lookalike.analysis",)}

    def violations(g):
        return sorted((m, d) for m, deps in g.items() for floor, above in forbidden.items()
                      if m == floor or m.startswith(floor + ".") for d in deps if d.startswith(above))

    assert violations(graph) == []
    assert [m for m, deps in graph.items() if "lookalike.cli" in deps] == []  # the CLI is the top floor
    assert violations({"lookalike.analysis.knn": {"lookalike.engine.store"}}) == [("lookalike.analysis.knn",
                                                                                 "lookalike.engine.store")]


def test_the_public_surface_is_declared_and_every_name_resolves():
    """`lookalike.__all__` names the API; each name resolves lazily to the object its module defines, and the
    TYPE_CHECKING imports (what IDEs read) name the same places."""
    import ast
    import importlib

    import lookalike

    source = (PKG / "__init__.py").read_text()
    typed = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                for alias in imp.names:
                    typed[alias.name] = imp.module
    for name in lookalike.__all__:
        if name == "__version__":
            continue
        obj = getattr(lookalike, name)
        assert obj is getattr(importlib.import_module(f"lookalike.{typed[name]}"), name), name
    assert set(typed) == set(lookalike.__all__) - {"__version__"}
    with pytest.raises(AttributeError):
        lookalike.not_a_name  # noqa: B018


def test_a_row_longer_than_the_budget_goes_alone_and_nothing_is_lost():
    """cut_batches: a row whose length alone passes the budget is a batch of one (never dropped, never joined);
    every other batch stays within the budget; the cut covers every row once, in order."""
    from lookalike.engine.batching import cut_batches

    lengths = np.array([900, 700, 60, 50, 50, 40, 10, 10], dtype=np.int64)  # sorted longest first
    cuts = cut_batches(lengths, batch_tokens=200, max_batch=512, batch_cost=0.0)
    spans = list(zip(cuts[:-1], cuts[1:]))
    assert spans[0] == (0, 1) and spans[1] == (1, 2)  # each over-long row alone
    assert cuts[0] == 0 and cuts[-1] == len(lengths) and (np.diff(cuts) >= 1).all()
    for a, b in spans[2:]:
        assert (b - a) * lengths[a] <= 200
    assert cut_batches(np.array([5000]), 100, 512, 0.0).tolist() == [0, 1]
    assert cut_batches(np.array([], dtype=np.int64), 100, 512, 0.0).tolist() == [0]
    # max_batch caps rows even when the budget would take more
    assert np.diff(cut_batches(np.full(10, 1, dtype=np.int64), 10_000, 3, 0.0)).max() <= 3


EXPORTING_FIXTURES = {"tiny_models", "tiny_exports", "small_store"}
EXPORTING_CALLS = {"Embedder", "OnnxModel", "export", "embed", "embed_to_store"}


def unit_tier_exports(root: Path) -> list[str]:
    """Where a file under `root` asks for an exported model: a fixture that builds one, or a call that makes or loads
    one. The unit tier is pure code ("no export", README); whatever needs a model belongs in tests/integration."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.name}:{node.lineno} {node.name}({a.arg})" for a in node.args.args
                          if a.arg in EXPORTING_FIXTURES]
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in EXPORTING_CALLS:
                    found.append(f"{path.name}:{node.lineno} {name}(...)")
    return found


def test_the_unit_tier_exports_no_model(tmp_path):
    assert unit_tier_exports(Path(__file__).resolve().parent) == []
    (tmp_path / "test_a.py").write_text("def test_x(tiny_exports):\n    pass\n")
    (tmp_path / "test_b.py").write_text("def test_y(d):\n    from lookalike import Embedder\n    Embedder(d).encode([])\n")
    (tmp_path / "test_c.py").write_text("def test_z(d):\n    import lookalike.exporters as e\n    e.export(d, d)\n")
    assert unit_tier_exports(tmp_path) == ["test_a.py:1 test_x(tiny_exports)", "test_b.py:3 Embedder(...)",
                                           "test_c.py:3 export(...)"]
