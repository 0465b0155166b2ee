"""The packaged MiniLM and its int8, fp16 and layer-dropped variants, exported and checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from support import _feeds, _ort

from lookalike.exporters import export, load_manifest

TEXTS = ["hello world", "a considerably longer sentence about compressed models and their large teachers", "x"]


@pytest.mark.slow
def test_minilm_family(minilm_dir, minilm_export, tmp_path):
    fp32 = load_manifest(minilm_export)
    assert fp32["parity"]["max_abs_diff"] < 1e-4 and fp32["hidden_size"] == 384 and fp32["num_layers"] == 6
    int8 = export(str(minilm_dir), tmp_path / "int8", quantize="int8", per_channel=True)
    assert int8["file_size"] < fp32["file_size"] / 3
    assert int8["variant_parity"]["mean_cosine_cls"] > 0.95
    st = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_export)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = st(**enc).last_hidden_state[:, 0].numpy()
    sess = _ort(minilm_export)
    np.testing.assert_allclose(sess.run(["cls"], _feeds(sess, enc))[0], ref, atol=1e-4)
