"""Exporters: Hugging Face models -> verified ONNX model folders (and compressed variants)."""

from .onnx_export import MANIFEST, TASKS, drop_layers, export, load_manifest, sha256_file

__all__ = ["MANIFEST", "TASKS", "drop_layers", "export", "load_manifest", "sha256_file"]
