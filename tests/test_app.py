"""The running Gradio app, driven through gradio_client as a browser would drive it."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import CONTOSO, DATA, FIXTURES, stop_jobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_data(tmp_path_factory):
    return tmp_path_factory.mktemp("app-data")


@pytest.fixture(scope="module")
def app_url(app_data, model_cache):
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui import build_app

    settings = Settings(data_dir=app_data, model_cache=model_cache)
    demo = build_app(Tsumugi(settings)).queue()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    stop_jobs(app_data)


@pytest.mark.slow
def test_upload_ask_and_stream_an_answer_with_sources(app_url, shared_data):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    client.predict("Support docs", api_name="/create")
    files = [
        handle_file(str(CONTOSO / "product_info_1.md")),
        handle_file(str(FIXTURES / "unstructured-password.pdf")),
    ]
    results, summary, documents, *_ = client.predict("Support docs", files, api_name="/add")
    by_name = {row[0]: row for row in results["data"]}
    assert "added" in by_name["product_info_1.md"][1]
    assert "password-protected" in by_name["unstructured-password.pdf"][3]
    assert [row[0] for row in documents["data"]] == ["product_info_1.md"]
    assert "1 documents" in summary

    job = client.submit(
        "Is there a warranty on the TrailMaster X4 Tent?", [], "Support docs", 5, 0.0, 96, api_name="/respond"
    )
    updates = list(job)
    assert "Searching the documents" in updates[0][2], "the user sees that work has started"
    final_history, _, sources = updates[-1]
    answer = _text(final_history[-1]["content"])
    # The default style quotes the manual: the documents' words, shown as a quotation, cited.
    assert answer.startswith(">") and "[1]" in answer and "warranty" in answer.lower(), answer
    assert "product_info_1.md" in sources and "Cited sources" in sources
    assert "Quoted from the documents; no model wrote it" in sources, "not credited to a model"


@pytest.mark.slow
def test_a_users_mistake_is_one_sentence_and_no_traceback_in_the_log(app_url, capfd):
    """An admin reads a traceback in the server log as a crash: a refusal told to the user
    (here an empty question) must not print one."""
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    capfd.readouterr()
    with pytest.raises(Exception, match="Type a question first"):
        client.predict("  ", [], None, 5, 0.0, 64, api_name="/respond")
    time.sleep(0.5)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Type a question first" not in err, err[-2000:]


def test_only_a_real_failure_leaves_a_traceback_in_the_log():
    """A refusal raised by a handler, or from the core's one-sentence errors, is the user's to
    read; a model that failed is the admin's, and its traceback stays in the log."""
    import gradio as gr

    from assistant.generation.backend import ModelError
    from assistant.ui.common import handler
    from knowledge.errors import StoreError

    def refuse(app, cause):
        if cause is None:
            raise gr.Error("Type a question first.")
        raise gr.Error(str(cause)) from cause

    printed = {}
    for name, cause in (
        ("direct", None),
        ("store", StoreError("There is no adapter called 'kumo'.")),
        ("model", ModelError("Generation failed: out of memory.")),
    ):
        with pytest.raises(gr.Error) as raised:
            handler(refuse, None)(cause)
        printed[name] = raised.value.print_exception
    assert printed == {"direct": False, "store": False, "model": True}


@pytest.mark.slow
def test_unknown_question_says_not_covered(app_url, shared_data):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    client.predict("Backpacks", api_name="/create")
    client.predict("Backpacks", [handle_file(str(CONTOSO / "product_info_2.md"))], api_name="/add")
    *_, last = client.submit(
        "What is the capital of France?", [], "Backpacks", 5, 0.0, 64, api_name="/respond"
    )
    assert "do not cover" in _text(last[0][-1]["content"])


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


@pytest.mark.slow
def test_knowledge_base_settings_and_deletion(app_url, shared_data):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    client.predict("Scratch", api_name="/create")
    client.predict("Scratch", [handle_file(str(CONTOSO / "product_info_3.md"))], api_name="/add")
    summary, documents, _, model = client.predict("Scratch", api_name="/refresh")
    assert model == "all-MiniLM-L6-v2" and "1 documents" in summary
    with pytest.raises(Exception, match="exact name"):
        client.predict("Scratch", "scratch?", api_name="/delete_kb")
    selector, _ = client.predict("Scratch", "Scratch", api_name="/delete_kb")
    assert selector != "Scratch"


