"""An OpenAI-compatible HTTP API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Any OpenAI client works against it (``base_url="http://host:port/v1"``). A model is the base
model or a tuned adapter (``GET /v1/models`` lists them). Two request fields go beyond the
OpenAI protocol, sent with ``extra_body`` by the official client:

- ``kb``: answer from that knowledge base. The last user message is the question, earlier
  turns are the conversation; the response then carries ``citations``, ``confidence``,
  ``needs_review``, ``escalated`` and ``answered_by`` beside ``choices``. The final
  streamed chunk carries them too.
- ``top_k``, ``decompose``, ``escalate``: retrieval and escalation switches.
- ``style``: quote, concise or detailed (see :class:`assistant.answering.answer.AnswerConfig`).

Every request needs ``Authorization: Bearer <key>`` with a key from
``python -m assistant keys --create NAME`` or TSUMUGI_API_KEYS. An agent key answers, within
its scope of knowledge bases and adapters; the ``/v1/admin/...`` endpoints and vLLM's
``/v1/load_lora_adapter`` (an adapter folder on this machine becomes a model) need an admin key.
Per-key rate limits and a bounded queue answer 429 with ``Retry-After``. Errors come back
with the OpenAI error body, ``{"error": {"message", "type", "code"}}``, and the matching
HTTP status. A client that disconnects stops its answer at once.

When a larger model is configured, a streamed answer from a knowledge base is held back until
its confidence is known: either it is sent, or the larger model's answer streams instead.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import deque
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from assistant import events
from assistant.answering.styles import DEFAULT_STYLE
from assistant.serving.keys import ApiKeyStore, KeyGrant
from assistant.serving.ratelimit import RateLimited, RateLimiter
from assistant.serving.relay import Threads, disconnected, finish
from assistant.tuning.deploy import load_adapter
from knowledge.errors import ConfigError, TsumugiError
from knowledge.library import check_name


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if isinstance(p, dict))
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    kb: str | None = None
    top_k: int = Field(default=5, ge=1, le=20)
    decompose: bool = True
    escalate: bool = True
    style: Literal["quote", "concise", "detailed"] = DEFAULT_STYLE
    """How the answer is written (with ``kb``): see assistant.answering.answer.AnswerConfig.style."""


class LoadAdapter(BaseModel):
    lora_name: str
    lora_path: str


def _error_body(message: str, code: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def create_api(app) -> FastAPI:
    """The API routes on a FastAPI app, for :class:`assistant.serving.service.Tsumugi` ``app``."""
    api = FastAPI(title="Tsumugi API", docs_url="/v1/docs", openapi_url="/v1/openapi.json")
    keys = ApiKeyStore(app.settings.data_dir, app.settings.api_keys)
    limiter = RateLimiter(app.settings.api_limits)
    threads = Threads(app.settings.api_limits.queue)

    @api.middleware("http")
    async def _log_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path.startswith("/v1"):
            events.log(
                "request",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000),
                key=getattr(request.state, "key_name", None),
                client=request.client.host if request.client else None,
            )
        return response

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(_error_body(exc.message, exc.code, exc.kind), exc.status, headers=headers)

    @api.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited):
        body = _error_body(str(exc), "rate_limit_exceeded", "requests")
        return JSONResponse(body, 429, headers={"Retry-After": str(exc.retry_after)})

    @api.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        message = f"Invalid request: {where}: {first.get('msg', 'malformed JSON')}."
        return JSONResponse(_error_body(message, "invalid_request", "invalid_request_error"), 400)

    def authorise(request: Request) -> KeyGrant:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not keys.configured():
            raise ApiError(
                401,
                "No API keys are set up; create one with `python -m assistant keys --create NAME`.",
                "invalid_api_key",
                "authentication_error",
            )
        grant = keys.verify(key)
        request.state.key_name = grant.name if grant else None
        if grant is None:
            raise ApiError(
                401,
                "Missing, wrong or expired API key; send it as 'Authorization: Bearer <key>'.",
                "invalid_api_key",
                "authentication_error",
            )
        return grant

    def admin_only(grant: KeyGrant = Depends(authorise)) -> KeyGrant:
        if not grant.is_admin:
            events.log("denied", key=grant.name, role=grant.role, action="admin endpoint")
            raise ApiError(403, "This endpoint needs an admin key.", "permission_denied", "permission_error")
        return grant

    def model_ids(grant: KeyGrant) -> list[str]:
        return [app.settings.model.name, *(a for a in app.adapters.names() if grant.may_use_adapter(a))]

    def resolve_model(name: str, grant: KeyGrant):
        if name in (app.settings.model.name, "default"):
            return app.model_config()
        if name in app.adapters.names():
            if not grant.may_use_adapter(name):
                raise ApiError(
                    403, f"This key may not use the model {name!r}.", "model_not_allowed", "permission_error"
                )
            return app.model_config(adapter=name)
        raise ApiError(
            404,
            f"The model {name!r} does not exist; GET /v1/models lists the models served here.",
            "model_not_found",
        )

    def check_kb(name: str, grant: KeyGrant) -> None:
        try:
            name = check_name(name)
        except TsumugiError as exc:
            raise ApiError(400, str(exc), "invalid_kb_name") from exc
        if not grant.may_use_kb(name):
            raise ApiError(
                403,
                f"This key may not use the knowledge base {name!r}.",
                "kb_not_allowed",
                "permission_error",
            )
        if not app.library.exists(name):
            raise ApiError(
                404, f"There is no knowledge base {name!r}; the `kb` field names one.", "kb_not_found"
            )

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "tsumugi"}

    @api.get("/v1/models")
    def list_models(grant: KeyGrant = Depends(authorise)) -> dict:
        return {"object": "list", "data": [model_card(m) for m in model_ids(grant)]}

    @api.get("/v1/models/{name}")
    def get_model(name: str, grant: KeyGrant = Depends(authorise)) -> dict:
        if name not in model_ids(grant):
            resolve_model(name, grant)
        return model_card(name)

    @api.get("/v1/knowledge_bases")
    def list_kbs(grant: KeyGrant = Depends(authorise)) -> dict:
        """The knowledge bases this key may answer from (the ``kb`` field)."""
        names = [n for n in app.library.names() if grant.may_use_kb(n)]
        return {"object": "list", "data": [{"id": n, "object": "knowledge_base"} for n in names]}

    @api.get("/v1/admin/status")
    def admin_status(_: KeyGrant = Depends(admin_only)) -> dict:
        """The server's state (models, memory, jobs, content), as the Admin tab shows it."""
        from assistant.serving.status import snapshot

        return snapshot(app)

    @api.get("/v1/admin/keys")
    def admin_keys(_: KeyGrant = Depends(admin_only)) -> dict:
        return {"object": "list", "data": keys.list()}

    @api.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    def load_lora_adapter(body: LoadAdapter, grant: KeyGrant = Depends(admin_only)) -> str:
        """vLLM's runtime endpoint: an adapter folder on this machine becomes a model here."""
        try:
            load_adapter(app.adapters, body.lora_name, body.lora_path, app.settings.model.name)
        except TsumugiError as exc:
            events.log("error", key=grant.name, action="load_lora_adapter", message=str(exc))
            raise ApiError(400, str(exc), "invalid_adapter") from exc
        events.log(
            "admin", key=grant.name, action="load_lora_adapter", name=body.lora_name, path=body.lora_path
        )
        return f"Success: LoRA adapter '{body.lora_name}' added successfully."

    @api.get("/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request, grant: KeyGrant = Depends(authorise)):
        slot = limiter.admit(grant.name)  # every request counts, refused ones too
        stop = threading.Event()
        try:
            model_config = resolve_model(body.model, grant)
            max_tokens = body.max_completion_tokens or body.max_tokens or 256
            temperature = body.temperature or 0.0
            turns = [(m.role, m.text()) for m in body.messages]
            if turns[-1][0] != "user" or not turns[-1][1].strip():
                raise ApiError(
                    400, "The last message should be the user's question, with text in it.", "invalid_request"
                )
            if body.kb is not None:
                check_kb(body.kb, grant)
            completion_id = "chatcmpl-" + secrets.token_hex(12)
            created = int(time.time())
            events = _answers(app, body, model_config, turns, max_tokens, temperature, stop)
            try:
                first = await threads.run(next, events)  # load errors surface here, as HTTP errors
            except TsumugiError as exc:
                raise ApiError(_status(exc), str(exc), "model_error", "server_error") from exc
        except BaseException:
            finish(stop, slot)
            raise
        if body.stream:
            chunks = _sse(events, first, body, completion_id, created, stop)
            return StreamingResponse(
                threads.relay(request, chunks, stop, slot),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                background=BackgroundTask(finish, stop, slot),
            )
        gone = asyncio.ensure_future(disconnected(request))
        try:
            final = await threads.until_done(lambda: deque(events, maxlen=1)[0], gone, stop)
        except TsumugiError as exc:
            raise ApiError(500, str(exc), "model_error", "server_error") from exc
        finally:
            gone.cancel()
            finish(stop, slot)
        if final is None:  # the client went away; nobody reads this
            raise ApiError(499, "The client closed the request.", "client_closed")
        message = {"role": "assistant", "content": final["text"]}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": final.get("logprobs")}
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [choice],
            "usage": final["usage"],
            **final["extra"],
        }

    return api


