"""Tables of records users upload (CSV, TSV, XLSX, JSONL, Parquet): question/answer pairs for
tuning, evaluation sets. Reads the file, recognises common column names, and reports what it found.

Dataset folders and hub datasets become the same :class:`RecordTable` through
:mod:`assistant.datasets_io`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from knowledge.errors import ParseError
from knowledge.limits import IngestLimits, call_limited, check_archive, check_data_size
from knowledge.parse.encoding import decode_bytes

RECORD_EXTENSIONS = (".csv", ".tsv", ".xlsx", ".jsonl", ".json", ".parquet")

ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "question": (
        "question", "questions", "q", "query", "prompt", "input", "instruction", "user",
        "customer message", "message", "inquiry", "質問", "問い", "問", "問い合わせ", "お問い合わせ",
        "入力", "設問",
    ),
    "answer": (
        "answer", "answers", "a", "response", "output", "completion", "reply", "assistant",
        "expected", "expected answer", "target", "回答", "答え", "答", "返信", "出力", "応答", "正解",
    ),
    "source": ("source", "document", "doc", "file", "source document", "出典", "文書", "ソース"),
    "unanswerable": ("unanswerable", "no answer", "not answerable", "回答不能", "回答なし"),
}  # fmt: skip
"""Column names recognised for each role, compared after lower-casing and dropping punctuation."""


def _norm(name: str) -> str:
    name = unicodedata.normalize("NFKC", str(name)).lower()
    return re.sub(r"[\s_\-:./]+", " ", name).strip()


@dataclass
class RecordTable:
    name: str
    columns: list[str]
    rows: list[dict[str, object]]
    messages: list[list[dict]] = field(default_factory=list)
    """Chat-format records (``{"messages": [...]}`` lines), kept apart from the columns."""

    def guess(self, role: str) -> str | None:
        """The column that plays ``role`` (question, answer, ...), or None when no name matches."""
        wanted = {_norm(n) for n in ROLE_NAMES[role]}
        for col in self.columns:
            if _norm(col) in wanted:
                return col
        return None

    def column(self, name: str | None, role: str) -> str | None:
        """Check a user's choice of column for ``role``; None and "" mean "guess it"."""
        if not name:
            return self.guess(role)
        if name not in self.columns:
            raise ParseError(
                f"{self.name} has no column named {name!r}; its columns are {', '.join(self.columns)}."
            )
        return name


def read_records(path: str | Path, data: bytes | None = None, name: str | None = None) -> RecordTable:
    """Read a CSV, TSV, XLSX, JSONL or Parquet file into rows of named columns."""
    path = Path(path)
    name = name or path.name
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ParseError(f"{name} could not be read: {exc.strerror}.") from exc
    suffix = Path(name).suffix.lower()
    if not data.strip():
        raise ParseError(f"{name} is empty; upload a file with a header row and at least one row.")
    if data[:2] == b"PK" or suffix == ".xlsx":
        return _read_xlsx(data, name)
    if data[:4] == b"PAR1" or suffix == ".parquet":
        return _read_parquet(data, name)
    text, _ = decode_bytes(data)
    if suffix in (".jsonl", ".json") or text.lstrip().startswith(("{", "[")):
        return _read_jsonl(text, name)
    if suffix in (".csv", ".tsv", ".txt", ""):
        return _read_delimited(text, name, "\t" if suffix == ".tsv" else None)
    raise ParseError(f"{name}: {suffix} files are not supported here; use CSV, TSV, XLSX, JSONL or Parquet.")


def _unique(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, h in enumerate(header):
        h = (h or "").strip() or f"column {i + 1}"
        if h in seen:
            seen[h] += 1
            h = f"{h} ({seen[h]})"
        else:
            seen[h] = 1
        out.append(h)
    return out


def _read_delimited(text: str, name: str, delimiter: str | None) -> RecordTable:
    if delimiter is None:
        sample = text[:4096]
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",\t;").delimiter
        except csv.Error:
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ParseError(f"{name} has no rows under its header; add one row per example.")
    header = _unique(rows[0])
    records = [
        {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)} for row in rows[1:]
    ]
    return RecordTable(name, header, records)


def _read_xlsx(data: bytes, name: str) -> RecordTable:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on damaged files
        raise ParseError(f"{name} is not a readable Excel workbook; save it again as .xlsx.") from exc
    try:
        sheet = book.worksheets[0]
        rows = [
            ["" if v is None else str(v).strip() for v in row] for row in sheet.iter_rows(values_only=True)
        ]
    finally:
        book.close()
    rows = [r for r in rows if any(r)]
    if len(rows) < 2:
        raise ParseError(f"The first sheet of {name} has no rows under its header; add one row per example.")
    header = _unique(rows[0])
    return RecordTable(name, header, [dict(zip(header, r)) for r in rows[1:]])


def _read_jsonl(text: str, name: str) -> RecordTable:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ParseError(f"{name} is not valid JSON (line {exc.lineno}): {exc.msg}.") from exc
    else:
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ParseError(
                    f"Line {lineno} of {name} is not valid JSON ({exc.msg}); JSONL needs one object per line."
                ) from exc
    return table_from_items(items, name, "add one JSON object per line")


