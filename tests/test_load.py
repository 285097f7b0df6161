"""Sixteen clients at once: eight through the web app, eight through the HTTP API.
(`python -m bench.load` measures throughput and latency over a longer run.)"""

from __future__ import annotations

import pytest

from bench.load import run_load
from tests.conftest import serve_in_thread


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