def _status(exc: TsumugiError) -> int:
    return 400 if isinstance(exc, ConfigError) else 503


def _answers(app, body: ChatRequest, model_config, turns, max_tokens, temperature, stop):
    """Yield ``{"text", "done", "usage", "extra", "streamable"}`` snapshots of the reply."""
    from assistant.answering.answer import AnswerConfig
    from assistant.answering.prompt import conversation_pairs
    from knowledge.retrieve import RetrievalConfig

    if body.kb is None:
        model = app.chat_model(model_config)
        yield {"text": "", "done": False, "usage": None, "extra": {}, "streamable": True}
        info: dict = {}
        messages = [
            {"role": "system" if r == "developer" else r, "content": t} for r, t in turns if r != "tool"
        ]
        text = ""
        for piece in model.stream(messages, max_tokens, temperature, stop=stop, info=info):
            text += piece
            yield {"text": text, "done": False, "usage": None, "extra": {}, "streamable": True}
        done = {"text": text.strip(), "done": True, "usage": _usage(info), "extra": {}, "streamable": True}
        if getattr(body, "logprobs", False) and hasattr(model, "logprobs_content"):  # an extra field
            done["logprobs"] = {"content": model.logprobs_content(info)}
        yield done
        return
    history, question = conversation_pairs(turns[:-1]), turns[-1][1]
    config = AnswerConfig(
        max_new_tokens=max_tokens,
        temperature=temperature,
        retrieval=RetrievalConfig(top_k=body.top_k),
        decompose=body.decompose,
        escalate=body.escalate,
        style=body.style,
    )
    app.chat_model(model_config)  # a model that cannot load fails here, before any reply
    # With a larger model to fall back on, the small model's text may be replaced: hold it back.
    hold = body.escalate and app.settings.escalation.enabled
    yield {"text": "", "done": False, "usage": None, "extra": {}, "streamable": not hold}
    answer = None
    for answer in app.ask(body.kb, question, history, config, model=model_config, stop=stop, source="api"):
        if not answer.done:
            yield {
                "text": answer.text,
                "done": False,
                "usage": None,
                "extra": {},
                "streamable": not hold or answer.escalated,
            }
    data = answer.to_json()
    extra = {
        "answered_by": answer.model,
        "confidence": data["confidence"],
        "confidence_label": data["confidence_label"],
        "needs_review": answer.needs_review,
        "escalated": answer.escalated,
        "covered": answer.covered,
        "citations": data["citations"],
        "sub_questions": answer.sub_questions,
        "notice": answer.notice or None,
    }
    yield {"text": answer.text, "done": True, "usage": None, "extra": extra, "streamable": True}


