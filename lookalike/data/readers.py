"""Read every supported corpus format into one uniform stream of records.

A record is `(id, text[, text_pair], label?)` plus, for extractive QA, the gold answers.
For QA the model input is the pair (question, context), as BERT sees it in fine-tuning.
Ids are stable: the id field when the format has one, else the record's 0-based position.
Duplicate ids, missing fields, undecodable bytes and empty corpora are errors naming the
file, the record and the field; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import InputError
from ..files import parse_json, unique_keys
from .opener import COMPRESSED, check_regular, max_record_bytes, open_input, read_document, read_lines

FORMATS = (
    "text", "jsonl", "json", "csv", "tsv", "parquet", "squad", "queries",
    "newsqa-csv", "newsqa-json", "mrqa", "aclimdb", "imdb-tsv", "hf", "hf-disk",
)


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    text_pair: str | None = None
    label: Any = None
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    is_impossible: bool | None = None


# --------------------------------------------------------------------------- opening files

# compressed files are read through transparently, streaming, in every format (as Hugging Face datasets does);
# the corpus fingerprint is taken over the file as stored. Every file is opened by `opener` (regular files only,
# bounded lines, documents and decompression).


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line without newline)."""
    for lineno, raw in read_lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"undecodable bytes (not UTF-8) at byte {exc.start} of the line",
                             path=path, record=f"line {lineno}") from exc
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield lineno, line.rstrip("\r\n")


def _decode_json(raw: bytes, path: Path) -> Any:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("undecodable bytes (not UTF-8)", path=path, record=f"line {line}") from exc
    try:
        return json.loads(text, object_pairs_hook=unique_keys(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=path, record=f"line {exc.lineno}") from exc
    except RecursionError as exc:
        raise InputError("JSON nested too deeply", path=path) from exc


def _read_json(path: Path) -> Any:
    return _decode_json(read_document(path, what="JSON document"), path)


# --------------------------------------------------------------------------- format detection

def _looks_like_hf_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists())


def detect_format(path: str | Path) -> str:
    """Guess the format from the path (and, for ambiguous suffixes, the first bytes)."""
    p = Path(path)
    if not p.exists():
        if ":" in str(path) and not str(path).startswith((".", "/")):
            return "hf"
        raise InputError("no such file or folder", path=p)
    if p.is_dir():
        if (p / "queries.json").exists():
            return "queries"
        if _looks_like_hf_disk(p):
            return "hf-disk"
        if (p / "pos").is_dir() or (p / "neg").is_dir() or (p / "test" / "pos").is_dir() or (p / "train" / "pos").is_dir():
            return "aclimdb"
        raise InputError("folder is not a known corpus layout (queries.json/ground_truth.json, aclImdb "
                         "pos/neg, or a saved Hugging Face dataset)", path=p)
    name = p.name.lower()
    stem = next((name[:-len(z)] for z in COMPRESSED if name.endswith(z)), name)
    if stem.endswith((".jsonl", ".ndjson")):
        for _, line in _lines(p):
            if line.strip():
                # MRQA: released files open with a {"header": ...} line; samples may not, then the first
                # object already holds "context" and "qas"
                if '"header"' in line[:200]:
                    return "mrqa"
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    return "jsonl"  # the reader names the line
                return "mrqa" if isinstance(first, dict) and {"context", "qas"} <= set(first) else "jsonl"
        return "jsonl"
    if stem.endswith(".json"):
        return _sniff_json(p)
    if stem.endswith(".csv"):
        for _, line in _lines(p):
            header = line.lower()
            if "story_text" in header and "question" in header:
                return "newsqa-csv"
            break
        return "csv"
    if stem.endswith(".tsv"):
        for _, line in _lines(p):
            cells = line.split("\t")
            if len(cells) == 2 and cells[1].strip().lstrip("-").isdigit():
                return "imdb-tsv"
            break
        return "tsv"
    if stem.endswith(".parquet"):
        return "parquet"
    return "text"


