"""Engine: ONNX Runtime batch inference that streams pooled embeddings into HDF5 stores."""

from .batching import token_budget_batches, tokenize
from .embedder import Embedder
from .pipeline import embed
from .plan import RayOptions
from ..core.session import available_devices, resolve_device
from .runtime import OnnxModel
from ..core.store import Store, StoreWriter, align, open_store

__all__ = ["Embedder", "OnnxModel", "RayOptions", "Store", "StoreWriter", "align", "available_devices", "embed", "open_store",
           "resolve_device", "token_budget_batches", "tokenize"]
