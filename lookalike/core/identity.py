"""An artifact's identity as one value: the named fields it records (which points, which features), compared as a
whole. Two artifacts are comparable when their identities are equal; otherwise `difference` names the first
field that differs, or the one a side does not record (made by an older lookalike), for a one-line refusal.

The field sets are the contracts every comparison shares:
- SELECTION: which points (the corpus's content fingerprint and the whole record selection);
- FEATURES: what makes vectors one model's features (model hash, pooling, normalisation, max length), plus the
  kind of vector stored (float or a quantised precision) and a truncated width;
- COMPARABLE: what two models' artifacts must share to be compared point by point (the points, and the kind of
  features, not the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from .precision import vector_kind

SELECTION = ("corpus_fingerprint", "format", "text_field", "pair_field", "id_field", "split", "limit", "every",
             "offset")
FEATURE_FIELDS = ("model_sha256", "pooling", "normalize", "max_length")
FEATURES = FEATURE_FIELDS + ("precision", "truncate_dim")
COMPARABLE = SELECTION + ("pooling", "normalize", "max_length")

_ABSENT = "<not recorded>"


@dataclass(frozen=True)
class Difference:
    """The first field two identities disagree on; `absent` says which side does not record it ("first",
    "second") or is None when both record different values."""

    field: str
    first: Any
    second: Any
    absent: str | None = None


def _as_stored(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True, eq=False)
class Identity:
    """Named fields in a fixed order; a field the record lacks is held as absent (not as None)."""

    fields: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, record: Mapping, keys: tuple[str, ...]) -> "Identity":
        return cls(tuple((k, record[k] if k in record else _ABSENT) for k in keys))

    def as_dict(self) -> dict:
        """The recorded fields (absent ones left out), as artifacts store them."""
        return {k: v for k, v in self.fields if v is not _ABSENT}

    def difference(self, other: "Identity") -> Difference | None:
        """None when equal; else the first field (in order) that differs, compared as stored in JSON (a tuple
        equals its list), or that one side does not record."""
        theirs = dict(other.fields)
        for k, a in self.fields:
            b = theirs.get(k, _ABSENT)
            if (a is _ABSENT) != (b is _ABSENT):
                return Difference(k, None if a is _ABSENT else a, None if b is _ABSENT else b,
                                  "first" if a is _ABSENT else "second")
            if _as_stored(a) != _as_stored(b):
                return Difference(k, a, b)
        return None

    def __eq__(self, other) -> bool:
        return isinstance(other, Identity) and self.difference(other) is None and \
            [k for k, _ in self.fields] == [k for k, _ in other.fields]

    __hash__ = None  # values may be dicts


def features(config: Mapping) -> Identity:
    """A store's features (FEATURES), every field present (None when the store's config lacks it), the vector
    kind in place of the raw precision (float16 and float32 are one kind)."""
    return Identity(tuple((k, vector_kind(dict(config)) if k == "precision" else config.get(k)) for k in FEATURES))


def selection(config: Mapping) -> dict:
    """The record selection a store's config records (SELECTION; absent keys left out)."""
    return Identity.of(config, SELECTION).as_dict()


def comparable(config: Mapping) -> dict:
    """What an artifact made from a store must match in another model's artifact (COMPARABLE)."""
    return Identity.of(config, COMPARABLE).as_dict()
