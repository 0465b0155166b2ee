"""One ONNX Runtime session per export, with the device picked inside (CUDA when present, CPU otherwise)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..exporters.manifest import load_manifest
from .tokenizer import load_engine_tokenizer

log = logging.getLogger(__name__)


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


_PRELOADED = False


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (onnxruntime-gpu >= 1.21) so a pip-only CUDA works."""
    global _PRELOADED
    if _PRELOADED or not hasattr(ort, "preload_dlls"):
        return
    _PRELOADED = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # system CUDA may still be found by the loader; the session will say if not
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


def available_devices() -> list[str]:
    import onnxruntime as ort

    devices = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        devices.append("cuda")
    return devices


def resolve_device(device: str = "auto") -> str:
    have = available_devices()
    if device == "auto":
        return "cuda" if "cuda" in have else "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r} (cpu, cuda or auto)")
    if device not in have:
        raise ModelError("device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider "
                         "(pip install -e \".[gpu]\" from lookalike's checkout, on a machine with CUDA 13 and cuDNN 9)")
    return device


def session_setup(device: str, threads: int | None = None):
    """(SessionOptions, providers, disabled optimizers) for an engine session on `device` ("cpu" or "cuda")."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        _preload_cuda_libraries(ort)
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    # CPU: ORT's session-level SkipLayerNormFusion turns Add+Add+LayerNormalization into its CPU
    # SkipLayerNormalization kernel, measured 4.6x slower at 1024x384 (1.01 vs 0.22 ms, ORT 1.32, 2 threads;
    # benchmarks/bench_fusions.py); CUDA sessions keep it (not measured there).
    disabled = ["SkipLayerNormFusion"] if device == "cpu" else []
    return opts, providers, disabled


class OnnxModel:
    """An exported model ready to run: tokenizer, session, manifest.

    Inputs are fed as int64 numpy arrays; only the outputs asked for are copied back.
    """

    def __init__(self, model_dir: str | Path, task: str | None = None, device: str = "auto",
                 threads: int | None = None, io_binding: bool | None = None):
        import onnxruntime as ort

        self.dir = Path(model_dir)
        self.manifest = load_manifest(self.dir, task, verify=True)
        self.device = resolve_device(device)
        opts, providers, disabled = session_setup(self.device, threads)
        try:
            self.session = ort.InferenceSession(str(self.dir / self.manifest["file"]), opts, providers=providers,
                                                disabled_optimizers=disabled)
        except Exception as exc:
            raise ModelError(f"{self.dir}: ONNX Runtime cannot load the model ({str(exc)[:200]})") from None
        if self.device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # ORT falls back to CPU silently when the CUDA/cuDNN libraries do not load; say so instead
            raise ModelError(f"{self.dir}: ONNX Runtime could not start its CUDA provider (CUDA 12/13 runtime, cuBLAS "
                             "or cuDNN 9 not found); run with --device cpu or install the CUDA libraries")
        self._tokenizer = None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        try:  # the engine's own light tokenizer (no transformers import); transformers' on first use of .tokenizer
            self.encoder = load_engine_tokenizer(self.dir, self.input_names) or self.tokenizer
        except Exception as exc:
            raise ModelError(f"{self.dir}: cannot load the tokenizer ({str(exc)[:200]})") from None
        self.pad_id = self.encoder.pad_token_id or 0
        self.max_positions = int(self.manifest.get("max_position_embeddings") or 512)
        # IO binding: inputs uploaded ahead of time (`upload`, called in the batching stage, so on CUDA the next
        # batches are on the device while the current one runs), outputs bound to host memory. Default: on CUDA.
        self.io_binding = (self.device == "cuda") if io_binding is None else io_binding
        self._ort = ort

    @property
    def tokenizer(self):
        """transformers' fast tokenizer of the export (loaded on first use: QA decoding and the attack need its
        offsets and pair handling; embedding uses the light `encoder`)."""
        if self._tokenizer is None:
            import transformers

            try:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.dir, use_fast=True)
            except Exception as exc:
                raise ModelError(f"{self.dir}: cannot load the tokenizer ({str(exc)[:200]})") from None
        return self._tokenizer

    @property
    def sha256(self) -> str:
        return self.manifest["sha256"]

    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding matrix: token ids must be below it."""
        return int(self.manifest.get("vocab_size") or len(self.encoder))

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["hidden_size"])

    def feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray,
              token_type_ids: np.ndarray | None = None) -> dict:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = token_type_ids if token_type_ids is not None else np.zeros_like(input_ids)
        return feeds

    def upload(self, feeds: dict) -> dict:
        """With IO binding, the feeds as OrtValues on the session's device (a host-to-device copy made now, off the
        inference thread); without, the feeds unchanged."""
        if not self.io_binding:
            return feeds
        device = "cuda" if self.device == "cuda" else "cpu"
        return {k: self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, 0)
                for k, v in feeds.items()}

    def run_feeds(self, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        """Outputs on the host for `feeds` (numpy arrays, or OrtValues from `upload`)."""
        if not self.io_binding:
            return self.session.run(outputs, feeds)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def run(self, outputs: list[str], input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray | None = None) -> list[np.ndarray]:
        return self.run_feeds(outputs, self.feeds(input_ids, attention_mask, token_type_ids))
