"""One ONNX Runtime session per export, with the device picked inside (CUDA when present, CPU otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.manifest import clamp_length, load_manifest, positions
from ..core.session import resolve_device, session_setup, split_device
from ..errors import ModelError
from .tokenizer import load_engine_tokenizer
from ..core import pretrained


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
        self.device_id = split_device(device)[1] if self.device == "cuda" else 0  # "cuda:1": the second GPU
        opts, providers, disabled = session_setup(self.device, threads, self.device_id)
        try:
            self.session = ort.InferenceSession(str(self.dir / self.manifest.model_file), opts, providers=providers,
                                                disabled_optimizers=disabled)
        except Exception as exc:
            raise ModelError(f"{self.dir}: ONNX Runtime cannot load the model ({str(exc)[:200]})") from exc
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
            raise ModelError(f"{self.dir}: cannot load the tokenizer ({str(exc)[:200]})") from exc
        model_vocab = self.manifest.vocab_size
        if isinstance(model_vocab, int) and len(self.encoder) > model_vocab:
            raise ModelError(f"{self.dir}: the tokenizer has {len(self.encoder)} tokens, the model's embedding table "
                             f"{model_vocab} rows: ids past {model_vocab - 1} have no embedding (a tokenizer from "
                             "another model?); re-export the model with its own tokenizer")
        self.pad_id = self.encoder.pad_token_id or 0
        self.max_positions = positions(self.manifest)
        # IO binding: inputs uploaded ahead of time (`upload`, called in the batching stage, so on CUDA the next
        # batches are on the device while the current one runs), outputs bound to host memory. Default: on CUDA.
        self.io_binding = (self.device == "cuda") if io_binding is None else io_binding
        self._ort = ort

    @property
    def tokenizer(self):
        """transformers' fast tokenizer of the export (loaded on first use: QA decoding and the attack need its
        offsets and pair handling; embedding uses the light `encoder`)."""
        if self._tokenizer is None:
            try:
                self._tokenizer = pretrained.tokenizer(self.dir)
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"{self.dir}: cannot load the tokenizer ({str(exc)[:200]})") from exc
        return self._tokenizer

    def clamp(self, max_length: int) -> int:
        """`max_length` cut to the model's positions."""
        return clamp_length(self.manifest, max_length)

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def vocab_size(self) -> int:
        """Rows of the model's embedding matrix: token ids must be below it."""
        return int(self.manifest.vocab_size or len(self.encoder))

    def apply_dense(self, x: np.ndarray) -> np.ndarray:
        """x after the export's sentence-transformers Dense modules (loaded once; their files are checksummed in
        the manifest like every file the runtime reads)."""
        from ..exporters.pooling import apply_dense, load_dense

        if getattr(self, "_dense", None) is None:
            try:
                self._dense = load_dense(self.dir, self.manifest.sentence_transformers or {})
            except Exception as exc:
                raise ModelError(f"{self.dir}: cannot read its Dense module weights ({str(exc)[:200]}); "
                                 "re-export the model") from exc
        return apply_dense(x, self._dense)

    @property
    def hidden_size(self) -> int:
        return self.manifest.hidden_size

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
        return {k: self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, self.device_id)
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
