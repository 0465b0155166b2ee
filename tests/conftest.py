"""Shared fixtures: tiny random BERT-family models with the real MiniLM WordPiece vocabulary, the packaged
MiniLM itself, and the real dataset samples in ../shared/data. Nothing here touches the network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# shared caches (token caches, fitted MLM heads) go to a private folder, never the user's ~/.cache
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

os.environ["LOOKALIKE_CACHE"] = tempfile.mkdtemp(prefix="lookalike-test-cache-")


def _remove_cache(folder: str = os.environ["LOOKALIKE_CACHE"], pid: int = os.getpid()) -> None:
    """The test cache goes with the process that made it (not with a forked child), so runs leave nothing in /tmp."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_remove_cache)


def pytest_sessionfinish(session, exitstatus):
    """Also at the session's end: a process that ends with os._exit (a forked mutation-testing child that imported
    this file itself) runs no atexit handlers, and left one folder per run (thousands, under mutmut)."""
    _remove_cache()

import pytest
from hypothesis import HealthCheck, settings

from lookalike.models import minilm_path

# One hypothesis profile for the whole suite, loaded here, before any test module is imported (a module's @given
# and @settings read the profile in force when they are decorated). "ci": derandomized and without the
# timing health checks, which a loaded 2-core machine trips; HYPOTHESIS_PROFILE=explore searches further.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("explore", max_examples=2000, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_ROOT = Path(__file__).resolve().parents[1]
# LOOKALIKE_SHARED_DATA if set, else ../shared/data beside the checkout, else shared/data inside it
_CANDIDATES = [Path(os.environ["LOOKALIKE_SHARED_DATA"])] if os.environ.get("LOOKALIKE_SHARED_DATA") else []
_CANDIDATES += [_ROOT.parent / "shared" / "data", _ROOT / "shared" / "data"]
SHARED = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])


def pytest_collection_modifyitems(config, items):
    """GPU tests run where onnxruntime has a CUDA provider and are deselected elsewhere (not skipped)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    gpu = [i for i in items if i.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [i for i in items if not i.get_closest_marker("gpu")]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.fail(f"real dataset samples not found at {SHARED} (set LOOKALIKE_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_path()


def build_tiny(out: Path, kind: str, *, layers: int = 2, hidden: int = 32, family: str = "bert", seed: int = 0,
               num_labels: int = 2, init_range: float = 0.02) -> Path:
    """A random-weight model of the given head with the real MiniLM WordPiece tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    if family == "bert":
        cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=2, intermediate_size=hidden * 2,
                                      max_position_embeddings=512)
    else:
        cfg = transformers.DistilBertConfig(vocab_size=tok.vocab_size, dim=hidden, n_layers=layers, n_heads=2,
                                            hidden_dim=hidden * 2, max_position_embeddings=512)
    cfg.initializer_range = init_range
    if kind == "text-classification":
        cfg.num_labels = num_labels
        cfg.id2label = {0: "negative", 1: "positive"} if num_labels == 2 else {i: f"L{i}" for i in range(num_labels)}
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    cls = {"feature-extraction": transformers.AutoModel,
           "question-answering": transformers.AutoModelForQuestionAnswering,
           "text-classification": transformers.AutoModelForSequenceClassification,
           "fill-mask": transformers.AutoModelForMaskedLM}[kind]
    model = cls.from_config(cfg)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{name: HF folder} for tiny random models: encoders of 2 and 4 layers, QA, classifier, MLM, DistilBERT."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "bert2": build_tiny(root / "bert2", "feature-extraction", layers=2, hidden=32, seed=1),
        "bert4": build_tiny(root / "bert4", "feature-extraction", layers=4, hidden=64, seed=2),
        "qa": build_tiny(root / "qa", "question-answering", layers=2, hidden=32, seed=3),
        # a wide initialisation makes the random classifier's output depend on the words (attack tests)
        "cls": build_tiny(root / "cls", "text-classification", layers=2, hidden=32, seed=4, init_range=0.5),
        "mlm": build_tiny(root / "mlm", "fill-mask", layers=2, hidden=32, seed=5),
        "distil": build_tiny(root / "distil", "feature-extraction", layers=3, hidden=32, family="distilbert", seed=6),
    }


@pytest.fixture(scope="session")
def tiny_exports(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """ONNX exports of the tiny models (feature-extraction, QA, classification)."""
    from lookalike.exporters import export

    root = tmp_path_factory.mktemp("tiny-exports")
    out = {}
    for name, task in (("bert2", "feature-extraction"), ("bert4", "feature-extraction"),
                       ("qa", "question-answering"), ("cls", "text-classification")):
        export(str(tiny_models[name]), root / name, task)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def minilm_export(minilm_dir, tmp_path_factory) -> Path:
    from lookalike.exporters import export

    out = tmp_path_factory.mktemp("minilm") / "fp32"
    export(str(minilm_dir), out, "feature-extraction")
    return out
