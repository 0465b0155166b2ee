"""lookalike: does the compressed model behave like the large model it replaces?"""

from ._version import __version__  # noqa: F401


def __getattr__(name):  # the Python API, imported on first use so `import lookalike` stays light
    if name == "Embedder":
        from .engine.embedder import Embedder

        return Embedder
    if name == "embed_to_store":
        from .engine.embedder import embed_to_store

        return embed_to_store
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