@pytest.mark.slow
def test_tune_tab_checks_data_starts_and_cancels_a_job(app_url, app_data):
    from gradio_client import Client, handle_file

    from assistant.jobs.store import JobStore

    client = Client(app_url, verbose=False)
    pairs = handle_file(str(DATA / "tune" / "kumo-lantern-qa.csv"))
    report, preview, q_col, a_col = client.predict(
        "Question/answer file", pairs, None, "(recognise automatically)", "(recognise automatically)",
        api_name="/check_data",
    )  # fmt: skip
    assert "40 question/answer pairs" in report and "35 train the adapter and 5 are held out" in report
    assert (q_col["value"], a_col["value"]) == ("Question", "Answer")
    preview = preview.get("value", preview)
    assert preview["headers"] == ["Question", "Answer"] and len(preview["data"]) == 5

    settings = ["quick", "4bit", "", 8, 16, 0.05, 1e-3, 50, 512, 4, 1, False, "all-linear"]
    with pytest.raises(Exception, match="not a usable adapter name"):
        client.predict("Question/answer file", pairs, None, "Question", "Answer", "../evil", *settings,
                       api_name="/start_tune")  # fmt: skip
    job = client.predict(
        "Question/answer file",
        pairs,
        None,
        "Question",
        "Answer",
        "from-the-ui",
        *settings,
        api_name="/start_tune",
    )
    job_id = job["value"]
    jobs = JobStore(app_data)
    assert jobs.get(job_id).request["name"] == "from-the-ui"
    status, *_ = client.predict(job_id, {}, api_name="/tune_status")
    assert "from-the-ui" in status
    client.predict(job_id, api_name="/cancel_tune")
    assert jobs.wait(job_id, timeout=120).state == "cancelled"
    status, *_ = client.predict(job_id, {}, api_name="/tune_status")
    assert "cancelled" in status


@pytest.mark.slow
def test_evaluate_tab_saves_a_set_runs_it_and_compares(app_url, app_data, shared_data):
    from gradio_client import Client, handle_file

    from assistant.jobs.store import JobStore

    client = Client(app_url, verbose=False)
    client.predict("Tents", api_name="/create")
    client.predict("Tents", [handle_file(str(CONTOSO / "product_info_1.md"))], api_name="/add")
    rows, name = client.predict(handle_file(str(DATA / "eval" / "contoso-eval.csv")), api_name="/load_file")
    assert name == "contoso-eval" and len(rows["data"]) == 99
    table = {
        "headers": ["question", "expected answer", "source", "unanswerable"],
        "data": [rows["data"][2], rows["data"][-1]],  # a tent warranty question and an unanswerable one
    }
    picked = client.predict("Tents", "two", table, api_name="/save_set")
    assert picked["value"] == "two"
    with pytest.raises(Exception, match="Tick at least one model"):
        client.predict("Tents", "two", [], ["5"], False, 0, api_name="/start_eval")
    # The same questions on a second base built with shorter passages (the default is the
    # longest the embedder reads).
    client.predict("Tents long", 112, api_name="/create")
    client.predict("Tents long", [handle_file(str(CONTOSO / "product_info_1.md"))], api_name="/add")
    status = client.predict(
        "Tents", "two", ["base model"], ["3", "5"], False, 0, ["Tents long"], api_name="/start_eval"
    )
    job_id = JobStore(app_data).list("eval")[0].id
    assert job_id in status
    job = JobStore(app_data).wait(job_id, timeout=300)
    assert job.state == "done", job.error
    run_ids = job.result["runs"]
    assert len(run_ids) == 4  # two top-k values on each of two knowledge bases
    metrics, _, differ = client.predict(run_ids[:2], api_name="/compare")
    metrics = metrics.get("value", metrics)
    by_metric = {row[0]: row for row in metrics["data"]}
    assert by_metric["Questions"][1] == "1 + 1 unanswerable"
    assert by_metric["Retrieval recall@k"][1] == "1.000"
    assert "top-3, Tents" in metrics["headers"][1] and "top-5, Tents" in metrics["headers"][2]
    from assistant.evaluation.runs import EvalRunStore

    assert [EvalRunStore(app_data).get(r).config.kb for r in run_ids] == [
        "Tents",
        "Tents",
        "Tents long",
        "Tents long",
    ]
    assert "passages an answer cites" in by_metric["Citation precision"][-1]

    # The set and the runs download as Parquet, which datasets reads back.
    import datasets

    exported_set = client.predict("Tents", "two", ".parquet", api_name="/export_set")
    exported_set = datasets.Dataset.from_parquet(exported_set["value"], cache_dir=str(app_data / "hf"))
    assert exported_set["question"] == [row[0] for row in table["data"]]
    assert exported_set["unanswerable"] == [False, True]
    exported_runs = client.predict(run_ids[:2], ".parquet", api_name="/export_runs")
    exported_runs = datasets.Dataset.from_parquet(exported_runs["value"], cache_dir=str(app_data / "hf"))
    assert exported_runs["run"] == [run_ids[0]] * 2 + [run_ids[1]] * 2
    assert exported_runs["question"] == list(exported_set["question"]) * 2


