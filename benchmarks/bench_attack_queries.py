"""Target query throughput during attacks: lookalike's batched ONNX wrapper vs TextAttack's PyTorch wrapper.

Same model (packaged MiniLM with a classification head), same texts (IMDB reviews, 256 tokens), same query
batches as GreedyWordSwapWIR sends them (TextAttack's default model batch size 32). Results:
benchmarks/results/attack-queries-cpu.json.

    python benchmarks/bench_attack_queries.py [--n 256]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from _common import SHARED, Timer, save, work_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import torch
    import transformers

    from lookalike.attack import _prepare_textattack, make_wrapper
    from lookalike.data import read_corpus
    from lookalike.engine import OnnxModel
    from lookalike.exporters import export
    from lookalike.models import minilm_path

    torch.set_num_threads(os.cpu_count() or 1)
    texts = [r.text for r in read_corpus(SHARED / "imdb" / "imdb_1k.tsv", limit=args.n)]
    work = work_dir("lookalike-attackq-")
    net = transformers.AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    tok.model_max_length = 256
    net.save_pretrained(work / "hf")
    tok.save_pretrained(work / "hf")
    export(str(work / "hf"), work / "onnx", "text-classification")
    export(str(work / "hf"), work / "onnx-int8", "text-classification", quantize="int8", per_channel=True)
    _prepare_textattack()
    from textattack.models.wrappers import HuggingFaceModelWrapper

    runs = {}
    torch_wrapper = HuggingFaceModelWrapper(net.eval(), tok)
    for name, wrapper in (("textattack_pytorch", torch_wrapper),
                          ("lookalike_onnx_fp32", make_wrapper(OnnxModel(work / "onnx"), max_length=256)),
                          ("lookalike_onnx_int8", make_wrapper(OnnxModel(work / "onnx-int8"), max_length=256))):
        wrapper(texts[: args.batch])  # warm-up
        with Timer() as t, torch.inference_mode():
            for i in range(0, len(texts), args.batch):
                wrapper(texts[i:i + args.batch])
        runs[name] = {"seconds": t.seconds, "queries_per_s": len(texts) / t.seconds}
        print(name, runs[name])
    base = runs["textattack_pytorch"]["queries_per_s"]
    ratios = {f"{k}_vs_textattack_pytorch": v["queries_per_s"] / base for k, v in runs.items() if k != "textattack_pytorch"}
    print(ratios)
    save("attack-queries-cpu", {"n_queries": len(texts), "batch": args.batch, "max_length": 256, "runs": runs,
                                "ratios": ratios})


if __name__ == "__main__":
    main()
