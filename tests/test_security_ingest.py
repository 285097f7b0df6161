"""Documents keep their identity: names that are paths, one spelling per name, no hidden
characters, nothing skipped without a word, large folders from the command line, and a
Cancel in the Knowledge tab that says where it stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from knowledge.errors import TsumugiError
from knowledge.ingest import Source, collect_sources, ingest_files, scan_sources
from knowledge.names import check_name, document_name
from tests.conftest import CONTOSO, ROOT, drain

NFD = unicodedata.normalize("NFD", "Café")
NFC = unicodedata.normalize("NFC", "Café")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("teamA/README.md", "teamA/README.md"),
        ("../../evil.md", "evil.md"),
        ("/etc/passwd.md", "etc/passwd.md"),
        ("..\\..\\evil.md", "evil.md"),
        ("C:\\Users\\kim\\notes.md", "Users/kim/notes.md"),
        ("a/./b//../c.md", "a/b/c.md"),
        ("..hidden..name.txt", "..hidden..name.txt"),
        (f"{NFD}.md", f"{NFC}.md"),
        ("サポート/手順書.pdf", "サポート/手順書.pdf"),
    ],
)
def test_document_names_stay_inside_the_knowledge_base(given, stored):
    assert document_name(given) == stored
    assert Source(Path("x"), given).name == stored


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("invoice\u202etxt.exe", "right-to-left override (U+202E)"),
        ("report\u2066.md", "left-to-right isolate (U+2066)"),
        ("a\u200fb.md", "right-to-left mark (U+200F)"),
        ("bell\x07.md", "control character (U+0007)"),
        ("two\nlines.md", "control character (U+000A)"),
    ],
)
def test_hidden_characters_are_refused_in_every_name(name, what):
    for check in (
        document_name,
        check_name,
        lambda n: check_name(n, "user"),
        lambda n: check_name(n, "API key"),
    ):
        with pytest.raises(TsumugiError, match="which can hide or reverse how the name reads") as info:
            check(name)
        assert what in str(info.value) and "\n" not in str(info.value)


def test_knowledge_base_names_have_one_spelling(library):
    assert check_name(NFD, "user") == NFC
    library.create(NFD)
    assert library.names() == [NFC] and library.exists(NFD) and library.get(NFD) is library.get(NFC)
    with pytest.raises(TsumugiError, match="already exists"):
        library.create(NFC)


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def test_same_file_name_in_two_subfolders_is_two_documents(library, tmp_path, embedder):
    from knowledge.retrieve import RetrievalConfig, retrieve

    _write(
        tmp_path / "docs",
        {
            "teamA/README.md": "# Team A\n\nTeam A owns the glacier lantern returns desk.",
            "teamB/README.md": "# Team B\n\nTeam B repairs the volcano stove burners.",
        },
    )
    kb = library.create("teams")
    _, results = drain(ingest_files(kb, collect_sources([tmp_path / "docs"])))
    assert [(r.name, r.status) for r in results] == [
        ("teamA/README.md", "added"),
        ("teamB/README.md", "added"),
    ]
    assert [d.name for d in kb.documents()] == ["teamA/README.md", "teamB/README.md"]
    for query, doc in (
        ("glacier lantern returns", "teamA/README.md"),
        ("volcano stove burners", "teamB/README.md"),
    ):
        assert retrieve(kb, query, RetrievalConfig(cutoff=False))[0].doc == doc
    stored = [p.resolve() for p in kb.folder.rglob("*") if p.is_file()]
    assert all(kb.folder.resolve() in p.parents for p in stored)
    kb.delete_document(kb.find_by_name("teamA/README.md").id)
    assert [d.name for d in kb.documents()] == ["teamB/README.md"]


def test_one_name_in_two_spellings_is_one_document(library, tmp_path, embedder):
    kb = library.create("spellings")
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    first.write_text("# Menu\n\nThe café serves tea.", encoding="utf-8")
    second.write_text("# Menu\n\nThe café now serves coffee too.", encoding="utf-8")
    assert drain(ingest_files(kb, [Source(first, f"{NFD}.md")]))[1][0].status == "added"
    assert drain(ingest_files(kb, [Source(second, f"{NFC}.md")]))[1][0].status == "updated"
    assert [d.name for d in kb.documents()] == [f"{NFC}.md"]
    assert kb.find_by_name(f"{NFD}.md") is not None


def test_a_refused_name_fails_alone_and_a_name_twice_replaces_nothing(library, tmp_path, embedder):
    kb = library.create("refusals")
    files = [tmp_path / f"{n}.md" for n in range(3)]
    for n, path in enumerate(files):
        path.write_text(f"# Note {n}\n\nNote number {n} is about tent pegs of size {n}.", encoding="utf-8")
    sources = [
        Source(files[0], "evil\u202etxt.md"),
        Source(files[1], "notes.md"),
        Source(files[2], "notes.md"),
    ]
    results = drain(ingest_files(kb, sources))[1]
    assert results[0].status == "failed" and "right-to-left override" in results[0].message
    assert results[1].status == "added" and results[1].message == "1 chunk."  # not "1 chunks."
    assert results[2].status == "failed" and "also called notes.md" in results[2].message
    assert [d.name for d in kb.documents()] == ["notes.md"]


def test_nothing_in_a_folder_is_skipped_without_a_word(tmp_path):
    docs = tmp_path / "docs"
    _write(
        docs,
        {
            "notes.md": "notes",
            "..hidden..name.txt": "a dot-file",
            ".env": "SECRET=1",
            ".git/config": "[core]",
            ".git/HEAD": "ref",
            "LICENSE": "MIT",
            "photo.png": "png",
        },
    )
    (docs / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    sources, skipped = scan_sources([docs])
    assert [s.name for s in sources] == ["notes.md"]
    why = {r.name: r.message for r in skipped}
    assert set(why) == {"..hidden..name.txt", ".env", ".git/", "LICENSE", "photo.png", "elsewhere/"}
    assert all(r.status == "skipped" for r in skipped)
    assert "hidden file" in why["..hidden..name.txt"] and "2 files not read" in why[".git/"]
    assert ".png files are not read" in why["photo.png"] and "without an extension" in why["LICENSE"]
    assert "link to a folder" in why["elsewhere/"]
    # Given by its own path, a dot-file is read like any other file.
    assert [s.name for s in scan_sources([docs / "..hidden..name.txt"])[0]] == ["..hidden..name.txt"]


def _cli(args, data: Path, **env):
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "TSUMUGI_DATA": str(data), "PYTHONPATH": str(ROOT), **env},
    )


def test_cli_ingests_a_folder_over_the_upload_limit_in_one_command(tmp_path):
    from knowledge.library import Library

    docs = tmp_path / "docs"
    _write(
        docs,
        {f"team{t}/doc{n}.md": f"# Doc {t}{n}\n\nTeam {t} fact number {n}." for t in "AB" for n in range(3)},
    )
    _write(docs, {"README.md": "# Top\n\nThe top-level readme.", ".hidden.md": "hidden", "LICENSE": "MIT"})
    data = tmp_path / "data"
    proc = _cli(["ingest", "--kb", "big", str(docs)], data, TSUMUGI_MAX_FILES="3")
    assert proc.returncode == 0, proc.stderr
    assert "added     teamA/doc0.md" in proc.stdout and "added     teamB/doc0.md" in proc.stdout
    assert "skipped   .hidden.md: A hidden file" in proc.stdout and "skipped   LICENSE" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "7 added, 2 skipped"  # one summary, at the end
    assert "7/7 files" in proc.stderr and "/3 files" not in proc.stderr  # progress over the whole folder
    assert len(Library(data).get("big").documents()) == 7


def test_cli_leaves_no_empty_knowledge_base_behind(tmp_path):
    from knowledge.library import Library

    data = tmp_path / "data"
    proc = _cli(["ingest", "--kb", "ghost", str(tmp_path / "missing")], data)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "does not exist" in proc.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "broken.pdf").write_bytes(b"not a pdf")
    proc = _cli(["ingest", "--kb", "ghost", str(tmp_path / "junk"), str(tmp_path / "broken.pdf")], data)
    assert (
        proc.returncode == 1
        and "skipped   photo.png" in proc.stdout
        and "failed    broken.pdf" in proc.stdout
    )
    assert Library(data).names() == []


def test_knowledge_tab_cancel_stops_between_files_and_says_so(tmp_path, embedder):
    import copy

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui import knowledge_tab

    app = Tsumugi(Settings(data_dir=tmp_path / "data"))
    app.library.create("manuals")
    uploads = [str(CONTOSO / f"product_info_{n}.md") for n in range(1, 11)]
    flag = copy.deepcopy(knowledge_tab.CancelFlag())  # what gr.State hands each session
    shown = None
    for outputs in knowledge_tab.add(app, "manuals", uploads, flag, progress=lambda *a, **k: None):
        shown = outputs
        if not flag.is_set() and len(app.library.get("manuals").documents()) >= 3:
            knowledge_tab.cancel_upload(app, flag)  # what the Cancel button runs
    rows, summary = shown[0]["data"], shown[1]
    assert [r[1] for r in rows] == [knowledge_tab.STATUS_LABEL["added"]] * 3 + [
        knowledge_tab.STATUS_LABEL["cancelled"]
    ] * 7
    assert summary.startswith("Cancelled after 3 of 10 files; 3 added.")
    assert shown[4] == uploads[3:]  # the drop zone keeps what the cancel left out, to add again
    assert len(app.library.get("manuals").documents()) == 3
    # A Cancel while no upload is running is not kept for the next one ...
    knowledge_tab.cancel_upload(app, flag)
    outputs = list(knowledge_tab.add(app, "manuals", uploads[3:4], flag, progress=lambda *a, **k: None))[-1]
    assert outputs[0]["data"][0][1] == knowledge_tab.STATUS_LABEL["added"]
    # ... but one after the click on Add, while the upload waits for its turn, counts.
    knowledge_tab.arm_cancel(app, flag)
    knowledge_tab.cancel_upload(app, flag)
    outputs = list(knowledge_tab.add(app, "manuals", uploads[4:6], flag, progress=lambda *a, **k: None))[-1]
    assert outputs[1].startswith("Cancelled after 0 of 2 files; 0 added.")
    assert len(app.library.get("manuals").documents()) == 4


@pytest.mark.slow
def test_the_cancel_button_reaches_a_running_upload(tmp_path, embedder):
    """Through the running app: Cancel is its own event, handled while the upload runs."""
    import re
    import time

    from gradio_client import Client, handle_file

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui import build_app
    from tests.conftest import free_port

    app = Tsumugi(Settings(data_dir=tmp_path / "data"))
    app.library.create("manuals")
    demo = build_app(app).queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        files = [handle_file(str(CONTOSO / f"product_info_{n}.md")) for n in range(1, 11)]
        job = client.submit("manuals", files, api_name="/add")
        deadline = time.monotonic() + 120
        while len(job.outputs()) < 2 and not job.done():  # the upload has started reading
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.predict(api_name="/cancel_upload")
        rows, summary, *_ = job.result(timeout=120)
        done = re.match(r"Cancelled after (\d+) of 10 files; (\d+) added\.", summary)
        assert done and done[1] == done[2], summary
        assert len(app.library.get("manuals").documents()) == int(done[2]) < 10
        statuses = [row[1] for row in rows["data"]]
        assert statuses.count("⏹ cancelled") == 10 - int(done[1])
    finally:
        demo.close()


def test_an_upload_whose_browser_went_away_leaves_the_knowledge_base_writable(tmp_path, embedder):
    """Gradio resumes a handler's generator on whichever worker thread is free, and closes one
    whose browser went away from another thread. The upload stopped there held the knowledge
    base's write lock (bound to the thread that took it) for good: every later upload waited."""
    import threading

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui import knowledge_tab

    def on_a_new_thread(call, timeout: float = 120.0):
        out = []
        thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
        thread.start()
        thread.join(timeout)
        assert out, "still waiting: the knowledge base's write lock was never released"
        return out[0]

    app = Tsumugi(Settings(data_dir=tmp_path / "data"))
    app.library.create("manuals")
    uploads = [str(CONTOSO / f"product_info_{n}.md") for n in range(1, 5)]
    steps = knowledge_tab.add(
        app, "manuals", uploads, knowledge_tab.CancelFlag(), progress=lambda *a, **k: None
    )
    for _ in range(3):  # the table, then the first files read: the lock is taken
        on_a_new_thread(lambda: next(steps))
    on_a_new_thread(steps.close)  # the tab was closed
    rows = on_a_new_thread(
        lambda: list(
            knowledge_tab.add(
                app, "manuals", uploads[3:], knowledge_tab.CancelFlag(), progress=lambda *a, **k: None
            )
        )[-1][0]["data"]
    )
    assert rows == [
        [uploads[3].rsplit("/", 1)[1], knowledge_tab.STATUS_LABEL["added"], rows[0][2], rows[0][3]]
    ]
    assert [d.name for d in app.library.get("manuals").documents()] == ["product_info_4.md"]
