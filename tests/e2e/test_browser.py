"""End to end in a real browser (Playwright driving Debian's Chromium) against the real server
(``app.py`` in its own process, with login): log in, create a knowledge base, upload files and
see them listed, ask a question and watch the answer stream in with its source, start a quick
tune and see its progress, draft a reply and accept it, rename and delete an adapter that the
other tabs had chosen.

Each step saves a screenshot under ``test-artifacts/e2e/`` (``E2E_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CONTOSO, DATA, FIXTURES, ROOT, free_port, stop_jobs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", ROOT / "test-artifacts" / "e2e"))
ADMIN = ("lead", "correct horse battery")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def serve(data: Path, model_cache: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``app.py`` on a free port over ``data``, once it answers."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "TSUMUGI_DATA": str(data),
        "TSUMUGI_MODEL_CACHE": str(model_cache),
        "TSUMUGI_PORT": str(port),
        "TSUMUGI_HOST": "127.0.0.1",
    }
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(log_path.read_text()[-3000:])
        time.sleep(1)


def launch(p):
    """Debian's Chromium, as the tests drive it."""
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_cache):
    from assistant.serving.users import UserStore

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (make browser).")
    data = tmp_path_factory.mktemp("e2e-data")
    UserStore(data).add(*ADMIN, role="admin")
    proc, url = serve(data, model_cache, tmp_path_factory.mktemp("e2e-log") / "server.log")
    yield url, data
    proc.terminate()
    proc.wait(timeout=30)
    stop_jobs(data)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        # English, whatever the machine's language: the steps read the English page.
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def error_badges(page) -> list[str]:
    """The components that Gradio marked "Error" (each output of an event that failed); a
    toast's title is not one. Read a moment after the toast: the marks come after it."""
    page.wait_for_timeout(1500)
    return [
        badge.evaluate("e => (e.closest('.block') || e.parentElement).outerHTML.slice(0, 300)")
        for badge in page.locator("span.error:not(.toast-title)").all()
    ]


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).first.click()
    page.wait_for_timeout(400)


def upload(page, button_area, paths: list[Path]) -> None:
    with page.expect_file_chooser() as chooser:
        button_area.click()
    chooser.value.set_files([str(p) for p in paths])


def test_1_log_in(page, server):
    url, _ = server
    page.goto(url + "/")
    page.get_by_label("username").fill(ADMIN[0])
    page.get_by_label("password").fill("wrong password")
    page.get_by_role("button", name="Login").click()
    page.wait_for_timeout(1500)
    assert page.get_by_role("tab", name="Chat").count() == 0, "a wrong password must not log in"
    page.get_by_label("username").fill(ADMIN[0])
    page.get_by_label("password").fill(ADMIN[1])
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Knowledge", exact=True).first.wait_for()
    page.get_by_text(f"Logged in as {ADMIN[0]}").wait_for()
    shot(page, "01-logged-in")


def test_1b_drafting_questions_before_any_knowledge_base_is_one_toast(page, server):
    """Before any knowledge base exists, Draft questions says to choose one, in a toast alone:
    refused inside the drafting event, Gradio also marked the question table "Error"."""
    tab(page, "Evaluate")
    page.get_by_text("Or draft questions from the documents").click()  # the accordion
    page.get_by_role("button", name="Draft questions", exact=True).click()
    page.get_by_text("Choose a knowledge base (or create one in the Knowledge tab) first.").wait_for()
    assert not error_badges(page)
    tab(page, "Knowledge")


