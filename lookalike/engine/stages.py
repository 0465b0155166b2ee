"""One bounded-queue stage runner: each stage in its own thread, linked by queues of a fixed depth.

`staged(source, f, g)` yields g(f(x)) for every x of `source`, in order, while reading x+2, applying f to
x+1 and g to x overlap (ONNX Runtime and the Rust tokenizer release the GIL, so they run in parallel).
Memory is bounded by `depth` items per queue. An exception in any stage is raised in the caller; closing
the generator (or an exception in the caller's loop) stops every thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def staged(source: Iterable, *stages: Callable, depth: int = 2, name: str = "lookalike") -> Iterator:
    """Yield the last stage's output for every item of `source`, in source order (see module docstring)."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    stop = threading.Event()
    queues = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

    def feed():
        try:
            for item in source:
                if not _put(queues[0], item, stop):
                    return
            _put(queues[0], _DONE, stop)
        except BaseException as exc:
            _put(queues[0], _Failed(exc), stop)

    def run(i: int, fn: Callable):
        q_in, q_out = queues[i], queues[i + 1]
        while True:
            item = _get(q_in, stop)
            if item is _DONE or isinstance(item, _Failed):
                _put(q_out, item, stop)
                return
            try:
                out = fn(item)
            except BaseException as exc:
                _put(q_out, _Failed(exc), stop)
                return
            if not _put(q_out, out, stop):
                return

    threads = [threading.Thread(target=feed, name=f"{name}-source", daemon=True)]
    threads += [threading.Thread(target=run, args=(i, fn), name=f"{name}-stage{i + 1}", daemon=True)
                for i, fn in enumerate(stages)]
    for t in threads:
        t.start()
    try:
        while True:
            item = _get(queues[-1], stop)
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
