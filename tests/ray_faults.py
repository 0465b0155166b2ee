"""A Ray worker setup hook for the tests: a worker process dies once, mid-task, where a fault file says.

Installed by tests/test_distributed.py's `local_ray` fixture (`runtime_env.worker_process_setup_hook`); the fault
file (`$LOOKALIKE_TEST_FAULTS`) names the shard row or prediction part to die on and a marker file written when it
happens. lookalike itself carries no fault hook: this wraps its public functions inside the worker processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _die_once(key: str, value) -> None:
    try:
        spec = json.loads(Path(os.environ["LOOKALIKE_TEST_FAULTS"]).read_text())
    except (KeyError, OSError, ValueError):
        return
    marker = spec.get("marker")
    if spec.get(key) == value and marker and not Path(marker).exists():
        Path(marker).write_text("killed once")
        os._exit(1)


def install() -> None:
    from lookalike.engine import windows
    from lookalike.tasks import cls, qa

    embed_records = windows.WindowEmbedder.embed_records
    predict_qa, predict_cls = qa.predict_qa, cls.predict_cls

    def embed_records_or_die(self, start, records):
        _die_once("kill_shard_at_row", start)
        return embed_records(self, start, records)

    def predict_qa_or_die(model, records, **kw):
        _die_once("kill_part_at_id", records[0].id)
        return predict_qa(model, records, **kw)

    def predict_cls_or_die(model, records, **kw):
        _die_once("kill_part_at_id", records[0].id)
        return predict_cls(model, records, **kw)

    windows.WindowEmbedder.embed_records = embed_records_or_die
    qa.predict_qa, cls.predict_cls = predict_qa_or_die, predict_cls_or_die

    from lookalike.analysis import distributed

    search_block = distributed.search_block

    def search_block_or_die(store_path, lo, *args, **kw):
        _die_once("kill_knn_block_at", lo)
        return search_block(store_path, lo, *args, **kw)

    distributed.search_block = search_block_or_die