def test_2_create_a_knowledge_base_and_upload(page, server):
    tab(page, "Knowledge")
    page.get_by_role("button", name="Add to knowledge base").click()  # no base, no files yet
    page.get_by_text("Choose or create a knowledge base first.").wait_for()
    assert not error_badges(page)
    page.get_by_label("New knowledge base").fill("Outdoor shop")
    page.get_by_role("button", name="Create").click()
    page.wait_for_timeout(1500)
    area = page.locator("text=Click to Upload >> visible=true").first
    upload(
        page,
        area,
        [CONTOSO / "product_info_1.md", CONTOSO / "product_info_6.md", DATA / "ja-support" / "henpin.md"],
    )
    page.wait_for_timeout(1500)
    # How many progress bars show at once during the upload (it had one on each output).
    page.evaluate(
        "window.bars = 0; window.barWatch = setInterval(() => { window.bars = Math.max(window.bars,"
        " document.querySelectorAll('.progress-level').length); }, 20)"
    )
    page.get_by_role("button", name="Add to knowledge base").click()
    page.get_by_text("product_info_6.md").first.wait_for()
    page.wait_for_function(
        "document.body.innerText.includes('henpin.md') && document.body.innerText.includes('added')"
    )
    assert page.evaluate("clearInterval(window.barWatch) || window.bars") <= 1  # 4 before
    # The drop zone is empty again: the files are in, and left there they read as not yet added.
    page.locator("text=Click to Upload >> visible=true").first.wait_for(timeout=5000)
    body = page.inner_text("body")
    assert "product_info_1.md" in body and "henpin.md" in body
    shot(page, "02-documents-listed")
    page.get_by_text("Knowledge base settings").click()
    page.get_by_role("button", name="Delete knowledge base").click()  # its name not typed
    page.get_by_text("Type the exact name of the selected knowledge base").wait_for()
    assert not error_badges(page)
    assert page.get_by_role("combobox", name="Knowledge base").input_value() == "Outdoor shop"


def test_3_ask_and_get_the_manuals_words_with_their_source(page, server):
    tab(page, "Chat")
    page.get_by_role("button", name="Send").click()  # nothing typed yet
    page.get_by_text("Type a question first.").wait_for()
    page.wait_for_timeout(500)
    # A toast alone: no "Error" badge on the chat, the question box or the sources.
    assert not error_badges(page)
    page.get_by_placeholder("Ask a question about your documents…").fill(
        "How many people can sleep in the TrailMaster X4 Tent?"
    )
    page.get_by_role("button", name="Send").click()
    bot = page.locator(".message.bot, [data-testid='bot']").last
    lengths = []
    deadline = time.time() + 120
    while time.time() < deadline:
        text = bot.inner_text() if bot.count() else ""
        if not lengths or len(text) != lengths[-1]:
            lengths.append(len(text))
        if "Quoted from the documents" in page.inner_text("body"):
            break
        time.sleep(0.15)
    assert lengths[-1] > 0, "an answer appeared"
    assert re.search(r"4[ -](?:people|person)", bot.inner_text()), bot.inner_text()
    assert "no model wrote it" in page.inner_text("body"), "a quote is not credited to a model"
    assert "product_info_1.md" in page.inner_text("body")
    assert "confidence" in page.inner_text("body")
    # How sure it is, and who wrote it, show without scrolling the sources panel (under the
    # sources, the panel's scroll hid them).
    panel = page.locator(".block", has_text="Cited sources").last.bounding_box()
    for text in ("confidence", "Quoted from the documents"):
        box = page.get_by_text(text).first.bounding_box()
        assert box["y"] + box["height"] <= panel["y"] + panel["height"], f"{text} hidden under the scroll"
    shot(page, "03-quoted-answer-with-source")


