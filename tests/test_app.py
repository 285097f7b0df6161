"""The running Gradio app, driven through gradio_client as a browser would drive it."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import CONTOSO, FIXTURES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, model_cache):
    from assistant.config import Settings
    from assistant.service import Tsumugi
    from assistant.ui import build_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("app-data"), model_cache=model_cache)
    demo = build_app(Tsumugi(settings)).queue()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.mark.slow
def test_upload_ask_and_stream_an_answer_with_sources(app_url, shared_data):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    client.predict("Support docs", api_name="/create")
    files = [
        handle_file(str(CONTOSO / "product_info_1.md")),
        handle_file(str(FIXTURES / "unstructured-password.pdf")),
    ]
    results, summary, documents, _ = client.predict("Support docs", files, api_name="/add")
    by_name = {row[0]: row for row in results["data"]}
    assert "added" in by_name["product_info_1.md"][1]
    assert "password-protected" in by_name["unstructured-password.pdf"][3]
    assert [row[0] for row in documents["data"]] == ["product_info_1.md"]
    assert "1 documents" in summary

    job = client.submit(
        "Is there a warranty on the TrailMaster X4 Tent?", [], "Support docs", 5, 0.0, 96, api_name="/respond"
    )
    updates = list(job)
    texts = [_text(u[0][-1]["content"]) for u in updates if u[0]]
    streamed = [t for t in texts if t and t != "…"]
    assert len(set(streamed)) >= 3, "the answer should arrive in several pieces"
    final_history, _, sources = updates[-1]
    answer = _text(final_history[-1]["content"])
    assert "[" in answer and "warranty" in answer.lower()
    assert "product_info_1.md" in sources and "Cited sources" in sources


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