def test_job_progress_shows_finished_tuning_and_evaluation_jobs(tmp_path):
    from assistant.jobs.store import Job
    from assistant.ui.common import job_progress_html

    tune = Job("j1", "tune", tmp_path, {"name": "kumo"}, state="done",
               result={"adapter": "kumo", "val_loss_before": 3.0, "val_loss_after": 0.25})  # fmt: skip
    assert "adapter kumo: validation loss 3.000 → 0.250" in job_progress_html(tune)
    evaluation = Job("j2", "eval", tmp_path, {"name": "faq × 2"}, state="done", result={"runs": ["a", "b"]})
    assert "2 run(s) stored" in job_progress_html(evaluation)
    failed = Job("j3", "eval", tmp_path, {"name": "<x>"}, state="failed", error="Bad <thing>.")
    assert "&lt;x&gt;" in job_progress_html(failed) and "Bad &lt;thing&gt;." in job_progress_html(failed)


def test_a_running_job_is_shown_in_the_japanese_readers_language(tmp_path):
    """The Tune tab's progress read "training: 3/20 steps · … · about 2m 05s left" on a
    Japanese page. The reader's language is the browser's, from the request Gradio serves."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from assistant.jobs.store import Job
    from assistant.ui.common import job_progress_html

    progress = {"stage": "training", "done": 3, "total": 20, "unit": "steps", "eta": 125.0,
                "message": "epoch 1/2 · loss 1.234", "metrics": {"tokens_per_s": 170.4}}  # fmt: skip
    job = Job("j4", "tune", tmp_path, {"name": "kumo"}, state="running", progress=progress)
    english = job_progress_html(job)
    assert (
        "⚙️ running · training: 3/20 steps · epoch 1/2 · loss 1.234 · about 2m 05s left · 170 tokens/s"
        in english
    )
    token = LocalContext.request.set(SimpleNamespace(headers={"accept-language": "ja-JP,ja;q=0.9"}))
    try:
        japanese = job_progress_html(job)
        done = job_progress_html(Job("j5", "tune", tmp_path, {"name": "kumo"}, state="done",
                                     result={"adapter": "kumo", "val_loss_before": 3.0, "val_loss_after": 0.25}))  # fmt: skip
    finally:
        LocalContext.request.reset(token)
    assert (
        "⚙️ 実行中 · 学習：3/20 ステップ · エポック 1/2 · 損失 1.234 · 残り約 2 分 5 秒 · 170 tokens/s"
        in japanese
    )
    assert "✅ 完了 · アダプター kumo：検証損失 3.000 → 0.250" in done


@pytest.mark.slow
def test_web_app_and_api_share_one_server_and_the_draft_tab_works(service):
    """app.py's server: the Gradio app at / and the API at /v1, then a draft accepted in the UI."""
    import httpx
    from gradio_client import Client

    from assistant.server import build_server
    from tests.conftest import serve_in_thread

    url, server = serve_in_thread(build_server(service))
    try:
        assert "<html" in httpx.get(url + "/").text.lower()
        models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer test-key"})
        assert models.status_code == 200 and models.json()["data"]

        client = Client(url + "/", verbose=False)
        message = "Hello, how many people can sleep in the TrailMaster X4 Tent?"
        updates = list(client.submit(message, "contoso", "friendly", "", "Sam", "", api_name="/draft"))
        reply, status, sources, draft_id, _ = updates[-1]
        assert reply.startswith("Hi there,") and reply.rstrip().endswith("Sam")
        assert "confidence" in status and "product_info_1.md" in sources and draft_id
        decision, stats, recent = client.predict(
            draft_id, reply + "\n\nEnjoy!", True, "contoso", api_name="/accept_draft"
        )
        assert "Accepted" in decision and "accepted" in stats
        stored = service.drafts.get(draft_id)
        assert stored.status == "accepted" and stored.final.endswith("Enjoy!") and "[1]" not in stored.final
        assert [row for row in recent["data"] if row[1] == "accepted"]
        # Accepted drafts download as a zipped dataset folder that load_from_disk reads.
        import zipfile

        import datasets

        exported = client.predict("contoso", ".zip", api_name="/export_drafts")["value"]
        zipfile.ZipFile(exported).extractall(service.settings.data_dir / "unzipped")
        rows = datasets.load_from_disk(str(service.settings.data_dir / "unzipped"))
        assert draft_id in rows["id"]
        assert rows["answer"][rows["id"].index(draft_id)] == stored.final
    finally:
        server.should_exit = True


