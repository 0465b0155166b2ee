"""An offline masked-LM for BERT-Attack: the packaged encoder with a masked-LM head fitted on local text.

BERT-Attack draws its word substitutions from a masked-LM (the paper: bert-base-uncased, which needs the hub).
The packaged all-MiniLM-L6-v2 ships no MLM head, and a head that is not trained predicts noise (fill-mask
accuracy 0 on held-out words). Here the head is fitted (BERT's: dense + GELU + LayerNorm, the decoder tied to
the word embeddings, an output bias) with the encoder frozen, on masked tokens of a local corpus (BERT's
15% with 80/10/10 mask/random/keep), and its quality is measured on held-out text as fill-mask top-K
accuracy: the fraction of masked words whose original token is among the head's K best. The encoder's
states come from the engine's ONNX export, so fitting needs one pass of the encoder per masking.

The result is an ordinary Hugging Face BertForMaskedLM folder (`--mlm PATH`) with `lookalike-mlm.json`
recording how it was made and how good it is.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import CorpusSpec
from .engine import OnnxModel
from .errors import InputError, ModelError
from .exporters import export
from .files import load_json
from .finetune import hf_folder_names
from .models import model_label
from .outputs import OwnedFolder
from .core import pretrained

log = logging.getLogger(__name__)

REPORT = "lookalike-mlm.json"
KS = (1, 10, 48)


def _masked_batches(tokenizer, texts: list[str], rng, max_length: int, rate: float, bert_mix: bool, batch: int = 32):
    """(input_ids, attention_mask, token_type_ids, labels) numpy batches with `rate` of the tokens masked."""
    special = np.array(sorted(set(tokenizer.all_special_ids)))
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        am = enc["attention_mask"].astype(np.int64)
        labels = np.full_like(ids, -100)
        sel = (am == 1) & ~np.isin(ids, special) & (rng.random(ids.shape) < rate)
        labels[sel] = ids[sel]
        r = rng.random(ids.shape)
        if bert_mix:  # BERT's 80/10/10: BERT-Attack also reads the head at unmasked positions
            ids[sel & (r < 0.8)] = tokenizer.mask_token_id
            rnd = sel & (r >= 0.8) & (r < 0.9)
            ids[rnd] = rng.integers(1000, tokenizer.vocab_size, size=int(rnd.sum()))
        else:
            ids[sel] = tokenizer.mask_token_id
        tt = enc.get("token_type_ids")
        yield ids, am, (tt.astype(np.int64) if tt is not None else np.zeros_like(ids)), labels


def _states(encoder, tokenizer, texts, rng, max_length, rate, bert_mix):
    """The frozen encoder's last-layer states at the masked positions, and the tokens they hide."""
    hs, ys = [], []
    for ids, am, tt, labels in _masked_batches(tokenizer, texts, rng, max_length, rate, bert_mix):
        (h,) = encoder.run(["last_hidden_state"], ids, am, tt)
        m = labels != -100
        hs.append(h[m])
        ys.append(labels[m])
    return np.concatenate(hs), np.concatenate(ys)


def fill_mask_accuracy(head, states: np.ndarray, labels: np.ndarray, ks=KS, block: int = 2048) -> dict:
    """Fraction of masked positions whose original token is among the head's top-k, for each k."""
    import torch

    hits = {k: 0 for k in ks}
    with torch.no_grad():
        for i in range(0, len(labels), block):
            top = head(torch.from_numpy(states[i:i + block])).topk(max(ks), dim=-1).indices.numpy()
            y = labels[i:i + block, None]
            for k in ks:
                hits[k] += int((top[:, :k] == y).any(1).sum())
    return {f"top{k}": hits[k] / max(len(labels), 1) for k in ks}


def _texts(corpus: CorpusSpec, limit: int | None) -> list[str]:
    texts = [r.text if not r.text_pair else f"{r.text} {r.text_pair}" for r in corpus.records()]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError("no text to fit a masked-LM head on", path=corpus.path)
    return texts[:limit] if limit else texts


