"""The export folder's contract: `lookalike.json` (the manifest) beside `model.onnx` and the tokenizer.

`load_manifest` validates what every reader relies on; the accessors turn stored JSON into typed values.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError, ModelError, unknown_key_message
from ..files import load_json, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "lookalike.json"
MODEL_FILE = "model.onnx"
FORMAT_VERSION = 1
_REQUIRED = {"task": str, "file": str, "sha256": str, "hidden_size": int, "variant": dict, "source": dict}
# fields an export may record, checked by type when present
_OPTIONAL = {"num_layers": int, "vocab_size": int, "parameters": int, "file_size": int, "outputs": list,
             "labels": dict, "int8": dict, "sentence_transformers": (dict, type(None)), "parity": dict,
             "task_inferred_from": str, "opset": int}
# recorded for provenance (what made the export), read by no one for a decision
_PROVENANCE = ("format_version", "exporter", "inputs", "num_heads", "max_position_embeddings", "variant_parity",
               "created", "export_seconds", "versions", "files", "st_folder")
KNOWN_FIELDS = frozenset(_REQUIRED) | frozenset(_OPTIONAL) | frozenset(_PROVENANCE)


class ExportManifest(dict):
    """An export folder's manifest (`lookalike.json`) as one read-only value, checked as a whole when loaded:
    the required fields and the type of every optional one. Typed accessors for what readers use; it is still
    the JSON object it was read from (a dict), so it is written and pickled (Ray) as such."""

    def write(self, model_dir: str | Path) -> Path:
        """The manifest as `lookalike.json` in `model_dir` (the exporter's one writer)."""
        import json

        path = Path(model_dir) / MANIFEST
        path.write_text(json.dumps(self, indent=2) + "\n")
        return path

    def _frozen(self, *args, **kwargs):
        raise TypeError("an export manifest is read-only; build a new one to change it")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = __ior__ = _frozen

    def __reduce__(self):  # pickled (Ray actors) as its JSON object, rebuilt read-only
        return ExportManifest, (dict(self),)

    # optional fields, None when the export does not record them (their types are checked at load)
    num_layers = property(lambda self: self.get("num_layers"))
    parameters = property(lambda self: self.get("parameters"))
    file_size = property(lambda self: self.get("file_size"))
    vocab_size = property(lambda self: self.get("vocab_size"))
    sentence_transformers = property(lambda self: self.get("sentence_transformers"))
    int8 = property(lambda self: self.get("int8"))  # the int8 choice (exporters.int8.choose_scheme's report)

    @property
    def task(self) -> str:
        return self["task"]

    @property
    def sha256(self) -> str:
        """The model's identity: every artifact made with it records this."""
        return self["sha256"]

    @property
    def model_file(self) -> str:
        return self["file"]

    @property
    def source_model(self) -> str:
        return str(self["source"].get("model", ""))

    @property
    def variant_description(self) -> str:
        return str(self["variant"].get("description", ""))

    @property
    def variant(self) -> dict:
        """The variant record: what was made (exporters.variant.Variant.record)."""
        return dict(self["variant"])

    @property
    def quantized(self) -> bool:
        return bool(self["variant"].get("quantize"))

    @property
    def hidden_size(self) -> int:
        return int(self["hidden_size"])

    @property
    def parity(self) -> dict:
        return dict(self.get("parity") or {})

    @property
    def outputs(self) -> list[str]:
        return list(self.get("outputs", []))

    @property
    def files(self) -> dict[str, str]:
        return dict(self.get("files", {}))

    @property
    def labels(self) -> dict[int, str]:
        return labels(self)


def load_manifest(model_dir: str | Path, task: str | None = None, *, verify: bool = False) -> ExportManifest:
    """The manifest of an export folder; ModelError if the folder is not an export (or not for `task`).

    verify: check the model file's sha256 against the manifest (`verify_model_file`)."""
    model_dir = Path(model_dir)
    mpath = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such model folder")
    if not mpath.exists():
        raise ModelError(f"{model_dir}: not a lookalike export (no {MANIFEST}; make one with `lookalike export`)")
    try:
        manifest = load_json(mpath, "export manifest")
    except InputError as exc:
        raise ModelError(str(exc)) from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{mpath}: not an export manifest (expected a JSON object)")
    unknown = sorted(set(manifest) - KNOWN_FIELDS, key=str)
    if unknown:  # a field no lookalike writes: edited, or from a newer lookalike whose meaning this one cannot know
        raise ModelError(f"{mpath}: {unknown_key_message(unknown[0], KNOWN_FIELDS)}; an export manifest holds only "
                         "what `lookalike export` writes: re-export the model")
    for key, typ in _REQUIRED.items():
        if not isinstance(manifest.get(key), typ) or isinstance(manifest.get(key), bool):
            raise ModelError(f"{mpath}: field '{key}' missing or not a {typ.__name__}; re-export the model")
    for key, typ in _OPTIONAL.items():
        if key in manifest and (not isinstance(manifest[key], typ) or isinstance(manifest[key], bool)):
            names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            raise ModelError(f"{mpath}: field '{key}' is {type(manifest[key]).__name__}, not {names}; re-export the "
                             "model")
    manifest = ExportManifest(manifest)
    for name in [manifest["file"], *_listed_files(manifest, mpath)]:
        _check_plain(model_dir, name, mpath)
    mp = manifest.get("max_position_embeddings")
    if mp is not None and (isinstance(mp, bool) or not isinstance(mp, int) or not 1 <= mp <= MAX_POSITIONS):
        raise ModelError(f"{mpath}: field 'max_position_embeddings' is {mp!r}; expected a whole number from 1 to "
                         f"{MAX_POSITIONS}; re-export the model")
    if verify:
        verify_model_file(model_dir, manifest)
    if task is not None and manifest["task"] != task:
        raise ModelError(f"{model_dir}: exported for task {manifest['task']!r}, this command needs {task!r} "
                         f"(re-export with --task {task})")
    return manifest


MAX_POSITIONS = 1 << 20
# the bytes an ONNX tensor stored outside the model file carries: its external_data entry with key "location"
_EXTERNAL_MARK = b"\n\x08location"


def _listed_files(manifest: dict, mpath: Path) -> dict[str, str]:
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ModelError(f"{mpath}: field 'files' is not a map of file names to sha256; re-export the model")
    return files


def _check_plain(model_dir: Path, name: str, mpath: Path) -> None:
    """A file the manifest (or the model) names: a plain name inside the folder (no path separator, no `..`), a
    regular file."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ModelError(f"{mpath}: names the file {name!r}, which is not a plain file name inside the export folder; "
                         "refusing to read it (re-export the model)")
    path = model_dir / name
    if path.is_symlink() or not path.exists():
        raise ModelError(f"{model_dir}: manifest names {name} but it is "
                         f"{'a symbolic link' if path.is_symlink() else 'missing'}; re-export the model")
    if not path.is_file():
        raise ModelError(f"{path}: is not a regular file; refusing to read it (re-export the model)")


def _hash_and_scan(path: Path, mark: bytes) -> tuple[str, bool]:
    """(sha256 of the file, whether `mark` occurs in it), in one pass."""
    import hashlib

    h = hashlib.sha256()
    found, tail = False, b""
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
            if not found:
                found = mark in tail + block
                tail = block[-len(mark):]
    return h.hexdigest(), found


def external_locations(path: Path) -> list[str]:
    """The files an ONNX model reads its tensors from besides itself (`location` of external data)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    out = []
    for t in _get_all_tensors(proto):
        if uses_external_data(t):
            out.extend(e.value for e in t.external_data if e.key == "location")
    return sorted(set(out))


_VERIFIED: dict = {}


def verify_model_file(model_dir: str | Path, manifest: dict) -> None:
    """ModelError unless every file the runtime reads is the one the manifest records: the model file's sha256
    (every artifact made with the model is labelled with it), the sha256 of each file in the manifest's `files`
    (tokenizer, config, and any external weights), and no external weights that are not listed. Cached in this
    process per (path, size, mtime, inode) of each, so a model loaded twice is hashed once; any rewrite changes
    the mtime and is hashed again."""
    model_dir = Path(model_dir)
    path = model_dir / manifest["file"]
    mpath = model_dir / MANIFEST
    files = _listed_files(manifest, mpath)
    stats = []
    for name in [manifest["file"], *sorted(files)]:
        _check_plain(model_dir, name, mpath)
        st = (model_dir / name).stat()
        stats.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    key = (str(path.resolve()), tuple(stats), manifest["sha256"], tuple(sorted(files.items())))
    if key in _VERIFIED:
        return
    if model_digest(path) != manifest["sha256"]:
        raise ModelError(f"{path}: its sha256 is not the one {MANIFEST} records (the file or the external weights it "
                         "reads were changed or replaced after export); re-export the model")
    for name, want in sorted(files.items()):
        if sha256_file(model_dir / name) != want:
            raise ModelError(f"{model_dir / name}: its sha256 is not the one {MANIFEST} records (changed or replaced "
                             "after export); re-export the model")
    _VERIFIED[key] = True


def model_digest(path: Path) -> str:
    """The model's identity: the sha256 of the ONNX file, or, when it keeps tensors in external files, of the file
    and every external file it names (each a plain name beside it, a regular file), so a store's `model_sha256`
    covers every weight the runtime loads. ModelError for an external location outside the folder."""
    import hashlib

    path = Path(path)
    digest, external = _hash_and_scan(path, _EXTERNAL_MARK)
    if not external:
        return digest
    locations = external_locations(path)
    if not locations:
        return digest
    h = hashlib.sha256(digest.encode())
    for loc in locations:
        _check_plain(path.parent, loc, path)
        h.update(b"\0" + loc.encode() + b"\0" + sha256_file(path.parent / loc).encode())
    return h.hexdigest()


def listed_files(model_dir: Path, model_file: str = MODEL_FILE) -> dict[str, str]:
    """{name: sha256} of every file in an export folder but the model file and the manifest (what `files` records
    at export: tokenizer, config, external weights)."""
    return {p.name: sha256_file(p) for p in sorted(Path(model_dir).iterdir())
            if p.is_file() and not p.is_symlink() and p.name not in (model_file, MANIFEST)}


def labels(manifest: dict) -> dict[int, str]:
    """{label id: name} of a classification export ({} for other tasks)."""
    return {int(k): v for k, v in (manifest.get("labels") or {}).items()}


def positions(manifest: dict) -> int:
    """The model's position embeddings: the longest input it reads (512 when the export does not say)."""
    return int(manifest.get("max_position_embeddings") or 512)


def clamp_length(manifest: dict, max_length: int | None, *, warn: bool = False) -> int:
    """`max_length` cut to the model's positions (with a warning when asked and it had to be cut); None: the
    positions."""
    n = positions(manifest)
    if max_length is None:
        return n
    if warn and max_length > n:
        log.warning("max length %d is more than the model's %d positions; using %d", max_length, n, n)
    return min(max_length, n)


def describe_int8(record: dict) -> str:
    """One line about an export's int8 choice (its manifest's `int8` record), for `export` and `bench`."""
    if not record.get("measured", True):
        return f"int8 {record['scheme']} (given explicitly, not measured at export)"
    verdict = (f"{record['speedup']:.2f}x fp32" if record["faster_than_fp32"]
               else f"NOT faster than fp32 here ({record['speedup']:.2f}x)")
    return (f"int8 {record['scheme']} on {record['cpu']} ({record['int8_class']}): {verdict}, cosine vs fp32 "
            f"{record['cosine']:.4f}")
