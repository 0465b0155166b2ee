"""lookalike: does the compressed model behave like the large model it replaces?

The Python API (imported on first use, so `import lookalike` stays light; IDEs and type checkers see the real
imports below):

    Embedder, embed_to_store          bulk embedding, sentence-transformers' names
    export                            a Hugging Face model to a verified ONNX folder (and its compressed variants)
    embed, open_store                 an embedding store from a corpus; a store, verified
    knn_self, knn_sampled, load_knn   neighbour files, exhaustive or from a draw of points
    deep_knn_ood, load_ood            deep-kNN OOD sets
    agreement                         the pairwise agreement table of stored artifacts (`lookalike agree`)
    cka_stores, mutual_knn, cknna     the field's other representation measures
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__

__all__ = ["Embedder", "__version__", "agreement", "cka_stores", "cknna", "deep_knn_ood", "embed", "embed_to_store",
           "export", "knn_sampled", "knn_self", "load_knn", "load_ood", "mutual_knn", "open_store"]

_WHERE = {"Embedder": "engine.embedder", "embed_to_store": "engine.embedder", "export": "exporters",
          "embed": "engine.pipeline", "open_store": "core.store", "knn_self": "analysis.knn",
          "knn_sampled": "analysis.knn", "load_knn": "analysis.knn", "deep_knn_ood": "analysis.ood",
          "load_ood": "analysis.ood", "agreement": "jobs", "cka_stores": "analysis.measures",
          "mutual_knn": "analysis.measures", "cknna": "analysis.measures"}

if TYPE_CHECKING:
    from .analysis.knn import knn_sampled, knn_self, load_knn
    from .analysis.measures import cka_stores, cknna, mutual_knn
    from .analysis.ood import deep_knn_ood, load_ood
    from .core.store import open_store
    from .engine.embedder import Embedder, embed_to_store
    from .engine.pipeline import embed
    from .exporters import export
    from .jobs import agreement


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
