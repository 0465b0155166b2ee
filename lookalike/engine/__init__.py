"""Engine: ONNX Runtime batch inference that streams pooled embeddings into HDF5 stores."""

from ..core.session import available_devices, resolve_device
from ..core.store import Store, StoreWriter, align, open_store
from .batching import token_budget_batches, tokenize
from .embedder import Embedder
from .pipeline import embed
from .plan import RayOptions
from .runtime import OnnxModel

__all__ = ["Embedder", "OnnxModel", "RayOptions", "Store", "StoreWriter", "align", "available_devices", "embed", "open_store",
           "resolve_device", "token_budget_batches", "tokenize"]