def test_3b_stop_ends_the_answer_with_a_page_that_says_so(page, server):
    """Stop ends the answer's own event with a page that says it stopped, the conversation in
    view. Cancelling the event instead left "…" for good when no word had come, or marked the
    chat, the sources and the question box "Error" and showed no conversation."""
    from assistant.answering.styles import STYLE_CHOICES

    tab(page, "Chat")
    page.get_by_text("Settings", exact=True).first.click()
    page.get_by_label(STYLE_CHOICES[2][0]).check()  # the model writes: long enough to stop
    question = "Describe the TrailMaster X4 Tent, its materials, setup and care, in full detail."
    page.get_by_placeholder("Ask a question about your documents…").fill(question)
    page.get_by_role("button", name="Send").click()
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("Stopped: this answer is unfinished.").wait_for(timeout=30_000)
    assert not error_badges(page)
    assert question in page.locator("[data-testid='user']").last.inner_text()
    assert "confidence" not in page.inner_text("body"), "no footer: the answer was not finished"
    assert "cites no passage" not in page.inner_text("body"), "a stopped answer is not a finished one"
    shot(page, "03b-stopped-answer")
    page.get_by_label(STYLE_CHOICES[0][0]).check()
    page.get_by_text("Settings", exact=True).first.click()  # closed again, as the tests after expect


def test_4_start_a_quick_tune_and_see_progress(page, server):
    tab(page, "Tune")
    area = page.locator("text=Click to Upload >> visible=true").first
    upload(page, area, [DATA / "tune" / "kumo-lantern-qa.csv"])
    page.get_by_text("question/answer pairs").first.wait_for()
    page.get_by_label("Adapter name").fill("kumo-e2e")
    page.get_by_role("button", name="Start tuning").click()
    page.wait_for_function(
        "/loading model|training|waiting|steps/.test(document.body.innerText)", timeout=120_000
    )
    shot(page, "04-tuning-progress")
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_text("cancelled").first.wait_for(timeout=120_000)


def test_5_draft_a_reply_and_accept_it(page, server):
    _, data = server
    tab(page, "Draft reply")
    page.get_by_label("Customer message").fill(
        "Hello, we are a family of four. How many people can sleep in the TrailMaster X4 Tent? Thanks, Sam"
    )
    page.get_by_role("button", name="Draft reply").click()
    page.locator("text=Quoted from the documents >> visible=true").first.wait_for(timeout=120_000)
    reply = page.locator("label", has_text="Reply (edit freely before accepting)").locator("textarea")
    text = reply.input_value()
    assert text.startswith("Dear customer,")
    reply.fill(text + "\n\nP.S. Have a great trip!")
    shot(page, "05-draft")
    page.get_by_role("button", name="Accept reply").click()
    page.get_by_text("Accepted and stored").wait_for()
    shot(page, "06-draft-accepted")

    from assistant.drafting.store import DraftStore

    accepted = DraftStore(data).list(status="accepted")
    assert accepted and accepted[0].final.endswith("Have a great trip!") and "[1]" not in accepted[0].final


def visible(page, label: str):
    """The one visible field of a label that several tabs use (Chat's and Draft's adapter)."""
    deadline = time.time() + 30
    while True:
        shown = [el for el in page.get_by_label(label, exact=True).all() if el.is_visible()]
        if shown or time.time() > deadline:
            assert len(shown) == 1, f"{len(shown)} visible fields labelled {label!r}"
            return shown[0]
        time.sleep(0.2)


def choose(page, label: str, option: str) -> None:
    field = visible(page, label)
    field.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(500)
    assert field.input_value() == option


