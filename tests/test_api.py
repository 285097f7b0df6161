"""The OpenAI-compatible API, through the official ``openai`` client over 127.0.0.1, and
escalation to a second Tsumugi API server acting as the larger model."""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from dataclasses import replace

import httpx
import openai
import pytest

from assistant.answering.answer import AnswerConfig
from assistant.answering.escalate import EscalationConfig
from assistant.config import ApiLimits, Settings
from assistant.generation.remote import chat_endpoint
from assistant.serving.api import create_api
from assistant.serving.service import Tsumugi
from tests.conftest import all_at_once_server, second_tsumugi, serve_in_thread, untrained_adapter

QUESTION = "How many people can sleep in the TrailMaster X4 Tent?"


@pytest.fixture(scope="module")
def api_url(service):
    url, server = serve_in_thread(create_api(service))
    yield url
    server.should_exit = True


@pytest.fixture(scope="module")
def client(api_url):
    return openai.OpenAI(base_url=api_url + "/v1", api_key="test-key", max_retries=0)


def test_models_lists_the_base_model_and_adapters(client, service):
    name = "api-listed-adapter"
    if not service.adapters.exists(name):
        untrained_adapter(service, name)
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == service.settings.model.name
    assert name in ids
    # The adapter answers under its own name (untrained, so as the base model does).
    reply = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.model == name and reply.choices[0].message.content.strip()
    assert client.models.retrieve(ids[0]).id == ids[0]