_SNIFF_BYTES = 1 << 20


def _sniff_json(p: Path) -> str:
    """squad / newsqa-json / queries / json from the document's first MiB (the reader parses it once, later)."""
    with open_input(p) as fh:
        head = fh.read(_SNIFF_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not head.startswith("{"):
        return "json"
    data_list = re.search(r'"data"\s*:\s*\[\s*\{', head)
    if data_list:
        first = head[data_list.end():]
        if re.search(r'"paragraphs"\s*:', first):
            return "squad"
        if re.search(r'"storyId"\s*:', first):
            return "newsqa-json"
    if re.search(r'^\{\s*(?:"[^"]*"\s*:\s*[^{\[]*?,\s*)*"queries"\s*:', head):
        return "queries"
    return "json"


# --------------------------------------------------------------------------- generic row mapping

@dataclass(frozen=True)
class Fields:
    text: str = "text"
    pair: str | None = None
    id: str | None = None  # None: the "id" field when the first record has one, else row numbers
    label: str | None = None


def _auto_ids(rows: Iterator[tuple[Any, str]], fields: Fields, path: Path, info: Provenance) -> Iterator[tuple[Any, str, Fields]]:
    """Decide the id rule once, from the first row: its "id" field when present (then every row needs one),
    else row numbers. `info.ids` says which."""
    decided: Fields | None = None
    for row, record in rows:
        if decided is None:
            if fields.id is not None:
                decided = fields
                info.ids = f"field '{fields.id}'"
            elif isinstance(row, Mapping) and DEFAULT_ID_FIELD in row:
                decided = Fields(fields.text, fields.pair, DEFAULT_ID_FIELD, fields.label)
                info.ids = f"field '{DEFAULT_ID_FIELD}' (found in the records)"
            else:
                decided = fields
                info.ids = "row numbers"
        yield row, record, decided


def _field(row: Mapping, name: str, path: Path, record: str, *, required: bool = True):
    if name not in row:
        if required:
            have = ", ".join(sorted(map(str, row.keys()))[:12])
            raise InputError(f"missing (record has: {have})", path=path, record=record, field=name)
        return None
    return row[name]


DEFAULT_ID_FIELD = "id"
MAX_ID_CHARS = 4096  # ids are stored in every artifact; a NUL would be cut by HDF5's strings


def _typed(value, types, path: Path, record: str, field: str | None, expected: str):
    """`value` when it is of `types` (bool is not an int here), else an InputError naming the record and field."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                  else (types,)))
    if not ok:
        raise InputError(f"expected {expected}, got {type(value).__name__} {str(value)[:40]!r}", path=path,
                         record=record, field=field)
    return value


def _from_row(row: Any, index: int, path: Path, record: str, fields: Fields) -> Record:
    if not isinstance(row, Mapping):
        raise InputError(f"expected an object, got {type(row).__name__}", path=path, record=record)
    text = _field(row, fields.text, path, record)
    if not isinstance(text, str):
        raise InputError(f"expected a string, got {type(text).__name__}", path=path, record=record,
                         field=fields.text)
    pair = None
    if fields.pair:
        pair = _field(row, fields.pair, path, record)
        if not isinstance(pair, str):
            raise InputError(f"expected a string, got {type(pair).__name__}", path=path, record=record,
                             field=fields.pair)
    rid = str(index)
    if fields.id:
        value = _field(row, fields.id, path, record)
        if value is None or value == "":
            raise InputError("empty id", path=path, record=record, field=fields.id)
        rid = str(value)
    label = _field(row, fields.label, path, record) if fields.label else None
    return Record(rid, text, pair, label)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line of a JSON-lines file."""
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        yield lineno, parse_json(line, path, f"line {lineno}")


def _read_jsonl(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    rows = ((row, f"line {lineno}") for lineno, row in _json_lines(path))
    for index, (row, record, f) in enumerate(_auto_ids(rows, fields, path, info)):
        yield _from_row(row, index, path, record, f)


def _read_json_array(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    obj = _read_json(path)
    if isinstance(obj, dict):  # {"data": [...]} or {"records": [...]}: the single list value
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError("expected a JSON array of records (or an object holding exactly one array)", path=path)
        obj = lists[0]
    if not isinstance(obj, list):
        raise InputError("expected a JSON array of records", path=path)
    rows = ((row, f"record {i}") for i, row in enumerate(obj))
    for i, (row, record, f) in enumerate(_auto_ids(rows, fields, path, info)):
        yield _from_row(row, i, path, record, f)


def _csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, dict, csv.DictReader]]:
    """(line number, row, reader) of a CSV/TSV file: fields of any size up to the record limit (the csv module's
    own default stops at 131,072 characters); a malformed row is one error naming its line."""
    def decoded():
        for _, line in _lines(path):
            yield line + "\n"

    csv.field_size_limit(max(csv.field_size_limit(), max_record_bytes()))
    reader = csv.DictReader(decoded(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})", path=path,
                             record=f"line {reader.line_num}") from exc
        yield reader.line_num, row, reader


