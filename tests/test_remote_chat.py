"""The main chat model on an OpenAI-compatible server (TSUMUGI_CHAT_URL): a second Tsumugi on
loopback serves the same model, so answers, drafts and evaluations must come out the same as
in-process; a server that breaks off mid-answer, or refuses the key, gives one sentence."""

from __future__ import annotations

import json
import socketserver
import threading
from collections import deque
from dataclasses import replace

import pytest

from assistant.answering.answer import AnswerConfig
from assistant.config import Settings
from assistant.drafting.compose import DraftConfig
from assistant.generation.backend import ModelError
from assistant.generation.remote import chat_endpoint
from knowledge.errors import ConfigError
from tests.conftest import drain, second_tsumugi

QUESTION = "How many people can sleep in the TrailMaster X4 Tent?"


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, model_cache):
    """A second Tsumugi's API, serving the embedded model as an OpenAI-compatible server."""
    other, url, server = second_tsumugi(tmp_path_factory.mktemp("chat-server"), model_cache, "chat-key")
    yield url + "/v1", other.settings.model.name
    server.should_exit = True


def _last(answers):
    return deque(answers, maxlen=1)[0]


class _Remote:
    """``service`` answering through ``endpoint`` inside the block."""

    def __init__(self, service, endpoint) -> None:
        self.service, self.endpoint = service, endpoint

    def __enter__(self):
        self.saved = self.service.settings
        self.service.settings = replace(self.saved, chat=self.endpoint)
        return self.service

    def __exit__(self, *exc) -> None:
        self.service.settings = self.saved


pytestmark = pytest.mark.slow


def test_answers_over_the_remote_server_are_the_local_ones(service, chat_server):
    url, name = chat_server
    config = AnswerConfig(style="detailed", max_new_tokens=64)
    local = _last(service.ask("contoso", QUESTION, config=config))
    with _Remote(service, chat_endpoint(url, name, "chat-key")):
        remote = _last(service.ask("contoso", QUESTION, config=config))
    assert remote.model == f"{name} (remote)" and local.model != remote.model
    assert remote.text == local.text and remote.text.strip()
    assert remote.cited == local.cited and remote.confidence == pytest.approx(local.confidence)
    # The record says how each was generated: this server sends token counts and log-probabilities.
    assert local.generation["backend"] == "local" and local.generation["logprobs"] is True
    assert remote.generation == {
        "backend": "remote",
        "prompt_tokens": local.generation["prompt_tokens"],
        "new_tokens": local.generation["new_tokens"],
        "logprobs": True,
    }
    assert remote.to_json()["generation"]["logprobs"] is True


def test_the_servers_token_log_probabilities_are_the_local_ones(service, chat_server):
    from assistant.generation.remote import RemoteModel

    url, name = chat_server
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    here: dict = {}
    text = "".join(service.chat_model().stream(messages, max_new_tokens=16, info=here))
    there: dict = {}
    remote = RemoteModel(chat_endpoint(url, name, "chat-key"))
    assert "".join(remote.stream(messages, max_new_tokens=16, info=there)).strip() == text.strip()
    assert there["logprobs"] is True and len(there["token_logprobs"]) == len(here["token_logprobs"]) == 16
    assert there["token_logprobs"] == pytest.approx(here["token_logprobs"], abs=1e-4)


def test_drafts_and_evaluations_run_over_the_remote_server(service, chat_server):
    from assistant.evaluation.runs import EvalConfig
    from assistant.evaluation.sets import EvalItem, EvalSet

    url, name = chat_server
    message = "Hello, is the TrailMaster X4 Tent waterproof? Thanks, Sam"
    draft_config = DraftConfig(tone="friendly", style="concise", max_new_tokens=48)
    evalset = EvalSet(
        "two", [EvalItem("Who makes the TrailMaster X4 Tent?", "OutdoorLiving"), EvalItem(QUESTION, "4")]
    )
    eval_config = EvalConfig(kb="contoso", retrieval=False, max_new_tokens=24)
    local_draft = _last(service.draft("contoso", message, draft_config))
    _, local_run = drain(service.evaluate(evalset, eval_config))
    with _Remote(service, chat_endpoint(url, name, "chat-key")):
        remote_draft = _last(service.draft("contoso", message, draft_config))
        _, remote_run = drain(service.evaluate(evalset, eval_config))
    assert remote_draft.text == local_draft.text and remote_draft.model == f"{name} (remote)"
    assert service.drafts.get(remote_draft.draft_id).model == f"{name} (remote)"
    assert remote_run.model == f"{name} (remote)"
    assert [r["answer"] for r in remote_run.results] == [r["answer"] for r in local_run.results]


