"""Exporters: Hugging Face models -> verified ONNX model folders (and compressed variants)."""

from .manifest import MANIFEST, TASKS, labels, load_manifest
from .onnx_export import drop_layers, export

__all__ = ["MANIFEST", "TASKS", "drop_layers", "export", "labels", "load_manifest"]
