"""BERT-Attack (Li et al., EMNLP 2020) from TextAttack's components, against ONNX classification exports.

As TextAttack's `BERTAttackLi2020` recipe: `WordSwapMaskedLM(method="bert-attack", max_candidates=K)`,
`RepeatModification`, `StopwordModification`, `MaxWordsPerturbed(max_percent=0.4)`, a sentence-similarity
constraint (threshold 0.2, cosine, against the original, whole text), `UntargetedClassification`, and
`GreedyWordSwapWIR(wir_method="unk")`.

Two knobs named "K" exist. TextAttack's (and the BERT-Attack code's `--k`) is the number of MLM candidates per
word: `max_candidates` (48 in the recipe). The paper being reproduced says it set "K to 3" while describing K
as the number of top important words: `top_words` limits the greedy search to the N most important words.
Both are recorded in every output. Offline, the Universal Sentence Encoder (TF-Hub) is replaced by default
with cosine similarity of a local encoder run through lookalike's engine (same threshold semantics); pass
`similarity="use"` to use the original where TF-Hub is reachable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .core.manifest import labels as manifest_labels
from .core.heads import label_index
from .data import CorpusSpec, Record
from .engine import OnnxModel
from .engine.batching import run_batched, tokenize
from .errors import InputError, ModelError
from .files import WriterLock, progress_bar
from .models import resolve_model
from .outputs import OwnedFolder, guard_settings
from .params import AttackParams
from .core import pretrained

log = logging.getLogger(__name__)

NLTK_DATA = Path(__file__).resolve().parent / "nltk_data"


def _private(root: Path) -> bool:
    """Whether NLTK trusts `root` as a data root: it and everything under it owned by this user (or root) and
    writable by nobody else (NLTK refuses others as planted data)."""
    import stat

    for p in (root, *root.rglob("*")):
        st = p.stat()
        if st.st_uid not in (os.geteuid(), 0) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def nltk_root() -> Path:
    """The stopwords corpus as NLTK will read it: the packaged copy, or, when the install is group- or
    world-writable (a umask-002 install, an unpacked archive), a private copy of it in lookalike's cache, which
    NLTK would otherwise refuse and report as a missing resource."""
    if _private(NLTK_DATA):
        return NLTK_DATA
    import shutil

    from .files import cache_dir, sha256_file

    digest = sha256_file(NLTK_DATA / "corpora" / "stopwords" / "english")[:12]
    dst = cache_dir() / f"nltk_data-{digest}"
    if not (dst.is_dir() and _private(dst)):
        tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(NLTK_DATA, tmp)
        for p in (tmp, *tmp.rglob("*")):
            p.chmod(0o700 if p.is_dir() else 0o600)
        if dst.exists():  # lookalike's own earlier copy, not private any more
            shutil.rmtree(dst)
        tmp.replace(dst)
        log.info("%s is writable by other accounts, which NLTK refuses; reading a private copy in %s", NLTK_DATA,
                 dst)
    return dst


def _prepare_textattack():
    """Import textattack offline: our stopwords corpus on NLTK_DATA, no download attempts."""
    root = str(nltk_root())
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([root, *paths])
    import nltk

    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    _orig = nltk.download
    nltk.download = lambda *a, **k: False  # textattack tries at first import; offline it only prints errors
    try:
        import textattack  # noqa: F401
    finally:
        nltk.download = _orig
    from textattack.shared import logger as ta_logger

    if not any(getattr(f, "lookalike", False) for f in ta_logger.filters):
        # TextAttack cannot know lookalike's ONNX wrapper and warns on every attack that it is "Unknown if model
        # ... compatible": known noise (the wrapper is a classifier, the goal function's kind), kept out
        def known_noise(record) -> bool:
            return not record.getMessage().startswith("Unknown if model")

        known_noise.lookalike = True
        ta_logger.addFilter(known_noise)
    return textattack


def make_wrapper(model, max_length: int = 512, batch_tokens: int = 2048):
    """A TextAttack ModelWrapper that batches queries through ONNX Runtime and counts them."""
    from textattack.models.wrappers import ModelWrapper

    class OnnxClassifier(ModelWrapper):
        def __init__(self):
            self.model = model
            self.queries = 0

        def __call__(self, text_input_list):
            recs = [Record(str(i), t) for i, t in enumerate(text_input_list)]
            enc = tokenize(model.tokenizer, recs, model.clamp(max_length))
            (logits,) = run_batched(model, enc, ["logits"], batch_tokens)
            self.queries += len(recs)
            return np.stack(logits).astype(np.float32)

        def get_grad(self, text_input):  # pragma: no cover - BERT-Attack needs no gradients
            raise NotImplementedError("ONNX targets have no gradients")

    return OnnxClassifier()


def make_similarity(kind: str, threshold: float, encoder_dir: str | Path | None, device: str):
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder, UniversalSentenceEncoder

    if kind == "use":
        return UniversalSentenceEncoder(threshold=threshold, metric="cosine", compare_against_original=True,
                                        window_size=None)
    if kind == "none":
        return None

    enc_model = OnnxModel(encoder_dir, task="feature-extraction", device=device)

    class EngineSentenceEncoder(SentenceEncoder):
        """USE's role, played by a local encoder through lookalike's engine (mean pooling, cosine)."""

        def __init__(self):
            super().__init__(threshold=threshold, metric="cosine", compare_against_original=True, window_size=None)

        def encode(self, sentences):
            recs = [Record(str(i), s) for i, s in enumerate(sentences)]
            enc = tokenize(enc_model.tokenizer, recs, enc_model.clamp(256))
            (vecs,) = run_batched(enc_model, enc, ["mean"], 2048)
            import torch

            return torch.tensor(np.stack(vecs))

    return EngineSentenceEncoder()


def top_subword_combinations(logprobs, candidates, k: int) -> list[tuple[tuple[int, ...], float]]:
    """The k best token combinations for a word split into L sub-words, best first, exactly.

    logprobs: L x V log-softmax of the MLM at the word's positions; candidates: L x K token ids per position.
    BERT-Attack ranks a combination by perplexity exp(mean_i CE_i), i.e. by the sum of per-position
    log-probabilities, which is additive over positions: keeping the k best prefixes after each position is
    exact (a top-k combination's prefix is a top-k prefix). O(L k K) instead of K^L.
    """
    import numpy as np

    beam: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for pos in range(len(candidates)):
        ids = [int(t) for t in candidates[pos]]
        lp = [float(logprobs[pos][t]) for t in ids]
        merged = [(score + lp[j], prefix + (ids[j],)) for score, prefix in beam for j in range(len(ids))]
        merged.sort(key=lambda x: (-x[0], x[1]))
        beam = merged[:k]
    n = max(len(candidates), 1)
    return [(combo, float(np.exp(-score / n))) for score, combo in beam]


def _subword_beam_swap(WordSwapMaskedLM):
    """TextAttack's BERT-Attack swap with the multi-sub-word branch made tractable and ranked.

    TextAttack 0.3.11 scores all K^L products of per-position candidates in a Python loop (K=48: 2,304 for a
    2-piece word, 110,592 for 3, 5.3M for 4: an attack can stall for hours on one long word) and then discards
    its perplexity sort (`sorted(...)` without assignment), keeping the first K in product order. Here the
    K lowest-perplexity combinations are found exactly with `top_subword_combinations` and returned in
    perplexity order, as BERT-Attack describes. Single-sub-word words are unchanged.
    """
    import torch
    from textattack.shared import utils

    class SubwordBeamWordSwapMaskedLM(WordSwapMaskedLM):
        def _bert_attack_replacement_words(self, current_text, index, id_preds, masked_lm_logits):
            masked_text = current_text.replace_word_at_index(index, self._lm_tokenizer.mask_token)
            current_ids = self._encode_text(masked_text.text)["input_ids"].tolist()[0]
            word_tokens = self._lm_tokenizer.encode(current_text.words[index], add_special_tokens=False)
            try:
                masked_index = current_ids.index(self._lm_tokenizer.mask_token_id)
            except ValueError:
                return []
            target = list(range(masked_index, min(masked_index + len(word_tokens), self.max_length)))
            if len(target) <= 1:
                return super()._bert_attack_replacement_words(current_text, index, id_preds, masked_lm_logits)
            logprobs = torch.log_softmax(masked_lm_logits[target].float(), dim=-1)
            words = []
            # a wider beam than K, since combinations that do not form one word are dropped afterwards
            for combo, _ppl in top_subword_combinations(logprobs, id_preds[target], 4 * self.max_candidates):
                word = "".join(self._lm_tokenizer.convert_ids_to_tokens(list(combo))).replace("##", "")
                if utils.is_one_word(word):
                    words.append(word)
                if len(words) == self.max_candidates:
                    break
            return words

    return SubwordBeamWordSwapMaskedLM


def build_attack(wrapper, mlm: str, *, max_candidates: int = 48, top_words: int | None = None,
                 max_percent: float = 0.4, similarity=None):
    """The BERTAttackLi2020 recipe with the target wrapper, an MLM folder/hub id and the two K knobs."""
    import transformers
    from textattack import Attack
    from textattack.constraints.overlap import MaxWordsPerturbed
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwapMaskedLM

    try:
        tok = pretrained.tokenizer(mlm)
        net = pretrained.load(transformers.AutoModelForMaskedLM, mlm)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{mlm}: cannot load a masked-LM and its tokenizer ({str(exc)[:200]})") from exc
    if len(tok) != net.config.vocab_size and tok.vocab_size != net.config.vocab_size:
        raise ModelError(f"{mlm}: the MLM's vocabulary ({net.config.vocab_size}) differs from its tokenizer's "
                         f"({len(tok)}); pair the model with its own tokenizer")
    net.eval()
    transformation = _subword_beam_swap(WordSwapMaskedLM)(method="bert-attack", masked_language_model=net,
                                                          tokenizer=tok, max_candidates=max_candidates)
    constraints = [RepeatModification(), StopwordModification(), MaxWordsPerturbed(max_percent=max_percent)]
    if similarity is not None:
        constraints.append(similarity)
    goal = UntargetedClassification(wrapper)

    class TopWordsWIR(GreedyWordSwapWIR):
        """Greedy word-importance search restricted to the `top_words` most important words."""

        def _get_index_order(self, initial_text, max_len=-1):
            order, search_over = super()._get_index_order(initial_text)
            if top_words is not None:
                order = order[:top_words]
            return order, search_over

    search = TopWordsWIR(wir_method="unk")
    return Attack(goal, constraints, transformation, search)


def _load_done(path: Path) -> dict[str, dict]:
    """Finished lines of an earlier run; a torn last line (crash mid-write) is cut off."""
    done = {}
    if not path.exists():
        return done
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[row["id"]] = row
        good += len(line)
    if good != len(data):
        log.warning("%s: dropping a torn last line from an interrupted run", path)
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def cut_to_model_input(text: str, tokenizer, max_length: int) -> str:
    """The longest prefix of whole words that the target reads within `max_length` tokens (special tokens
    included). Words past the truncation cannot change the prediction, but each costs the word-importance search
    a query, so the attack runs on what the model sees."""
    words = text.split(" ")
    if len(tokenizer(text, truncation=False)["input_ids"]) <= max_length:
        return text
    lo, hi = 1, len(words)  # the largest n with len(tokens(words[:n])) <= max_length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer(" ".join(words[:mid]), truncation=False)["input_ids"]) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def select_examples(records: list[Record], n: int | None, seed: int) -> list[Record]:
    """The same examples for every target: the first n when n >= len, else a seeded sample kept in file order."""
    if n is None or n >= len(records):
        return records
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(records), size=n, replace=False))
    return [records[i] for i in keep]


def summarize(rows: list[dict], setting: dict) -> dict:
    n = len(rows)
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    orig_acc = (n - len(skipped)) / n if n else 0.0
    after = len(failed) / n if n else 0.0
    attacked = succeeded + failed
    return {
        "n": n, "succeeded": len(succeeded), "failed": len(failed), "skipped": len(skipped),
        "original_accuracy": orig_acc, "accuracy_after_attack": after, "absolute_change": orig_acc - after,
        "percent_change": 100.0 * (orig_acc - after) / orig_acc if orig_acc else 0.0,
        "attack_success_rate": len(succeeded) / len(attacked) if attacked else 0.0,
        "avg_perturbed_words_pct": float(np.mean([r["perturbed_words_pct"] for r in succeeded])) if succeeded else 0.0,
        "avg_queries": float(np.mean([r["queries"] for r in attacked])) if attacked else 0.0,
        "setting": setting_text(setting), **{f"setting_{k}": v for k, v in setting.items()},
    }


def setting_text(s: dict) -> str:
    sim = {"engine": f"cosine of a local encoder via lookalike's engine ({s.get('similarity_model')}) instead of USE",
           "use": "Universal Sentence Encoder (TF-Hub)", "none": "no sentence-similarity constraint"}[s["similarity"]]
    words = f"top {s['top_words']} important words" if s.get("top_words") else "all words (recipe default)"
    return (f"BERT-Attack (TextAttack BERTAttackLi2020 components), MLM {s['mlm']}, {s['max_candidates']} MLM candidates "
            f"per word, search over {words}, max {int(100 * s['max_percent'])}% words perturbed, similarity: {sim} "
            f"(threshold {s['similarity_threshold']}), multi-sub-word candidates: "
            f"{s.get('subword_candidates', 'TextAttack product order')}, n={s['n']}, seed {s['seed']}"
            + (f", examples {s['examples']}" if s.get("examples") else "") + ".")


def run_attack(target_dir: str | Path, corpus: CorpusSpec | str | Path, out: str | Path,
               params: AttackParams | None = None, *, similarity_model: str | Path | None = None,
               device: str = "auto", progress: bool = False) -> dict:
    """Attack the classification export `target_dir` on `corpus`; JSONL per example (resumable) + summary.json."""
    p = params or AttackParams()
    pretrained.refuse_custom_code(resolve_model(p.mlm))  # at the door, before any work
    corpus = CorpusSpec.coerce(corpus).for_labels()
    model = OnnxModel(target_dir, task="text-classification", device=device)
    labels = manifest_labels(model.manifest)
    records = list(corpus.records())
    gold = {}
    for r in records:
        if r.label is None:
            raise InputError("record has no label", path=corpus.path, record=f"record {r.id}", field="label")
        gold[r.id] = label_index(r.label, labels, f"record {r.id}", corpus.path)
    examples = [dataclasses.replace(r, text=cut_to_model_input(r.text, model.tokenizer,
                                                               model.clamp(p.max_length)))
                for r in select_examples(records, p.n, p.seed)]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; give a folder for the attack results", path=out)
    folder = OwnedFolder(out)
    folder.claim("setting.json", "results.jsonl", "summary.json", what="attack file")
    with WriterLock(out):
        sim_dir = similarity_encoder(similarity_model, out) if p.similarity == "engine" else None
        setting = {"mlm": str(p.mlm), "max_candidates": p.max_candidates, "top_words": p.top_words,
                   "max_percent": p.max_percent, "similarity": p.similarity,
                   "similarity_threshold": p.similarity_threshold,
                   "similarity_model": str(sim_dir) if sim_dir else None, "n": len(examples), "seed": p.seed,
                   "target": str(target_dir), "target_sha256": model.sha256, "data": corpus.path,
                   "data_fingerprint": corpus.fingerprint(), "subword_candidates": "exact top-K by perplexity (beam)",
                   "examples": f"cut to the words the target reads ({model.clamp(p.max_length)} tokens)"}
        guard_settings(folder, "setting.json", setting, "an attack")
        return _attack_all(model, examples, gold, folder, setting, p, sim_dir, device, progress)


def similarity_encoder(similarity_model, out: Path) -> Path:
    """The encoder whose cosine plays USE's role: the one given; else one shared export of the packaged MiniLM in
    $LOOKALIKE_CACHE/exports (keyed by content: every attack folder reuses it, instead of an 88 MB copy each). An
    attack folder begun with its own copy (`similarity-encoder/`, before the shared one) keeps using it, so it
    resumes with the settings it recorded."""
    if similarity_model:
        return Path(similarity_model)
    legacy = Path(out) / "similarity-encoder"
    if (legacy / "lookalike.json").is_file():
        return legacy
    from .engine.sources import export_for

    return export_for("minilm")


def _attack_all(model, examples, gold, folder: OwnedFolder, setting: dict, p: AttackParams, sim_dir, device, progress) -> dict:
    _prepare_textattack()
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

    wrapper = make_wrapper(model, p.max_length)
    sim = make_similarity(p.similarity, p.similarity_threshold, sim_dir, device)
    attack = build_attack(wrapper, resolve_model(p.mlm), max_candidates=p.max_candidates, top_words=p.top_words,
                          max_percent=p.max_percent, similarity=sim)
    results_path = folder.folder / "results.jsonl"
    done = _load_done(results_path)
    todo = [r for r in examples if r.id not in done]
    if done:
        log.info("resuming: %d of %d examples already attacked", len(done), len(examples))
    bar = progress_bar(progress, total=len(examples), initial=len(examples) - len(todo), unit="ex", desc="attack")
    t0 = time.perf_counter()
    with folder.appending("results.jsonl") as fh:
        for r in todo:
            res = attack.attack(r.text, gold[r.id])
            orig, pert = res.original_result, res.perturbed_result
            status = ("succeeded" if isinstance(res, SuccessfulAttackResult) else
                      "skipped" if isinstance(res, SkippedAttackResult) else
                      "failed" if isinstance(res, FailedAttackResult) else "failed")
            modified = sorted(pert.attacked_text.attack_attrs.get("modified_indices", []))
            n_words = max(len(orig.attacked_text.words), 1)
            row = {"id": r.id, "status": status, "label": gold[r.id],
                   "original_prediction": int(orig.output), "perturbed_prediction": int(pert.output),
                   "queries": int(pert.num_queries), "words_perturbed": len(modified),
                   "perturbed_words_pct": 100.0 * len(modified) / n_words, "modified_indices": modified,
                   "original_text": orig.attacked_text.text, "perturbed_text": pert.attacked_text.text}
            fh.write(json.dumps(row) + "\n")
            done[r.id] = row
            bar.update(1)
    bar.close()
    rows = [done[r.id] for r in examples]
    summary = summarize(rows, setting)
    summary["seconds_this_run"] = round(time.perf_counter() - t0, 2)
    summary["attacked_this_run"] = len(todo)
    summary["target_queries_this_run"] = wrapper.queries
    summary["queries_per_s"] = wrapper.queries / summary["seconds_this_run"] if summary["seconds_this_run"] else None
    folder.write_json("summary.json", summary)
    return summary
