"""A model variant as one value: how a compressed model is made from its source (int8 and its scheme, fp16,
layer dropping, the fusion choice), validated once and spelled one way for the CLI, experiment files, the step
cache and the export manifest.

`as_key()` is the variant as given (the fields set away from their defaults, as the experiment file writes
them), so cache keys and stored settings do not change when a default is spelled out; `record()` is what the
manifest says was made (the int8 scheme chosen, whether the graph is fused, which operators).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ExportError, InputError, unknown_key_message
from .graph import FUSION_SETS
from .int8 import SCHEMES as INT8_SCHEMES

# what an experiment file's `variant:` may set
KEYS = ("quantize", "int8_scheme", "per_channel", "fp16", "keep_layers", "optimize")


@dataclass(frozen=True)
class Variant:
    quantize: str | None = None  # None or "int8" (an int8 scheme or per_channel alone also mean int8)
    int8_scheme: str | None = None  # one of INT8_SCHEMES, "auto" (measured on this CPU) or None (auto)
    per_channel: bool = False  # dynamic-per-channel, when no scheme is named
    fp16: bool = False
    keep_layers: tuple[int, ...] | None = None  # encoder layers kept (layer dropping)
    optimize: bool | None = None  # ORT transformer fusions; None: fuse, fall back to plain if parity fails
    fusions: str | None = None  # the fusion set: "gpu" for fp16, "cpu" otherwise [by fp16]

    def __post_init__(self):
        if self.keep_layers is not None:
            object.__setattr__(self, "keep_layers", tuple(int(i) for i in self.keep_layers))
        if self.quantize not in (None, "int8"):
            raise ExportError(f"unknown quantization {self.quantize!r} (known: int8)")
        if self.int8 and self.fp16:
            raise ExportError("choose one of --quantize int8 (or --int8-scheme) and --fp16")
        if self.fusions is not None and self.fusions not in FUSION_SETS:
            raise ExportError(f"unknown fusion set {self.fusions!r} (cpu or gpu)")
        if self.int8 and self.scheme not in (*INT8_SCHEMES, "auto"):
            raise ExportError(f"unknown int8 scheme {self.scheme!r} (known: auto, {', '.join(INT8_SCHEMES)})")

    @classmethod
    def coerce(cls, value: "Variant | Mapping[str, Any] | None", where: str = "variant") -> "Variant":
        """A Variant from a Variant, None (fp32) or a mapping of KEYS (an experiment file's `variant:`; unknown keys
        and wrong types refused, naming `where`)."""
        if value is None:
            return cls()
        if isinstance(value, Variant):
            return value
        if not isinstance(value, Mapping):
            raise InputError("expected a mapping", record=where, field="variant")
        for k in value:
            if k not in KEYS:
                raise InputError(unknown_key_message(k, KEYS), record=where, field=str(k))
        for k in ("per_channel", "fp16"):
            if k in value and not isinstance(value[k], bool):
                raise InputError(f"expected true or false, got {value[k]!r}", record=where, field=k)
        layers = value.get("keep_layers")
        if layers is not None and not (isinstance(layers, (list, tuple)) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in layers)):
            raise InputError(f"expected a list of layer indices, got {layers!r}", record=where, field="keep_layers")
        try:
            return cls(**dict(value))
        except ExportError as exc:
            raise InputError(str(exc), record=where, field="variant") from exc

    # ------------------------------------------------------------------ what it means
    @property
    def int8(self) -> bool:
        return self.quantize == "int8" or self.int8_scheme is not None or self.per_channel

    @property
    def scheme(self) -> str:
        """The int8 scheme asked for ("auto": measured at export)."""
        return self.int8_scheme or ("dynamic-per-channel" if self.per_channel else "auto")

    @property
    def fusion_set(self) -> str:
        return self.fusions or ("gpu" if self.fp16 else "cpu")

    @property
    def compressed(self) -> bool:
        """Whether it differs from its source's fp32 graph (the export then reports parity against the source)."""
        return self.int8 or self.fp16 or self.keep_layers is not None

    def replace(self, **changes) -> "Variant":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ how it is spelled
    def as_key(self) -> dict:
        """The fields set away from their defaults, in KEYS order (lists for tuples): the experiment file's
        spelling, the step cache's key."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def describe(self) -> str:
        """One line for people, before the export is made ("int8 auto", "layers 1,3,5", "fp32")."""
        parts = []
        if self.keep_layers is not None:
            parts.append(f"layers {','.join(map(str, self.keep_layers))}")
        if self.int8:
            parts.append(f"int8 {self.scheme}")
        if self.fp16:
            parts.append("fp16")
        if not self.int8 and not self.fp16:
            parts.append("fp32")
        return ", ".join(parts)

    def record(self, scheme: str | None, optimized: bool, fused_operators=None) -> dict:
        """The manifest's "variant" record of what was made: the int8 scheme chosen, fusion, a description."""
        v = {"quantize": "int8" if self.int8 else None, "int8_scheme": scheme if self.int8 else None,
             "per_channel": (scheme != "dynamic") if self.int8 else None, "fp16": self.fp16,
             "keep_layers": list(self.keep_layers) if self.keep_layers is not None else None,
             "optimized": optimized}
        if optimized:
            v["fusions"] = self.fusion_set
            v["fused_operators"] = fused_operators
        v["description"] = describe_record(v)
        return v


def describe_record(v: dict) -> str:
    """A manifest variant record in one line ("int8 dynamic per-channel, ORT-fused")."""
    parts = []
    if v.get("keep_layers") is not None:
        parts.append(f"layers {','.join(map(str, v['keep_layers']))}")
    if v.get("quantize"):
        scheme = v.get("int8_scheme") or ("dynamic-per-channel" if v.get("per_channel") else "dynamic")
        parts.append({"dynamic": "int8 dynamic", "dynamic-per-channel": "int8 dynamic per-channel",
                      "dynamic-reduce-range": "int8 dynamic reduce-range",
                      "static-qdq": "int8 static QDQ"}.get(scheme, f"int8 {scheme}"))
    if v.get("fp16"):
        parts.append("fp16")
    if not v.get("quantize") and not v.get("fp16"):
        parts.append("fp32")
    if v.get("optimized"):
        parts.append("ORT-fused" + (" (GPU set)" if v.get("fusions") == "gpu" else ""))
    return ", ".join(parts)
