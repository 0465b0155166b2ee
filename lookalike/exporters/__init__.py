"""Exporters: Hugging Face models -> verified ONNX model folders (and compressed variants)."""

from ..core.manifest import MANIFEST, labels, load_manifest
from ..core.heads import TASKS
from .onnx_export import drop_layers, export, export_summary

__all__ = ["MANIFEST", "TASKS", "drop_layers", "export", "export_summary", "labels", "load_manifest"]