class _BreaksOff(socketserver.BaseRequestHandler):
    """Answers 200 with two streamed pieces of a reply, then drops the connection."""

    def handle(self) -> None:
        self.request.recv(65536)
        pieces = "".join(
            "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
            + "\n\n"
            for text in ("The tent", " sleeps")
        ).encode()  # fmt: skip
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.request.sendall(head + f"{len(pieces):x}\r\n".encode() + pieces + b"\r\n")


def test_a_server_that_breaks_off_or_refuses_the_key_gives_one_sentence(service, chat_server):
    url, name = chat_server
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _BreaksOff)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    broken = chat_endpoint(f"http://127.0.0.1:{server.server_address[1]}/v1", "m")
    config = AnswerConfig(style="detailed", max_new_tokens=64)
    before = service.drafts.stats("contoso")
    try:
        with _Remote(service, broken), pytest.raises(ModelError) as caught:
            _last(service.ask("contoso", QUESTION, config=config))
        assert "chat model at http://127.0.0.1" in str(caught.value)
        assert "stopped in the middle of the answer" in str(caught.value)
        with _Remote(service, broken), pytest.raises(ModelError, match="stopped in the middle"):
            _last(
                service.draft(
                    "contoso", "Is the TrailMaster X4 Tent waterproof?", DraftConfig(style="concise")
                )
            )
    finally:
        server.shutdown()
    after = service.drafts.stats("contoso")
    assert after == before, "no half answer or half draft is recorded"
    with _Remote(service, chat_endpoint(url, name, "wrong-key")), pytest.raises(ModelError) as caught:
        _last(service.ask("contoso", QUESTION, config=config))
    assert str(caught.value).endswith("refused the API key; check TSUMUGI_CHAT_KEY.")


def test_chat_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TSUMUGI_CHAT_URL", "http://127.0.0.1:8000/v1/")
    monkeypatch.setenv("TSUMUGI_CHAT_KEY", "secret")
    with pytest.raises(ConfigError, match="needs a model name too \\(TSUMUGI_CHAT_MODEL\\)"):
        Settings.from_env()
    monkeypatch.setenv("TSUMUGI_CHAT_MODEL", "Qwen/Qwen3-8B")
    chat = Settings.from_env().chat
    assert (chat.base_url, chat.model, chat.api_key) == (
        "http://127.0.0.1:8000/v1",
        "Qwen/Qwen3-8B",
        "secret",
    )
    monkeypatch.setenv("TSUMUGI_CHAT_URL", "127.0.0.1:8000")
    with pytest.raises(ConfigError, match="should start with http"):
        Settings.from_env()
    for name in ("TSUMUGI_CHAT_URL", "TSUMUGI_CHAT_MODEL"):
        monkeypatch.delenv(name)
    assert Settings.from_env().chat is None


class _NoLogprobs(socketserver.BaseRequestHandler):
    """A server that refuses `logprobs` by name (as some do), and a too-long prompt; otherwise it
    streams "Hello there." and ends the stream properly."""

    def handle(self) -> None:
        data = self.request.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
                if k.lower() == b"content-length"
            )
        )
        while len(body) < length:
            body += self.request.recv(65536)
        request = json.loads(body)
        if "logprobs" in request or "too long" in request["messages"][-1]["content"]:
            reason = "logprobs is not supported" if "logprobs" in request else "the prompt is too long"
            error = json.dumps({"error": {"message": reason, "type": "invalid_request_error"}}).encode()
            self.request.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(error)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + error
            )
            return
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hello there."}, "finish_reason": None}],
        }
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )


def test_a_server_refusing_logprobs_by_name_is_asked_again_without_them():
    from assistant.generation.remote import RemoteModel

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NoLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = RemoteModel(chat_endpoint(f"http://127.0.0.1:{server.server_address[1]}/v1", "m"))
        info: dict = {}
        assert "".join(model.stream([{"role": "user", "content": "Hi"}], info=info)) == "Hello there."
        assert "logprobs" not in model.extras and "stream_options" in model.extras, (
            "only the refused one goes"
        )
        assert info["logprobs"] is False and info["backend"] == "remote"
        with pytest.raises(ModelError, match="did not answer \\(BadRequestError\\)"):
            "".join(model.stream([{"role": "user", "content": "too long"}]))
        assert "stream_options" in model.extras, "a refusal that names nothing asked for changes nothing"
    finally:
        server.shutdown()