def _read_parquet(data: bytes, name: str) -> RecordTable:
    """A Parquet file, read a row group at a time (the reader ``datasets`` itself uses)."""
    import pyarrow
    import pyarrow.parquet

    try:
        reader = pyarrow.parquet.ParquetFile(pyarrow.BufferReader(data))
        items = (row for batch in reader.iter_batches(batch_size=1024) for row in batch.to_pylist())
        return table_from_items(items, name, "write one row per example")
    except (pyarrow.ArrowException, OSError) as exc:
        raise ParseError(
            f"{name} is not a readable Parquet file; write it again (pandas, datasets)."
        ) from exc


def table_from_items(items, name: str, remedy: str) -> RecordTable:
    """Records (dicts) as a table: a ``messages`` list is a chat record, other keys are columns.

    ``remedy`` ends the sentence that says the source holds no records."""
    columns: list[str] = []
    rows: list[dict[str, object]] = []
    messages: list[list[dict]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ParseError(f"{name} should hold one record (object) per row, found {type(item).__name__}.")
        if isinstance(item.get("messages"), list):
            messages.append(item["messages"])
            continue
        for key in item:
            if key not in columns:
                columns.append(key)
        rows.append({k: _cell(v) for k, v in item.items()})
    if not rows and not messages:
        raise ParseError(f"{name} holds no records; {remedy}.")
    return RecordTable(name, columns, rows, messages)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    return str(value).strip()


def truthy(value: object) -> bool:
    """A spreadsheet's idea of yes: 1, true, yes, x, ✓, はい."""
    if isinstance(value, bool):
        return value
    return _norm(str(value)) in ("1", "true", "yes", "y", "x", "✓", "はい", "○", "unanswerable")


PREVIEW_CHARS = 300
"""Longest text of one previewed cell: a preview goes to the browser, a 50 MB cell must not."""
MAX_COLUMNS = 256
"""Most columns a table may have; its column names go to the browser as choices."""
MAX_COLUMN_NAME = 200
"""Longest column name accepted (a header cell longer than this is not a header)."""


def cell_text(value: object) -> str:
    """A cell as stripped text (None: empty)."""
    return "" if value is None else str(value).strip()


def clip(value: object, limit: int = PREVIEW_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters, an ellipsis marking a cut."""
    text = cell_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_record(data: bytes, name: str) -> dict:
    """The table in ``data`` as plain data, for the extraction process to send back."""
    return asdict(read_records(name, data, name))


_SCALARS = (str, int, float, bool)


def _table_from_record(record: object, name: str) -> RecordTable:
    """The RecordTable in :func:`table_record`'s dict, checked field by field: exactly its
    fields, cells of plain values, chat turns of JSON objects, and a header of short names."""
    unreadable = ParseError(
        f"{name} could not be read as a table; save it again as CSV, XLSX, JSONL or Parquet."
    )
    if not isinstance(record, dict) or set(record) != {"name", "columns", "rows", "messages"}:
        raise unreadable
    columns, rows, messages = record["columns"], record["rows"], record["messages"]
    if not (isinstance(columns, list) and isinstance(rows, list) and isinstance(messages, list)):
        raise unreadable
    if not all(isinstance(c, str) for c in columns):
        raise unreadable
    if len(columns) > MAX_COLUMNS or any(len(c) > MAX_COLUMN_NAME for c in columns):
        raise ParseError(
            f"{name} has {len(columns)} columns or a column name over {MAX_COLUMN_NAME} characters; "
            f"its first row should name at most {MAX_COLUMNS} columns, briefly (e.g. question, answer)."
        )
    for row in rows:
        if not isinstance(row, dict) or not all(
            isinstance(k, str) and isinstance(v, _SCALARS) for k, v in row.items()
        ):
            raise unreadable
    for turns in messages:
        if not isinstance(turns, list):
            raise unreadable
    return RecordTable(name, columns, rows, messages)


def read_table(
    path: str | Path,
    data: bytes | None = None,
    name: str | None = None,
    limits: IngestLimits | None = None,
) -> RecordTable:
    """A CSV, TSV, XLSX, JSONL or Parquet table of tuning or evaluation data, read within ``limits``.

    The size is checked before the file is read, an XLSX's zip before it is opened (zip bombs),
    and the table is parsed in the extraction process, stopped after ``parse_timeout_s`` or
    beyond ``max_parse_memory_mb``: a hostile file costs the server neither time nor memory."""
    limits = limits or IngestLimits()
    path = Path(path)
    name = name or path.name
    try:
        check_data_size(name, path.stat().st_size if data is None else len(data), limits)
        data = path.read_bytes() if data is None else data
    except OSError as exc:
        raise ParseError(f"{name} could not be read: {exc.strerror}.") from exc
    if data[:2] == b"PK":  # read_records opens these as workbooks: check the zip first
        check_archive(data, name, limits)
    return _table_from_record(call_limited("assistant.records:table_record", data, name, limits), name)
