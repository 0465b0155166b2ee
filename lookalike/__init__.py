"""lookalike: does the compressed model behave like the large model it replaces?"""

__version__ = "0.1.0"

import logging as _logging

# one line a user should see (not a problem, unlike a warning): printed by default, silenced by -q
NOTICE = 25
_logging.addLevelName(NOTICE, "NOTE")


def __getattr__(name):  # the Python API, imported on first use so `import lookalike` stays light
    if name == "Embedder":
        from .engine.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
