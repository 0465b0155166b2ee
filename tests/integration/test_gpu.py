"""On a CUDA device (deselected where ONNX Runtime has no CUDA provider): the engine's vectors on the GPU are the
CPU's, for the fp32 export and its store, and the session really runs on CUDA."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = ["a short text", "a somewhat longer text about shards and stores", ("x " * 200).strip(), "the last one"]


@pytest.mark.gpu
def test_cuda_vectors_equal_the_cpus(minilm_export, tmp_path):
    from lookalike import Embedder
    from lookalike.core.store import open_store
    from lookalike.engine import embed

    gpu = Embedder(minilm_export, device="cuda")
    assert gpu.model.session.get_providers()[0] == "CUDAExecutionProvider"
    a = Embedder(minilm_export, device="cpu").encode(TEXTS)
    b = gpu.encode(TEXTS)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.9999, cos
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    embed(minilm_export, corpus, tmp_path / "s", device="cuda", progress=False)
    stored = np.concatenate([blk for _, blk in open_store(tmp_path / "s").iter_blocks()])
    assert np.allclose(stored, b, atol=1e-4)