def _read_delimited(path: Path, fields: Fields, info: Provenance, delimiter: str) -> Iterator[Record]:
    def rows():
        for lineno, row, reader in _csv_rows(path, delimiter):
            if None in row:
                raise InputError(f"more cells than header columns ({len(reader.fieldnames or [])})", path=path,
                                 record=f"line {lineno}")
            if any(v is None for v in row.values()):
                missing = [k for k, v in row.items() if v is None]
                raise InputError("fewer cells than header columns", path=path, record=f"line {lineno}",
                                 field=missing[0])
            yield row, f"line {lineno}"

    for i, (row, record, f) in enumerate(_auto_ids(rows(), fields, path, info)):
        yield _from_row(row, i, path, record, f)


def _read_parquet(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with `datasets`
        raise InputError("reading Parquet needs pyarrow (pip install pyarrow)", path=path) from exc
    try:
        if path.suffix.lower() in COMPRESSED:  # Parquet needs a seekable file: decompress it into memory
            import io

            pf = pq.ParquetFile(io.BytesIO(read_document(path, what="compressed Parquet")))
        else:
            check_regular(path)
            pf = pq.ParquetFile(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from exc

    def rows():
        i = 0
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield row, f"row {i}"
                i += 1

    for i, (row, record, f) in enumerate(_auto_ids(rows(), fields, path, info)):
        yield _from_row(row, i, path, record, f)


def _read_text(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "row numbers"
    for lineno, line in _lines(path):
        yield Record(str(lineno - 1), line)


# --------------------------------------------------------------------------- QA formats

def _qa_record(path, record, qid, question, context, answers, starts, impossible, check_starts=True):
    if check_starts:
        for k, (a, s) in enumerate(zip(answers, starts)):
            if s is not None and context[s: s + len(a)] != a:
                raise InputError(f"answer_start {s} does not point at the answer text {a!r} in the context "
                                 f"(found {context[s: s + len(a)]!r})", path=path, record=record,
                                 field=f"answers[{k}].answer_start")
    return Record(str(qid), question, context, None, tuple(answers),
                  tuple(-1 if s is None else s for s in starts), impossible)


def _read_squad(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "the format's own ids"
    obj = _read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise InputError("not a SQuAD file (no top-level 'data' list)", path=path, field="data")
    for a, article in enumerate(obj["data"]):
        _typed(article, dict, path, f"data[{a}]", None, "an object")
        for p, para in enumerate(_typed(article.get("paragraphs", []), list, path, f"data[{a}]", "paragraphs",
                                        "a list")):
            here = f"data[{a}].paragraphs[{p}]"
            _typed(para, dict, path, here, None, "an object")
            context = _typed(_field(para, "context", path, here), str, path, here, "context", "a string")
            for q, qa in enumerate(_typed(_field(para, "qas", path, here), list, path, here, "qas", "a list")):
                _typed(qa, dict, path, f"{here}.qas[{q}]", None, "an object")
                where = f"question {qa.get('id', f'{here}.qas[{q}]')}"
                qid = _typed(_field(qa, "id", path, where), (str, int), path, where, "id", "a string")
                question = _typed(_field(qa, "question", path, where), str, path, where, "question", "a string")
                answers = _typed(_field(qa, "answers", path, where), list, path, where, "answers", "a list")
                impossible = _typed(qa.get("is_impossible", False), bool, path, where, "is_impossible",
                                    "true or false")
                texts, starts = [], []
                for k, x in enumerate(answers):
                    _typed(x, dict, path, where, f"answers[{k}]", "an object {text, answer_start}")
                    texts.append(_typed(_field(x, "text", path, where), str, path, where, f"answers[{k}].text",
                                        "a string"))
                    start = x.get("answer_start")
                    if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
                        raise InputError(f"expected a whole number, got {start!r}", path=path, record=where,
                                         field=f"answers[{k}].answer_start")
                    starts.append(start)
                yield _qa_record(path, where, qid, question, context, texts, starts, impossible)


def _read_queries(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    """The search-datasets layout: queries.json ({"queries": [{id, context, question}]}) + ground_truth.json."""
    info.ids = "the format's own ids"
    folder = path if path.is_dir() else path.parent
    qpath = folder / "queries.json" if path.is_dir() else path
    gpath = folder / "ground_truth.json"
    queries = _read_json(qpath)
    if not isinstance(queries, dict) or not isinstance(queries.get("queries"), list):
        raise InputError("expected {\"queries\": [...]}", path=qpath, field="queries")
    truth = _read_json(gpath) if gpath.exists() else {}
    _typed(truth, dict, gpath, "ground truth", None, "an object {id: {answers, is_impossible}}")
    for i, q in enumerate(queries["queries"]):
        where = f"record {i}"
        _typed(q, dict, qpath, where, None, "an object {id, question, context}")
        qid = str(_typed(_field(q, "id", qpath, where), (str, int), qpath, where, "id", "a string"))
        here = f"question {qid}"
        question = _typed(_field(q, "question", qpath, here), str, qpath, here, "question", "a string")
        context = _typed(_field(q, "context", qpath, here), str, qpath, here, "context", "a string")
        if truth and qid not in truth:
            raise InputError("question has no ground truth", path=gpath, record=here)
        gold = _typed(truth.get(qid, {}) if truth else {}, dict, gpath, here, None, "an object {answers, ...}")
        raw = _typed(gold.get("answers", []), list, gpath, here, "answers", "a list of strings")
        for k, a in enumerate(raw):
            _typed(a, str, gpath, here, f"answers[{k}]", "a string")
        # unanswerable questions carry [""] in this layout; the official SQuAD form is an empty list
        answers = tuple(a for a in raw if a)
        impossible = gold.get("is_impossible")
        if impossible is not None:
            _typed(impossible, bool, gpath, here, "is_impossible", "true or false")
        elif truth:
            impossible = len(answers) == 0
        starts = []
        for k, a in enumerate(answers):  # recover answer_start by locating the text (first occurrence)
            s = context.find(a)
            starts.append(s if s >= 0 else None)
        yield _qa_record(gpath, here, qid, question, context, answers, starts, impossible, check_starts=False)


def _spans_to_answers(context: str, spans: Iterable[tuple[int, int]]):
    texts, starts = [], []
    for s, e in spans:
        texts.append(context[s:e])
        starts.append(s)
    return texts, starts


def _read_newsqa_csv(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    """NewsQA CSV: the combined file (answer_char_ranges) or the split files (answer_token_ranges)."""
    info.ids = "the format's own ids"
    counts: dict[str, int] = {}

    for lineno, row, _ in _csv_rows(path):
        where = f"line {lineno}"
        story_id = _field(row, "story_id", path, where)
        question = _field(row, "question", path, where)
        context = _field(row, "story_text", path, where)
        n = counts.get(story_id, 0)
        counts[story_id] = n + 1
        spans: list[tuple[int, int]] = []
        if "answer_char_ranges" in row:
            for worker in (row["answer_char_ranges"] or "").split("|"):
                for rng in worker.split(","):
                    if ":" in rng:
                        spans.append(_char_range(rng, context, path, where))
        elif "answer_token_ranges" in row:
            tokens = context.split()
            offsets, pos = [], 0
            for tok in tokens:
                pos = context.index(tok, pos)
                offsets.append((pos, pos + len(tok)))
                pos += len(tok)
            for rng in (row["answer_token_ranges"] or "").split(","):
                if ":" in rng:
                    s, e = _range_ints(rng, path, where, "answer_token_ranges")
                    if not (0 <= s < e <= len(offsets)):
                        raise InputError(f"token range {rng} outside the story ({len(offsets)} tokens)",
                                         path=path, record=where, field="answer_token_ranges")
                    spans.append((offsets[s][0], offsets[e - 1][1]))
        else:
            raise InputError("missing (need answer_char_ranges or answer_token_ranges)", path=path,
                             record=where, field="answer_char_ranges")
        spans = list(dict.fromkeys(spans))
        texts, starts = _spans_to_answers(context, spans)
        yield Record(f"{story_id}#{n}", question, context, None, tuple(texts), tuple(starts), not spans)


def _range_ints(rng: str, path: Path, where: str, field: str) -> tuple[int, int]:
    parts = rng.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise InputError(f"range {rng[:40]!r} is not START:END (two whole numbers)", path=path, record=where,
                         field=field) from exc


def _char_range(rng: str, context: str, path: Path, where: str) -> tuple[int, int]:
    s, e = _range_ints(rng, path, where, "answer_char_ranges")
    if not 0 <= s < e <= len(context):
        raise InputError(f"character range {rng} outside the story ({len(context)} characters)", path=path,
                         record=where, field="answer_char_ranges")
    return s, e


def _span(value, context: str, path: Path, where: str, field: str, inclusive: bool = False) -> tuple[int, int]:
    """A [start, end] pair of whole numbers inside `context` (MRQA's ends are inclusive)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        raise InputError(f"expected a [start, end] pair of whole numbers, got {str(value)[:40]}", path=path,
                         record=where, field=field)
    s, e = value[0], value[1] + (1 if inclusive else 0)
    if not 0 <= s < e <= len(context):
        raise InputError(f"span {list(value)} outside the context ({len(context)} characters)", path=path,
                         record=where, field=field)
    return s, e


def _read_newsqa_json(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "the format's own ids"
    obj = _read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise InputError("not a NewsQA JSON file (no top-level 'data' list)", path=path, field="data")
    for s, story in enumerate(obj["data"]):
        where = f"data[{s}]"
        _typed(story, dict, path, where, None, "an object {storyId, text, questions}")
        story_id = _typed(_field(story, "storyId", path, where), (str, int), path, where, "storyId", "a string")
        kind = story.get("type")
        if kind is not None:
            _typed(kind, str, path, where, "type", "a string")
        if split and kind and kind != split:
            continue
        context = _typed(_field(story, "text", path, where), str, path, where, "text", "a string")
        for q, question in enumerate(_typed(_field(story, "questions", path, where), list, path, where,
                                            "questions", "a list")):
            qwhere = f"{where}.questions[{q}]"
            _typed(question, dict, path, qwhere, None, "an object {q, consensus}")
            text = _typed(_field(question, "q", path, qwhere), str, path, qwhere, "q", "a string")
            consensus = _typed(question.get("consensus", {}), dict, path, qwhere, "consensus", "an object")
            spans = [_span([consensus["s"], consensus.get("e")], context, path, qwhere, "consensus")] \
                if "s" in consensus else []
            texts, starts = _spans_to_answers(context, spans)
            yield Record(f"{story_id}#{q}", text, context, None, tuple(texts), tuple(starts), not spans)


def _read_mrqa(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "the format's own ids"
    for lineno, row in _json_lines(path):
        where = f"line {lineno}"
        _typed(row, dict, path, where, None, "an object {context, qas} or {header}")
        if "header" in row:
            continue
        context = _typed(_field(row, "context", path, where), str, path, where, "context", "a string")
        for n, qa in enumerate(_typed(_field(row, "qas", path, where), list, path, where, "qas", "a list")):
            _typed(qa, dict, path, f"{where}.qas[{n}]", None, "an object {qid, question, ...}")
            qid = _typed(_field(qa, "qid", path, where), (str, int), path, f"{where}.qas[{n}]", "qid", "a string")
            here = f"question {qid}"
            question = _typed(_field(qa, "question", path, here), str, path, here, "question", "a string")
            spans = []
            for d, det in enumerate(_typed(qa.get("detected_answers", []), list, path, here, "detected_answers",
                                           "a list")):
                _typed(det, dict, path, here, f"detected_answers[{d}]", "an object {char_spans}")
                for c, span in enumerate(_typed(det.get("char_spans", []), list, path, here,
                                                f"detected_answers[{d}].char_spans", "a list")):
                    spans.append(_span(span, context, path, here, f"detected_answers[{d}].char_spans[{c}]",
                                       inclusive=True))  # MRQA char spans are inclusive
            texts, starts = _spans_to_answers(context, dict.fromkeys(spans))
            if not texts:
                texts = list(_typed(qa.get("answers", []), list, path, here, "answers", "a list of strings"))
                for k, a in enumerate(texts):
                    _typed(a, str, path, here, f"answers[{k}]", "a string")
                starts = [None] * len(texts)
            yield Record(str(qid), question, context, None, tuple(texts),
                         tuple(-1 if x is None else x for x in starts), not texts)


# --------------------------------------------------------------------------- IMDB

def _read_imdb_tsv(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "row numbers"
    index = 0
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep:
            raise InputError("expected 'text<TAB>label'", path=path, record=f"line {lineno}", field="label")
        try:
            value = int(label)
        except ValueError as exc:
            raise InputError(f"label {label!r} is not an integer", path=path, record=f"line {lineno}",
                             field="label") from exc
        yield Record(str(index), text, None, value)
        index += 1


def _read_aclimdb(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    info.ids = "the format's own ids"
    root = path
    if not (root / "pos").is_dir() and not (root / "neg").is_dir():
        root = path / (split or "test")
        if not root.is_dir():
            raise InputError(f"no '{split or 'test'}' split folder", path=path)
    for label_name, label in (("neg", 0), ("pos", 1)):
        folder = root / label_name
        if not folder.is_dir():
            continue

        def key(p: Path):
            head = p.stem.split("_")[0]
            return (int(head) if head.isdigit() else 1 << 62, p.name)

        for f in sorted(folder.glob("*.txt"), key=key):
            try:
                text = read_document(f, limit=max_record_bytes(), what="review").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"undecodable bytes (not UTF-8) at byte {exc.start}", path=f) from exc
            yield Record(f"{root.name}/{label_name}/{f.stem}", text, None, label)


# --------------------------------------------------------------------------- Hugging Face datasets

def _rows_from_hf(ds, path, fields: Fields, info: Provenance) -> Iterator[Record]:
    columns = set(ds.column_names)
    if {"question", "context"} <= columns:
        info.ids = "the dataset's question ids"
        for i, row in enumerate(ds):
            answers = row.get("answers") or {"text": [], "answer_start": []}
            texts = list(answers.get("text", []))
            starts = list(answers.get("answer_start", [None] * len(texts)))
            yield _qa_record(path, f"row {i}", row.get("id", i), row["question"], row["context"], texts, starts,
                             not texts)
        return
    if fields.text not in columns and "text" not in columns:
        raise InputError(f"dataset has no text column (columns: {sorted(columns)})", path=path, field=fields.text)
    if fields.label is None and "label" in columns:
        fields = Fields(fields.text, fields.pair, fields.id, "label")
    rows = ((row, f"row {i}") for i, row in enumerate(ds))
    for i, (row, record, f) in enumerate(_auto_ids(rows, fields, path, info)):
        yield _from_row(row, i, path, record, f)


def _read_hf(name: str, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    """`name[:config]:split`, e.g. `squad_v2:validation` or `imdb:test` (needs the hub or its cache)."""
    import datasets

    parts = name.split(":")
    if len(parts) == 1:
        dname, config, dsplit = parts[0], None, split or "validation"
    elif len(parts) == 2:
        dname, config, dsplit = parts[0], None, parts[1]
    else:
        dname, config, dsplit = parts[0], parts[1], parts[2]
    try:
        ds = datasets.load_dataset(dname, config, split=dsplit)
    except Exception as exc:
        raise InputError(f"could not load Hugging Face dataset ({type(exc).__name__}: {str(exc)[:200]})",
                         path=name) from exc
    yield from _rows_from_hf(ds, name, fields, info)


def _read_hf_disk(path: Path, fields: Fields, info: Provenance, split: str | None = None) -> Iterator[Record]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise InputError(f"a saved DatasetDict with splits {', '.join(ds)}: say which with --split (or "
                                 "`split:` in an experiment file)", path=path, field="split")
            split = next(iter(ds))
        if split not in ds:
            raise InputError(f"no split {split!r} (splits: {', '.join(ds)})", path=path, field="split")
        info.split = split
        ds = ds[split]
    yield from _rows_from_hf(ds, path, fields, info)


# --------------------------------------------------------------------------- entry point

_READERS: dict[str, Callable[..., Iterator[Record]]] = {
    "text": _read_text,
    "jsonl": _read_jsonl,
    "json": _read_json_array,
    "csv": lambda p, f, info, split=None: _read_delimited(p, f, info, ","),
    "tsv": lambda p, f, info, split=None: _read_delimited(p, f, info, "\t"),
    "parquet": _read_parquet,
    "squad": _read_squad,
    "queries": _read_queries,
    "newsqa-csv": _read_newsqa_csv,
    "newsqa-json": _read_newsqa_json,
    "mrqa": _read_mrqa,
    "imdb-tsv": _read_imdb_tsv,
    "aclimdb": _read_aclimdb,
    "hf-disk": _read_hf_disk,
}


@dataclass
class Provenance:
    """What a reader found about the records it yields, filled as it reads (the first record tells where the ids
    come from): the format, where the ids came from, the split it read."""

    format: str | None = None
    ids: str | None = None
    split: str | None = None


class RecordStream:
    """A corpus's records in file order. Once iterated, `provenance` (a Provenance) says what the reader found."""

    def __init__(self, records: Iterator[Record], provenance: Provenance):
        self._records, self.provenance = records, provenance

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> Record:
        return next(self._records)


def read_corpus(path: str | Path, fmt: str | None = None, *, text_field: str = "text",
                pair_field: str | None = None, id_field: str | None = None, label_field: str | None = None,
                split: str | None = None, limit: int | None = None, every: int | None = None,
                offset: int = 0) -> RecordStream:
    """The corpus's records in file order, as a `RecordStream`.

    fmt: one of FORMATS, or None to detect it. The *_field options apply to jsonl/json/csv/tsv/parquet;
    without `id_field` those formats use the records' "id" field when the first record has one, else row
    numbers. every/offset: a deterministic subset, the records whose 0-based position p has
    p % every == offset (e.g. every=2, offset=0 and offset=1 are two disjoint halves); limit applies after it.
    Raises InputError for an empty corpus or a duplicate id (after the rows before it were yielded).
    """
    info = Provenance()
    return RecordStream(_read_corpus(path, fmt, Fields(text_field, pair_field, id_field, label_field), split, limit,
                                     every, offset, info), info)


QA_LAYOUTS = ("squad", "queries", "newsqa-csv", "newsqa-json", "mrqa")  # records: question + context
QA_PARTS = ("question", "context")
WHOLE_TEXT = ("text", "imdb-tsv", "aclimdb")  # one text per line or file: no named fields


def _honour_fields(fmt: str, fields: Fields, path) -> Callable[[Record], Record] | None:
    """How the corpus options apply to `fmt`: None when its reader honours them itself (the named-field formats),
    a function picking the asked parts of each record (QA layouts: `--text-field question|context`, with
    `--pair-field` for a pair), or InputError naming an option the format cannot honour."""
    given = {"--text-field": fields.text if fields.text != "text" else None, "--pair-field": fields.pair,
             "--id-field": fields.id, "--label-field": fields.label}

    def refuse(option: str, why: str):
        raise InputError(f"{option} {given[option]!r}: {why}", path=path, field=option[2:].replace("-", "_"))

    if fmt in WHOLE_TEXT:
        what = "one text per line" if fmt == "text" else "reviews with their labels, in a fixed layout"
        for option, value in given.items():
            if value is not None:
                refuse(option, f"this corpus ({fmt}) has no named fields ({what}); convert it to JSON lines or "
                               "CSV to choose fields")
        return None
    if fmt not in QA_LAYOUTS:
        return None
    for option in ("--id-field", "--label-field"):
        if given[option] is not None:
            refuse(option, f"this corpus ({fmt}) has its own question ids and no labels")
    text, pair = given["--text-field"], fields.pair
    for option, value in (("--text-field", text), ("--pair-field", pair)):
        if value is not None and value not in QA_PARTS:
            refuse(option, f"a record of this corpus ({fmt}) has the fields question and context (default: the "
                           "question-context pair, as a QA model reads it)")
    if text is None:
        if pair is not None:
            refuse("--pair-field", "give --text-field question (or context) with it")
        return None  # the default: the question-context pair
    if pair == text:
        refuse("--pair-field", "is the --text-field itself")

    def pick(r: Record) -> Record:
        parts = {"question": r.text, "context": r.text_pair}
        return dataclasses.replace(r, text=parts[text], text_pair=parts[pair] if pair else None)
    return pick


def _read_corpus(path, fmt: str | None, fields: Fields, split, limit, every, offset, info: Provenance) -> Iterator[Record]:
    id_field = fields.id
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", path=path)
    if every is not None and not (every >= 1 and 0 <= offset < every):
        raise InputError(f"--every {every} --offset {offset}: need every >= 1 and 0 <= offset < every")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: need at least 1")
    info.format = fmt
    pick = _honour_fields(fmt, fields, path)  # every option is honoured or refused, never ignored
    if fmt == "hf":
        records = _read_hf(str(path), fields, info, split)
    else:
        p = Path(path)
        if not p.exists():
            raise InputError("no such file or folder", path=p)
        records = _READERS[fmt](p, fields, info, split)  # each reader says where its ids come from in `info`
    if pick is not None:
        records = (pick(r) for r in records)
    seen: set[str] = set()
    n = 0
    for pos, rec in enumerate(records):
        if rec.id in seen:
            raise InputError(f"duplicate id {rec.id!r}", path=path, record=f"record {pos}",
                             field=id_field or "id")
        if "\0" in rec.id or len(rec.id) > MAX_ID_CHARS:
            raise InputError("id holds a NUL character" if "\0" in rec.id else
                             f"id is longer than {MAX_ID_CHARS} characters", path=path, record=f"record {pos}",
                             field=id_field or "id")
        seen.add(rec.id)
        if every is not None and pos % every != offset:
            continue
        yield rec
        n += 1
        if limit is not None and n >= limit:
            return
    if n == 0:
        raise InputError("empty corpus: no records", path=path)