def test_6_other_tabs_follow_an_adapter_renamed_then_deleted(page, server, model_cache):
    """Chat, Draft and Evaluate had chosen "kumo" when the Tune tab renamed it: they follow
    the new name (Send answers instead of failing on the old one), and go back to the base
    model when it is deleted."""
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from tests.conftest import untrained_adapter

    url, data = server
    untrained_adapter(Tsumugi(Settings(data_dir=data, model_cache=model_cache)), "kumo")
    page.reload()
    page.get_by_role("tab", name="Chat", exact=True).first.wait_for()
    page.wait_for_timeout(1500)
    assert page.get_by_role("combobox", name="Knowledge base").input_value() == "Outdoor shop", "on load"
    tab(page, "Chat")
    page.get_by_text("Settings", exact=True).first.click()
    choose(page, "Tuned adapter", "kumo")
    tab(page, "Draft reply")
    choose(page, "Tuned adapter", "kumo")
    tab(page, "Evaluate")
    page.get_by_label("kumo", exact=True).check()
    tab(page, "Tune")
    choose(page, "Adapter", "kumo")
    page.get_by_role("button", name="Rename").click()  # no new name yet
    page.get_by_text("Type the adapter's new name first.").wait_for()
    assert not error_badges(page)
    page.get_by_label("New name").fill("kumo2")
    page.get_by_role("button", name="Rename").click()
    page.get_by_text("Renamed kumo to kumo2").wait_for()
    page.wait_for_timeout(1000)

    assert page.get_by_label("kumo2", exact=True).is_checked(), "Evaluate ticks the new name"
    tab(page, "Draft reply")
    assert visible(page, "Tuned adapter").input_value() == "kumo2"
    tab(page, "Chat")
    assert visible(page, "Tuned adapter").input_value() == "kumo2"
    page.get_by_placeholder("Ask a question about your documents…").fill(
        "Is there a warranty on the TrailMaster X4 Tent?"
    )
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "/Quoted from the documents|no longer exists/.test(document.body.innerText)", timeout=120_000
    )
    body = page.inner_text("body")
    assert "no longer exists" not in body and "kumo2" in body, body[-2000:]
    assert "2-year limited warranty" in page.locator("[data-testid='bot']").last.inner_text()
    shot(page, "07-chat-follows-renamed-adapter")

    tab(page, "Tune")
    page.get_by_role("button", name="Delete adapter").click()
    page.get_by_text("Type the exact name of the selected adapter").wait_for()
    assert not error_badges(page)
    assert (data / "adapters" / "kumo2").is_dir(), "not deleted before its name is typed"
    page.get_by_label("Type the adapter's name to delete it").fill("kumo2")
    page.get_by_role("button", name="Delete adapter").click()
    page.get_by_text("Deleted the adapter kumo2").wait_for()
    page.wait_for_timeout(1000)
    assert page.get_by_label("base model", exact=True).is_checked()
    assert page.get_by_label("kumo2", exact=True).count() == 0
    tab(page, "Draft reply")
    assert visible(page, "Tuned adapter").input_value() == "none: the base model"
    tab(page, "Chat")
    assert visible(page, "Tuned adapter").input_value() == "none: the base model"
    shot(page, "08-chat-back-on-the-base-after-delete")

    # Deleted elsewhere (another admin's browser, the CLI): this page still holds the name, and
    # Send says so in one toast.
    service = Tsumugi(Settings(data_dir=data, model_cache=model_cache))
    untrained_adapter(service, "kumo3")
    choose(page, "Tuned adapter", "kumo3")
    service.delete_adapter("kumo3")
    page.get_by_placeholder("Ask a question about your documents…").fill("Is the tent waterproof?")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("The adapter kumo3 no longer exists").wait_for()
    assert not error_badges(page)


def test_7_evaluate_refuses_a_run_or_save_in_one_toast(page, server):
    """Run with no saved question set, Save with an empty table, Run with no model ticked:
    each is one toast and no "Error" mark. Save's check runs at the click: refused inside the
    save, the question set picker was marked. Run's come from inside its event, whose status
    panel shows no mark either way."""
    tab(page, "Evaluate")
    page.get_by_role("button", name="Run evaluation").click()
    page.get_by_text("Choose a saved question set first").wait_for()
    assert not error_badges(page)
    page.get_by_label("Save as").fill("empty")
    page.get_by_role("button", name="Save set").click()
    page.get_by_text("The table has no usable questions").wait_for()
    assert not error_badges(page)
    questions = Path(server[1]).parent / "faq.csv"
    questions.write_text("question,answer\nIs there a warranty on the tent?,2-year limited warranty\n")
    upload(page, page.locator("text=Click to Upload >> visible=true").first, [questions])
    # Saved before the file reached the table, the set was refused as empty (a loaded machine).
    page.get_by_text("Is there a warranty on the tent?").first.wait_for(state="attached")
    page.get_by_label("Save as").fill("faq")
    page.get_by_role("button", name="Save set").click()
    page.get_by_text("Saved 1 questions as faq").wait_for()
    page.get_by_label("base model", exact=True).uncheck()
    page.get_by_role("button", name="Run evaluation").click()
    page.get_by_text("Tick at least one model.").wait_for()
    assert not error_badges(page)
    shot(page, "09-evaluate-refusals")


