"""The text-extraction process as a security boundary: it holds none of the server's secrets,
it runs out of memory alone, and nothing it sends back can run code in the server."""

from __future__ import annotations

import ast
import pickle
import re
import sys
from pathlib import Path

import pytest

from knowledge import limits as limits_module
from knowledge.errors import ParseError
from knowledge.extractor import document_from_dict, document_to_dict
from knowledge.ingest import Source, ingest_files
from knowledge.limits import Extractor, IngestLimits, extractor_status, parse_limited
from knowledge.parse.base import Block, ParsedDocument
from tests.conftest import CONTOSO, FIXTURES, drain

ROOT = Path(__file__).resolve().parents[1]
SECRETS = (
    "OPENAI_API_KEY",
    "TSUMUGI_ESCALATE_KEY",
    "TSUMUGI_CHAT_KEY",
    "TSUMUGI_ADMIN_PASSWORD",
    "TSUMUGI_API_KEYS",
    "HF_TOKEN",
)
MEMORY_MESSAGE = r"needs more memory than the \d+ MB allowed to read one file \(TSUMUGI_PARSE_MEMORY_MB\)"


def test_the_extraction_process_inherits_no_secrets(monkeypatch):
    for name in SECRETS:
        monkeypatch.setenv(name, "secret-value")
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # allowed: shows the report reflects the server's environment
    limits_module._extractor.stop()  # the next request starts a process with this environment
    limits = IngestLimits()
    seen = extractor_status(limits)["environment"]
    assert "TZ" in seen and "PATH" in seen
    assert [name for name in SECRETS if name in seen] == []
    # The same process reads documents: its environment is the one parsers run in.
    pdf = FIXTURES / "pypdf-multicolumn.pdf"
    assert parse_limited(pdf.read_bytes(), pdf.name, limits).pages == 3
    assert extractor_status(limits)["environment"] == seen


def test_a_memory_bomb_fails_its_file_and_the_batch_goes_on(library, tmp_path):
    # What the process takes with its parsers loaded, and a limit a little above it.
    baseline = extractor_status(IngestLimits())["used_mb"]
    tight = IngestLimits(max_parse_memory_mb=baseline + 64)
    bomb = tmp_path / "bomb.txt"
    bomb.write_bytes(b"word " * 8_000_000)  # 40 MB: reading it takes more than 64 MB
    with pytest.raises(ParseError, match=MEMORY_MESSAGE):
        parse_limited(bomb.read_bytes(), bomb.name, tight)
    status = extractor_status(tight)
    assert status["limit_mb"] == tight.max_parse_memory_mb, "a fresh process, under the limit too"
    # In a batch: the file fails with its sentence, the next one is read and added.
    good = CONTOSO / "product_info_1.md"
    kb = library.create("memory")
    _, results = drain(ingest_files(kb, [Source(bomb, bomb.name), Source(good, good.name)], limits=tight))
    assert results[0].status == "failed"
    assert results[0].message.startswith("bomb.txt ") and re.search(MEMORY_MESSAGE, results[0].message)
    assert results[1].status == "added"
    # Without the limit the same file is read: the limit, not the file, stopped it.
    assert parse_limited(bomb.read_bytes(), bomb.name, IngestLimits()).blocks


def _hostile_child(tmp_path: Path, reply: bytes) -> list[str]:
    """A program that reads one request like the extractor and answers with ``reply`` (a
    whole frame, or b"" to die without answering)."""
    (tmp_path / "reply.bin").write_bytes(reply)
    script = tmp_path / "hostile.py"
    script.write_text(
        "import os, struct, sys\n"
        "def frame():\n"
        "    size = struct.unpack('<Q', sys.stdin.buffer.read(8))[0]\n"
        "    return sys.stdin.buffer.read(size)\n"
        "frame(); frame()\n"
        f"reply = open({str(tmp_path / 'reply.bin')!r}, 'rb').read()\n"
        "if not reply:\n"
        "    os.kill(os.getpid(), 9)  # as the kernel does to a process out of memory\n"
        "sys.stdout.buffer.write(reply)\n"
        "sys.stdout.buffer.flush()\n"
        "sys.stdin.buffer.read()\n",
        encoding="utf-8",
    )
    return [sys.executable, str(script)]