def test_a_streamed_answer_updates_the_page_at_most_ten_times_a_second():
    from types import SimpleNamespace

    from assistant.ui.pages import paced

    def states(n: int, finish: bool = True):
        answer = SimpleNamespace(text="", done=False)
        for i in range(n):
            answer.text += f"w{i} "
            answer.done = finish and i == n - 1
            yield answer

    def text(answer):
        return answer.text

    rendered = []

    def counted(answer):
        rendered.append(answer.text)
        return answer.text

    shown = list(paced(states(200), counted, "…"))  # 200 tokens in far less than 0.1 s
    assert len(shown) <= 3 and shown[0] == "…" and shown[-1].endswith("w199 ")
    assert len(rendered) <= 2, "a state was rendered when no page was due"
    stopped = list(paced(states(50, finish=False), text, "…"))  # a stream that ends unfinished
    assert len(stopped) <= 3 and stopped[-1].endswith("w49 ")

    def failing():
        yield from states(3, finish=False)
        raise ValueError("the model failed")

    with pytest.raises(ValueError, match="the model failed"):
        list(paced(failing(), text, "…"))


def test_a_streamed_answer_gives_a_page_while_a_step_gives_nothing_and_closes_at_once():
    """Gradio's cancel waits for the event's current step: a step that waited on the model
    (splitting a question, reading a long prompt) made a client's cancel time out."""
    import threading
    import time
    from types import SimpleNamespace

    from assistant.ui.pages import paced

    ended = threading.Event()

    def slow():
        try:
            answer = SimpleNamespace(text="Hello", done=False)
            yield answer
            while True:
                time.sleep(2.0)  # the model gives nothing for a while
                answer.text += " again"
                yield answer
        finally:
            ended.set()

    pages = paced(slow(), lambda a: a.text, "…", wake=0.2)
    assert next(pages) == "…"
    assert next(pages) == "Hello"
    started = time.monotonic()
    assert [next(pages), next(pages)] == ["Hello", "Hello"]  # the last page again
    assert time.monotonic() - started < 1.5
    pages.close()
    assert time.monotonic() - started < 1.5 and not ended.is_set()
    assert ended.wait(10), "the closed stream's source was never closed"


def test_answers_run_on_reused_threads_no_more_at_once_than_the_events_allowed():
    """A cancelled event's answer runs on until its next state: a thread of its own per answer
    let more answers run than the events' limit, and lost what a thread keeps (the Japanese
    analyser, SQLite connections)."""
    import threading
    import time
    from types import SimpleNamespace

    from assistant.ui.pages import paced

    release, threads = threading.Event(), []

    def source(wait: bool):
        threads.append(threading.get_ident())
        if wait:
            release.wait(10)  # a step with no stop check: retrieval, a cross-encoder
        yield SimpleNamespace(text="done", done=True)

    assert list(paced(source(False), lambda a: a.text, "…", workers=1)) == ["…", "done"]
    stuck = paced(source(True), lambda a: a.text, "…", workers=1, wake=0.1)
    assert next(stuck) == "…" and next(stuck) == "…"
    stuck.close()  # cancelled; its answer still waits in its step
    dropped = paced(source(False), lambda a: a.text, "…", workers=1, wake=0.1)
    assert next(dropped) == "…"
    dropped.close()  # cancelled while it waited for the thread: never started
    waiting = paced(source(False), lambda a: a.text, "…", workers=1, wake=0.1)
    assert [next(waiting) for _ in range(3)] == ["…"] * 3, "a second answer ran beside the first"
    release.set()
    started = time.monotonic()
    assert list(waiting) == ["done"] and time.monotonic() - started < 5
    assert len(threads) == 3, "an answer cancelled before it started ran all the same"
    assert len(set(threads)) == 1, "each answer ran on a new thread"


def test_a_stream_nobody_reads_is_closed():
    """The model's backstop stops a reply nobody reads; the page thread reads the answer, so it
    must itself stop reading when the pages are not taken."""
    import threading
    import time
    from types import SimpleNamespace

    from assistant.ui.pages import paced

    ended = threading.Event()

    def endless():
        answer = SimpleNamespace(text="", done=False)
        try:
            while True:
                time.sleep(0.02)
                answer.text += "w "
                yield answer
        finally:
            ended.set()

    pages = paced(endless(), lambda a: a.text, "…", abandoned=0.5)
    assert next(pages) == "…" and next(pages).startswith("w ")
    assert not ended.wait(0.3), "closed while its pages were still taken"
    assert ended.wait(5), "the answer ran on with nobody taking its pages"
    pages.close()