def test_9_a_base_made_before_the_server_started_is_listed_when_the_page_opens(page, tmp_path, model_cache):
    """The page chose that base when it was built, so opening it changed nothing, and the
    Knowledge tab showed no documents and no summary until another base was picked."""
    from collections import deque

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi

    data, docs = tmp_path / "data", tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DATA / "ja-support" / "henpin.md", docs)
    deque(Tsumugi(Settings(data_dir=data, model_cache=model_cache)).ingest("Returns", [docs]), maxlen=0)
    proc, url = serve(data, model_cache, tmp_path / "server.log")
    # The module's browser (a second Playwright cannot start beside it), a page of its own.
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    japanese = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
    try:
        other.goto(url)
        other.get_by_role("tab", name="Knowledge", exact=True).first.wait_for(timeout=60_000)
        tab(other, "Knowledge")
        other.get_by_text("1 documents").first.wait_for(timeout=30_000)
        assert "henpin.md" in other.inner_text("body")
        assert "does not read" in other.inner_text("body"), "the Japanese document's notice"
        shot(other, "10-knowledge-on-open")
        # A Japanese browser gets the page in Japanese, and asks there as anyone would.
        ja = japanese.new_page()
        ja.goto(url)
        ja.get_by_role("tab", name="ナレッジ", exact=True).wait_for(timeout=60_000)
        assert ja.get_by_role("tab", name="Knowledge", exact=True).count() == 0
        ja.get_by_role("tab", name="チャット", exact=True).click()
        ja.get_by_placeholder("文書について質問してください…").fill("返品はいつまでできますか？")
        ja.get_by_role("button", name="送信", exact=True).click()
        ja.locator(".message.bot, [data-testid='bot']").last.get_by_text("30日以内").wait_for(timeout=120_000)
        # The sources panel's notes follow the Japanese question.
        ja.get_by_role("heading", name="引用元").wait_for()
        assert "確信度" in ja.inner_text("body")
        shot(ja, "11-japanese-page")
        # What the server tells a Japanese reader in a toast or a table is Japanese too: the page's
        # own refusal, and why a file written in the core was not added (it was all English).
        ja.get_by_role("tab", name="ナレッジ", exact=True).click()
        ja.get_by_text("文書 1 件").first.wait_for(timeout=30_000)
        ja.get_by_role("button", name="ナレッジベースに追加").click()
        ja.get_by_text("先にアップロードするファイルを選んでください。").wait_for(timeout=30_000)
        ja.locator("input[type=file]").first.set_input_files(
            [str(FIXTURES / "unstructured-empty.txt"), str(DATA / "ja-support" / "haisou.md")]
        )
        ja.wait_for_timeout(1500)
        ja.get_by_role("button", name="ナレッジベースに追加").click()
        ja.wait_for_function(
            "document.body.innerText.includes('unstructured-empty.txt は空です。索引にするものがありません。')",
            timeout=60_000,
        )
        ja.get_by_text("追加 1 件、失敗 1 件。").first.wait_for()
        ja.get_by_text("文書 2 件").first.wait_for()
        assert "追加日時（UTC）" in ja.inner_text("body"), "the document list's column names"
        shot(ja, "12-japanese-upload")
    finally:
        japanese.close()
        other.close()
        proc.terminate()
        proc.wait(timeout=30)