class _Exploit:
    """Unpickling this opens (creates) a file: what a parser exploit would send a server that unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def test_the_server_never_unpickles_what_the_process_sends(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    exploit = pickle.dumps(("ok", _Exploit(marker)))
    pickle.loads(exploit)[1].close()  # the payload is live: unpickled, it runs
    assert marker.exists()
    marker.unlink()
    hostile = Extractor(_hostile_child(tmp_path, _frame(exploit)))
    monkeypatch.setattr(limits_module, "_extractor", hostile)
    try:
        with pytest.raises(ParseError, match="answered with something unreadable while reading note.txt"):
            parse_limited(b"A note.", "note.txt", IngestLimits())
    finally:
        hostile.stop()
    assert not marker.exists()
    # And neither side of the pipe can: no pickle (or its relatives) is imported there.
    for module in ("knowledge/limits.py", "knowledge/extractor.py"):
        tree = ast.parse((ROOT / module).read_text("utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}, module


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        # JSON of the wrong shape: a block kind no parser makes, and a field no document has.
        (b'{"status": "ok", "value": {"name": "n", "kind": "text", "pages": null, "encoding": null, '
         b'"blocks": [{"text": "t", "kind": "script", "page": null, "headings": []}]}}', "unreadable"),
        (b'{"status": "ok", "value": {"name": "n", "kind": "text", "pages": null, "encoding": null, '
         b'"blocks": [], "__class__": "os.system"}}', "unreadable"),
        (b"[" * 100_000 + b"]" * 100_000, "unreadable"),  # nesting deeper than the parser recurses
        (b"\xff\xfe not utf-8", "unreadable"),
        (None, "unreadable"),  # a length of 2**60 bytes, refused before anything is read
        (b"", MEMORY_MESSAGE),  # killed: the process is replaced and the file named
    ],
    ids=["unknown-block-kind", "extra-field", "deep-nesting", "not-utf-8", "huge-length", "killed"],
)  # fmt: skip
def test_a_hostile_reply_is_a_clean_error_and_the_process_is_replaced(tmp_path, monkeypatch, reply, message):
    payload = (2**60).to_bytes(8, "little") if reply is None else (_frame(reply) if reply else b"")
    hostile = Extractor(_hostile_child(tmp_path, payload))
    monkeypatch.setattr(limits_module, "_extractor", hostile)
    try:
        with pytest.raises(ParseError, match=message):
            parse_limited(b"A note.", "note.txt", IngestLimits())
        assert hostile._proc is None, "a process that misbehaved is not asked again"
    finally:
        hostile.stop()
        monkeypatch.undo()
    # The real process still reads files afterwards.
    assert parse_limited(b"A note about tents.", "note.txt", IngestLimits()).text == "A note about tents."


def test_a_parser_missing_from_the_install_is_named_not_blamed_on_the_file(tmp_path, monkeypatch):
    shadow = tmp_path / "site" / "openpyxl"
    shadow.mkdir(parents=True)
    shadow.joinpath("__init__.py").write_text("raise ImportError('No module named openpyxl')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))  # ahead of site-packages in the child
    broken = Extractor()
    monkeypatch.setattr(limits_module, "_extractor", broken)
    try:
        with pytest.raises(ParseError) as caught:
            parse_limited(b"A note.", "note.txt", IngestLimits())
        assert str(caught.value) == (
            "The text extractor cannot start (No module named openpyxl), so no file can be read; "
            "reinstall Tsumugi's requirements (`make setup`)."
        )
        with pytest.raises(ParseError, match="cannot start"):  # the next file is told the same
            parse_limited(b"Another note.", "other.txt", IngestLimits())
    finally:
        broken.stop()


def test_documents_cross_as_exactly_their_fields():
    doc = ParsedDocument(
        "a.pdf",
        "pdf",
        [Block("Setup", "heading", 1, ()), Block("Open the box.", "paragraph", 2, ("Setup",))],
        pages=2,
        encoding=None,
    )
    assert document_from_dict(document_to_dict(doc)) == doc
    good = document_to_dict(doc)
    for bad in (
        {**good, "extra": 1},
        {**good, "pages": True},
        {**good, "pages": "2"},
        {**good, "blocks": [{**good["blocks"][0], "kind": "script"}]},
        {**good, "blocks": [{**good["blocks"][0], "headings": [["nested"]]}]},
        {k: v for k, v in good.items() if k != "encoding"},
        ["not", "a", "dict"],
    ):
        with pytest.raises(ValueError):
            document_from_dict(bad)
