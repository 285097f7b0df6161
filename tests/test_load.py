"""Sixteen clients at once: eight through the web app, eight through the HTTP API.
(`python -m bench.load` measures throughput and latency over a longer run.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.generation.remote import chat_endpoint
from bench.load import run_load
from tests.conftest import all_at_once_server, serve_in_thread


@pytest.mark.slow
def test_eight_web_and_eight_api_clients_at_once_without_errors(service):
    from assistant.server import build_server

    url, server = serve_in_thread(build_server(service))
    try:
        result = run_load(
            url, "test-key", "contoso", gradio_clients=8, api_clients=8, seconds=1, max_tokens=32
        )
    finally:
        server.should_exit = True
    assert result["errors"] == []
    assert result["gradio"]["requests"] == 8 and result["api"]["requests"] == 8
    assert result["api"]["p95_s"] is not None


@pytest.mark.slow
def test_as_many_web_answers_run_at_once_as_the_model_batches(service):
    # More chats than Gradio's default limit of eight, fewer than the batch's sixteen: each
    # waits for the others at the chat server, so they must all be running at once.
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    from assistant.server import build_server

    parties = 10
    chat_url, chat = all_at_once_server(parties)
    saved = service.settings
    service.settings = replace(saved, chat=chat_endpoint(chat_url, "m"))
    url, server = serve_in_thread(build_server(service))

    def ask(_) -> str:
        client = Client(url + "/", verbose=False)
        question = "How many people can sleep in the TrailMaster X4 Tent?"
        *_, last = client.submit(
            question, [], "contoso", 5, 0.0, 32, "auto", "", "detailed", api_name="/respond"
        )
        return last[0][-1]["content"]

    try:
        with ThreadPoolExecutor(parties) as pool:
            answers = list(pool.map(ask, range(parties)))
    finally:
        server.should_exit = True
        chat.shutdown()
        service.settings = saved
    assert chat.RequestHandlerClass.statuses == [200] * parties, answers
    assert all(answers)