def fit_mlm_head(base: str | Path, corpus: CorpusSpec | str | Path, out: str | Path, *,
                 eval_corpus: CorpusSpec | str | Path | None = None, max_length: int = 128, passes: int = 1,
                 epochs: int = 3, lr: float = 2e-3, batch: int = 256, limit: int | None = None,
                 eval_limit: int | None = 300, seed: int = 0) -> dict:
    """Fit `base`'s masked-LM head on `corpus` (encoder frozen); write a BertForMaskedLM folder to `out`.

    eval_corpus: held-out text for the fill-mask accuracy (the head never sees it). Returns the report.
    """

    import torch
    import transformers

    t0 = time.perf_counter()
    out = Path(out)
    folder = OwnedFolder(out)
    folder.claim(REPORT)  # refused before any work when a name holds a user's file
    corpus = CorpusSpec.coerce(corpus)
    train = _texts(corpus, limit)
    held = _texts(CorpusSpec.coerce(eval_corpus), eval_limit) if eval_corpus is not None else None
    torch.manual_seed(seed)
    transformers.logging.set_verbosity_error()
    try:
        tok = pretrained.tokenizer(base)
        mlm = pretrained.load(transformers.BertForMaskedLM, base)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{base}: cannot load a BERT encoder for a masked-LM head ({str(exc)[:200]})") from exc
    mlm.eval()
    folder.claim(REPORT, *hf_folder_names(mlm, tok))  # before fitting: a user's file at a name is refused now
    with tempfile.TemporaryDirectory() as tmp:
        export(str(base), Path(tmp) / "enc")
        encoder = OnnxModel(Path(tmp) / "enc", device="cpu")
        rng = np.random.default_rng(seed)
        parts = [_states(encoder, tok, train, rng, max_length, 0.15, True) for _ in range(passes)]
        xs, ys = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        held_xy = _states(encoder, tok, held, np.random.default_rng(seed + 1), max_length, 0.15, False) if held else None
    head = mlm.cls.predictions
    with torch.no_grad():  # start from the identity transform: the untrained baseline, measured below
        head.transform.dense.weight.copy_(torch.eye(head.transform.dense.weight.shape[0]))
        head.transform.dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.zero_()
    baseline = fill_mask_accuracy(head, *held_xy) if held_xy else None
    for p in mlm.parameters():
        p.requires_grad_(False)
    trained = [head.transform.dense.weight, head.transform.dense.bias, head.transform.LayerNorm.weight,
               head.transform.LayerNorm.bias, head.bias]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=lr)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        losses.append(round(total / len(y), 4))
    for p in trained:
        p.requires_grad_(False)
    with tempfile.TemporaryDirectory(prefix=".final-", dir=out) as tmp:  # written beside, then moved in by name
        mlm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        folder.move_in(tmp)
    report = {"kind": "lookalike.mlm", "base": str(base), "method": "MLM head fitted, encoder frozen (decoder tied "
              "to the word embeddings); 15% of tokens, 80/10/10 mask/random/keep",
              "fit_corpus": corpus.as_dict(), "fit_fingerprint": corpus.fingerprint(), "fit_texts": len(train),
              "fit_positions": int(len(y)), "epochs": epochs, "loss_per_epoch": losses, "max_length": max_length,
              "eval_corpus": CorpusSpec.coerce(eval_corpus).as_dict() if eval_corpus is not None else None,
              "eval_positions": int(len(held_xy[1])) if held_xy else 0,
              "fill_mask_accuracy": fill_mask_accuracy(head, *held_xy) if held_xy else None,
              "untrained_head_accuracy": baseline, "seconds": round(time.perf_counter() - t0, 1)}
    folder.write_json(REPORT, report)
    return report


def describe(mlm: str | Path) -> str:
    """One line naming the attack MLM and, for a fitted head, its measured quality."""
    p = Path(mlm)
    if not (p / REPORT).exists():
        return f"MLM {mlm}"
    r = load_json(p / REPORT)
    acc = r.get("fill_mask_accuracy") or {}
    base = r.get("untrained_head_accuracy") or {}
    fit = r["fit_corpus"].get("path", "")

    return (f"MLM: {model_label(r['base'])} with a masked-LM head fitted on {r['fit_texts']} "
            f"texts of {Path(fit).name} (encoder frozen), an offline stand-in for bert-base-uncased; fill-mask "
            f"accuracy on {r['eval_positions']} held-out masked words: top-1 {acc.get('top1', 0):.1%}, top-10 "
            f"{acc.get('top10', 0):.1%}, top-48 {acc.get('top48', 0):.1%} (the untrained head: top-48 "
            f"{base.get('top48', 0):.1%})")