def test_the_footer_names_a_model_only_when_one_wrote_the_answer():
    """The quote style runs no model: crediting the chosen model and adapter would tell a user
    comparing adapters that tuning changed nothing. A concise or detailed answer whose
    sentences were replaced by quotes did run it, and so did an escalated one."""
    from assistant.answering.answer import Answer
    from assistant.ui.common import answer_footer

    def footer(**fields) -> str:
        return answer_footer(Answer("Is the tent waterproof?", done=True, model="small + kumo", **fields))

    quoted = footer(style="quote", method="quoted")
    assert "Quoted from the documents; no model wrote it" in quoted and "Answered by" not in quoted
    for style in ("concise", "detailed"):
        replaced = footer(style=style, method="quoted")
        assert "Answered by `small + kumo`" in replaced and "quoted from the documents" in replaced
        assert "no model wrote it" not in replaced, style
    escalated = footer(style="quote", method="quoted", escalated=True, first_model="small")
    assert "Answered by `small + kumo` (the small model `small` was unsure)" in escalated
    assert "Not sent to the model" in footer(style="quote", covered=False)


def test_the_sources_panel_says_nothing_is_cited_only_once_the_answer_is_done():
    """While the model was still writing, the panel said "The answer cites no passage."."""
    from assistant.ui.common import sources_markdown
    from knowledge.retrieve import Hit

    hits = [Hit(chunk_id=1, doc="tent.md", page=None, heading="", text="The tent sleeps four.", score=1.0)]
    assert "cites no passage" in sources_markdown(hits, [])
    writing = sources_markdown(hits, [], done=False)
    assert "cites no passage" not in writing and "tent.md" in writing


def test_the_knowledge_tab_says_when_the_embedder_cannot_read_the_documents(tmp_path, embedder):
    """A Japanese knowledge base was made with the English-only default without a word."""
    from collections import deque

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui.knowledge_tab import describe

    app = Tsumugi(Settings(data_dir=tmp_path / "data"))
    texts = {
        "shop": (
            "haisou.md",
            "# 配送\n\nご注文金額が5,000円以上の場合、送料は無料です。通常2〜4営業日で発送します。",
        ),
        "tents": (
            "tent.md",
            "# Tent\n\nThe tent sleeps four people and weighs 12 lbs. Stake it down in wind.",
        ),
    }
    for kb, (name, text) in texts.items():
        folder = tmp_path / kb
        folder.mkdir()
        (folder / name).write_text(text, encoding="utf-8")
        deque(app.ingest(kb, [folder]), maxlen=0)
    assert "does not read" in describe(app, "shop")
    assert "does not read" not in describe(app, "tents")


def test_a_stop_belongs_to_the_question_it_was_pressed_for():
    """The next question's click clears the session's flag: it must not undo a stop already
    seen, and the stopped answer's end must not disarm the Stop meant for the next one."""
    from assistant.ui.common import CancelFlag, StopSignal, arm_cancel, stop_now

    flag = CancelFlag()
    arm_cancel(None, flag)
    first = StopSignal(flag)
    assert not first.is_set() and not first.pressed
    stop_now(None, flag)
    assert first.is_set() and first.pressed
    arm_cancel(None, flag)  # the next question, sent before the first one ended
    assert first.is_set() and first.pressed
    second = StopSignal(flag)
    assert not second.is_set()
    first.finish()
    stop_now(None, flag)
    assert second.pressed
    assert not StopSignal(CancelFlag()).pressed, "a flag nobody armed stops nothing"


def test_a_stop_pressed_while_the_question_waited_starts_nothing(tmp_path, embedder):
    """Stop no longer cancels the queued event: the handler, once its turn comes, must say it
    stopped at once, without loading the model or searching."""
    from collections import deque

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui.chat_tab import respond
    from assistant.ui.common import STOPPED, CancelFlag, arm_cancel, stop_now

    app = Tsumugi(Settings(data_dir=tmp_path / "data"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "tent.md").write_text("# Tent\n\nThe tent sleeps four people.", encoding="utf-8")
    deque(app.ingest("tents", [tmp_path / "docs"]), maxlen=0)
    flag = CancelFlag()
    arm_cancel(app, flag)
    stop_now(app, flag)
    pages = list(respond(app, "How many people fit?", [], "tents", 5, 0.0, 64, "auto", "", "quote", flag))
    assert len(pages) == 1
    history, _, panel = pages[0]
    assert history[-1]["content"] == STOPPED and history[-2]["content"] == "How many people fit?"
    assert panel == ""