def test_chat_without_knowledge_base(client, service):
    reply = client.chat.completions.create(
        model=service.settings.model.name,
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        max_tokens=24,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens <= 24 and reply.usage.prompt_tokens > 5


def test_chat_with_knowledge_base_carries_citations_and_confidence(client, service):
    reply = client.chat.completions.create(
        model=service.settings.model.name,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=96,
        extra_body={"kb": "contoso"},
    )
    extra = reply.model_extra
    assert 0.0 <= extra["confidence"] <= 1.0
    assert extra["citations"], extra
    assert all(c["doc"].startswith("product_info_") for c in extra["citations"])
    assert any(c["doc"] == "product_info_1.md" for c in extra["citations"])
    assert extra["answered_by"] and extra["escalated"] is False
    assert "4" in reply.choices[0].message.content


def test_streaming_matches_the_protocol(client, service):
    stream = client.chat.completions.create(
        model=service.settings.model.name,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=64,
        stream=True,
        extra_body={"kb": "contoso"},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert [c for c in chunks if c.choices[0].delta.content], "the reply arrives as content chunks"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["citations"] and "confidence" in last.model_extra
    # The default style quotes the evidence: what streamed is the checked answer, whole.
    assert text.strip() == last.model_extra["answer"].strip()


def test_wrong_or_missing_key_is_refused(api_url, service):
    bad = openai.OpenAI(base_url=api_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.status_code == 401
    assert "API key" in err.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    response = httpx.post(api_url + "/v1/chat/completions", json={"model": "x", "messages": []})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_bad_requests_get_proper_errors(client, api_url, service):
    name = service.settings.model.name
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "hi"}], extra_body={"kb": "missing"}
        )
    assert err.value.body["code"] == "kb_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=name, messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=name, messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=0)
    headers = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    response = httpx.post(api_url + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_created_keys_work_and_revoked_keys_do_not(api_url, service):
    from assistant.serving.keys import ApiKeyStore

    keys = ApiKeyStore(service.settings.data_dir)
    key = keys.create("tester")
    assert key not in keys.path.read_text("utf-8"), "keys are stored hashed"
    client = openai.OpenAI(base_url=api_url + "/v1", api_key=key, max_retries=0)
    assert client.models.list().data
    keys.revoke("tester")
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.fixture(scope="module")
def larger_model(tmp_path_factory, model_cache):
    """A second Tsumugi API server on loopback, standing in for the larger model."""
    other, url, server = second_tsumugi(tmp_path_factory.mktemp("larger"), model_cache, "larger-key")
    yield url, other.settings.model.name
    server.should_exit = True


def _with_escalation(service, **kwargs):
    return replace(service.settings, escalation=EscalationConfig(**kwargs))


def test_low_confidence_is_escalated_to_the_larger_model(service, larger_model):
    url, name = larger_model
    saved = service.settings
    service.settings = _with_escalation(
        service, base_url=url + "/v1", model=name, api_key="larger-key", threshold=1.0
    )
    try:
        before = service.drafts.stats("contoso")
        answer = deque(service.ask("contoso", QUESTION, config=AnswerConfig(max_new_tokens=64)), maxlen=1)[0]
        after = service.drafts.stats("contoso")
        alone = deque(service.ask("contoso", QUESTION, config=AnswerConfig(escalate=False)), maxlen=1)[0]
    finally:
        service.settings = saved
    assert answer.escalated and answer.model == f"{name} (escalated)"
    # The record is the larger model's; the first one's (quote style: the small model wrote
    # nothing) is kept with the confidence it had.
    assert answer.generation["backend"] == "remote"
    assert answer.generation["escalated_from"] == {"confidence": round(alone.confidence, 4)}
    assert answer.first_answer == alone.text and answer.first_model
    assert answer.text.strip() and answer.passages
    # The confidence shown is the larger model's answer's: its sentences were checked and
    # scored; under a threshold of 1 it is still low, so a person checks it.
    assert set(answer.check) == {"written", "kept", "replaced", "removed"}, "the small model wrote nothing"
    assert answer.method == ("checked" if answer.check["kept"] else "quoted")
    assert answer.confidence < 1.0 and answer.needs_review
    assert after["escalated"] == before["escalated"] + 1


def test_escalation_failures_fall_back_to_needs_review(service, larger_model):
    url, name = larger_model
    saved = service.settings
    cases = {
        "refused the API key": dict(base_url=url + "/v1", model=name, api_key="wrong", threshold=1.0),
        "is not served": dict(base_url=url + "/v1", model="gpt-giant", api_key="larger-key", threshold=1.0),
        "did not answer": dict(base_url="http://127.0.0.1:9/v1", model=name, threshold=1.0),
    }
    try:
        for expected, settings in cases.items():
            service.settings = _with_escalation(service, **settings)
            answer = deque(
                service.ask("contoso", QUESTION, config=AnswerConfig(max_new_tokens=32)), maxlen=1
            )[0]
            assert not answer.escalated and answer.needs_review, expected
            assert expected in answer.notice
            assert answer.text.strip() and answer.model == service.chat_model().label
    finally:
        service.settings = saved


def test_without_endpoint_low_confidence_is_marked_for_review(service):
    answer = deque(
        service.ask("contoso", QUESTION, config=AnswerConfig(max_new_tokens=32, confidence_threshold=1.0)),
        maxlen=1,
    )[0]
    assert answer.needs_review and not answer.escalated
    answer = deque(
        service.ask("contoso", QUESTION, config=AnswerConfig(max_new_tokens=32, confidence_threshold=0.0)),
        maxlen=1,
    )[0]
    assert not answer.needs_review


def test_streamed_escalation_sends_only_the_larger_models_answer(service, larger_model, api_url):
    url, name = larger_model
    saved = service.settings
    service.settings = _with_escalation(
        service, base_url=url + "/v1", model=name, api_key="larger-key", threshold=1.0
    )
    try:
        client = openai.OpenAI(base_url=api_url + "/v1", api_key="test-key", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model=service.settings.model.name,
                messages=[{"role": "user", "content": QUESTION}],
                max_tokens=48,
                stream=True,
                extra_body={"kb": "contoso"},
            )
        )
    finally:
        service.settings = saved
    last = chunks[-1].model_extra
    assert last["escalated"] is True and last["answered_by"] == f"{name} (escalated)"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed.strip()