def _usage(info: dict) -> dict | None:
    if "prompt_tokens" not in info:
        return None
    prompt, new = info["prompt_tokens"], info.get("new_tokens", len(info.get("token_logprobs", [])))
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


def _sse(events, first, body: ChatRequest, completion_id: str, created: int, stop: threading.Event):
    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None, logprobs=None) -> str:
        data = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            **(extra or {}),
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    sent = ""
    try:
        yield chunk({"role": "assistant", "content": ""})
        for event in events:
            text = event["text"]
            if event["done"]:
                # The finished text can differ from the streamed one (citations checked): send
                # what extends it; the full final text is in the last chunk's `answer` field.
                tail = text[len(sent) :] if text.startswith(sent) else ""
                if tail:
                    yield chunk({"content": tail})
                extra = dict(event["extra"])
                if extra:
                    extra["answer"] = text
                if event["usage"]:
                    extra["usage"] = event["usage"]
                yield chunk({}, "stop", extra, event.get("logprobs"))  # the reply's, all at the end
                break
            if event["streamable"] and text.startswith(sent) and len(text) > len(sent):
                yield chunk({"content": text[len(sent) :]})
                sent = text
        yield "data: [DONE]\n\n"
    except TsumugiError as exc:
        yield f"data: {json.dumps(_error_body(str(exc), 'model_error', 'server_error'))}\n\n"
    finally:
        stop.set()  # the client went away, or the answer is complete