def test_requests_answers_and_status_are_logged(client, api_url, service):
    from assistant import events
    from assistant.serving import status

    # One app per process in production; here the stand-in larger model (another app) took over the log.
    events.configure(service.settings.data_dir)
    assert httpx.get(api_url + "/v1/models").status_code == 401
    client.chat.completions.create(
        model=service.settings.model.name,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        extra_body={"kb": "contoso"},
    )
    logged = events.recent(service.settings.data_dir, limit=100_000)
    requests = [e for e in logged if e["kind"] == "request" and e["path"] == "/v1/chat/completions"]
    assert requests and requests[-1]["status"] == 200 and requests[-1]["key"] == "TSUMUGI_API_KEYS"
    assert any(e["status"] == 401 for e in logged if e["kind"] == "request"), (
        "refused requests are logged too"
    )
    answers = [e for e in logged if e["kind"] == "answer" and e["source"] == "api"]
    assert answers and 0 <= answers[-1]["confidence"] <= 1
    assert all(QUESTION not in str(e) for e in answers), "question texts stay out of the logs"
    assert any(e["kind"] == "ingest" and e["status"] == "added" for e in logged)

    snap = status.snapshot(service)
    assert snap["models_loaded"] and snap["process_rss_mb"] > 100 and snap["disk_free_gb"] > 0
    assert snap["knowledge_bases"] >= 2 and snap["drafts"]["answers"] >= 1


def test_load_lora_adapter_needs_an_admin_key_and_a_real_adapter_of_this_base(api_url, service, tmp_path):
    """vLLM's runtime endpoint on Tsumugi's API: an agent key is refused; a folder that is not a
    readable adapter of this server's base model is refused in one sentence; nothing is stored."""
    import os

    from assistant.serving.keys import ApiKeyStore

    agent = ApiKeyStore(service.settings.data_dir).create("load-agent", role="agent")
    source = service.adapters.get(untrained_adapter(service, "to-load")).path
    before = service.adapters.names()

    def load(folder, key="test-key", name="loaded"):
        return httpx.post(
            api_url + "/v1/load_lora_adapter",
            json={"lora_name": name, "lora_path": str(folder)},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )

    assert load(source, key=agent).status_code == 403
    assert "not an adapter folder" in load(tmp_path).json()["error"]["message"]
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    os.symlink(source / "adapter_model.safetensors", linked / "adapter_model.safetensors")
    assert "no adapter_model.safetensors" in load(linked).json()["error"]["message"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    (broken / "adapter_model.safetensors").write_bytes(b"not weights")
    assert "does not hold a readable peft adapter" in load(broken).json()["error"]["message"]
    other_base = tmp_path / "other-base"
    other_base.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (other_base / name).write_bytes((source / name).read_bytes())
    (other_base / "tsumugi-card.json").write_text(json.dumps({"base_model": "Qwen/Qwen3-8B"}))
    reply = load(other_base)
    assert (
        reply.status_code == 400
        and "trained on Qwen/Qwen3-8B; this server serves" in reply.json()["error"]["message"]
    )
    assert service.adapters.names() == before, "nothing stored"
    assert not list(service.adapters.root.glob(".tmp-*")), "no staging left behind"
    ok = load(source)
    assert ok.status_code == 200 and ok.text == "Success: LoRA adapter 'loaded' added successfully."
    assert "loaded" in service.adapters.names()
    service.delete_adapter("loaded")
    service.delete_adapter("to-load")


def test_every_answer_the_api_admits_runs_at_once(tmp_path, model_cache):
    # More answers than asyncio's default pool has threads (cpu_count + 4), all admitted.
    parties = min(32, (os.cpu_count() or 1) + 4) + 2
    chat_url, chat = all_at_once_server(parties)
    limits = ApiLimits(requests_per_minute=10_000, per_key=parties, queue=parties)
    settings = Settings(
        data_dir=tmp_path, model_cache=model_cache, api_keys=("k",), api_limits=limits,
        chat=chat_endpoint(chat_url, "m"),
    )  # fmt: skip
    url, server = serve_in_thread(create_api(Tsumugi(settings)))
    body = {"model": "default", "messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 4}
    replies: list = [None] * parties

    def ask(n: int) -> None:
        reply = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=60
        )
        replies[n] = (reply.status_code, reply.json())

    try:
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(parties)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.should_exit = True
        chat.shutdown()
    assert chat.RequestHandlerClass.statuses == [200] * parties
    assert [status for status, _ in replies] == [200] * parties, replies[0]
    assert {r["choices"][0]["message"]["content"] for _, r in replies} == {"ok"}
