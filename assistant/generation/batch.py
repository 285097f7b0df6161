"""Batched decoding on the local model: a request that arrives while the model is busy joins
the running batch at the next token, instead of waiting behind the replies before it.

One worker thread per model runs while there is work. A new request's prompt is read alone
(its prefill); its key/value cache then joins the batch's, left-padded to the longest row,
and every step decodes one token for every row at once. On a CPU a decoding step costs about
the same for one row as for eight, since the weights are read once either way (bench/load.py
measures the batched path against one request at a time).

Requests for different LoRA adapters of the model share its batch: every adapter is loaded
once beside the base weights (never merged into them), and each step tells peft which row
uses which (its mixed-batch ``adapter_names``; ``__base__`` for a row without one). Loading
an adapter or taking one out changes the model's layers, so either runs between two steps.

A row leaves the batch at the next step when its reader stops (Stop, a closed stream), its
stop event is set, nobody has read it for :data:`ABANDONED_AFTER_S`, it reaches its token
limit or the end of its reply, or it starts repeating itself.

transformers 5's own continuous batching was tried first: on this CPU it took 373 s for eight
32-token replies that ``generate`` writes in 2 s each (its paged cache is built for GPUs), so
this module keeps a plain cache and pads instead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from transformers.cache_utils import Cache

from assistant.generation.backend import ModelError
from assistant.generation.batch_cache import leaving_order, new_cache
from assistant.generation.loops import is_looping, repeats_sentence

ABANDONED_AFTER_S = 30.0
"""A reply nobody has read for this long is stopped: the backstop for a caller that neither
closes the stream nor sets its stop event."""
TOP_P = 0.95
"""Nucleus sampling's share when a request samples (temperature above 0)."""
TOP_K = 50
"""Tokens a sampled step chooses among (``generate``'s default)."""
_END = object()
"""Put on a request's queue after its last piece."""
FAILED = -1
"""The token of a row whose step failed (it leaves the batch)."""
BASE = "__base__"
"""peft's name for a row that uses no adapter in a mixed batch."""


@dataclass
class Request:
    """One reply being generated: what was asked, and what the reader takes from ``out``."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float
    stop: threading.Event | None
    stats: dict
    adapter: str = BASE
    """The peft adapter this row decodes with (:meth:`Batcher.load_adapter`), or the base model."""
    closed: threading.Event = field(default_factory=threading.Event)
    """Set by the reader when it stops reading (Stop, a client gone)."""
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    suspended: list[float] = field(default_factory=list)
    """When the reader took its last piece and has not asked for the next one yet."""
    generated: list[int] = field(default_factory=list)
    printed: int = 0
    """Characters of the decoded reply already put on ``out``."""
    position: int = 0
    """Tokens of this row in the cache."""

    def cancelled(self) -> bool:
        if self.closed.is_set() or (self.stop is not None and self.stop.is_set()):
            return True
        since = self.suspended[:1]
        return bool(since) and time.monotonic() - since[0] > ABANDONED_AFTER_S

    def pieces(self):
        """The reply's pieces as they come; raises what the worker met."""
        try:
            while True:
                item = self.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.suspended[:] = [time.monotonic()]
                yield item
                self.suspended.clear()
        finally:
            self.closed.set()  # a closed generator leaves the batch at the next step


ADAPTER_REMOVED = "The adapter this reply was asked of was removed (deleted or renamed); ask again."


def _strip_adapter_layers(model) -> None:
    """Put back the plain layers peft wrapped in ``model`` (one that held no adapter before)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())


class Batcher:
    """Generates every request given to :meth:`submit` for one model, in batches of up to
    ``max_batch`` rows (1: one request at a time, in the order they came)."""

    def __init__(self, model, tokenizer, max_batch: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.eos = eos | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self._lock = threading.Lock()
        """Guards ``_pending`` and ``_worker``; what changes ``adapters``, ``_leaving`` and the
        model's layers runs holding it (:meth:`between_steps`)."""
        self._pending: deque[Request] = deque()
        self._between: deque[tuple[Callable, Future]] = deque()
        """Work that changes the model (loading or taking out an adapter), run by the worker
        between steps."""
        self.adapters: dict[str, str] = {}
        """Adapter folder → its peft name in ``model``."""
        self._named = 0
        """Adapters loaded so far: each gets a name no adapter had before."""
        self._leaving: set[str] = set()
        """Names of adapters taken out whose replies are still being written."""
        self._worker: threading.Thread | None = None
        # Owned by the worker thread:
        self._rows: list[Request] = []
        self._cache: Cache | None = None
        self._mask = None
        self.widest = 0
        """The most rows decoded together so far (for the status page and tests)."""

    def active(self) -> int:
        """Replies being written or waiting to join the batch (for the status page and tests)."""
        with self._lock:
            return len(self._pending) + len(self._rows)

    def submit(self, request: Request) -> None:
        with self._lock:
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, daemon=True, name="tsumugi-batch")
                self._worker.start()

    def between_steps(self, work: Callable):
        """Run ``work`` when no step is running (by the worker between two steps, or here when
        the model is idle) and return its result: what changes the model's layers waits for
        the step that uses them."""
        with self._lock:
            if self._worker is None:  # idle; holding the lock, no step can start meanwhile
                return work()
            done: Future = Future()
            self._between.append((work, done))
        return done.result()

    def load_adapter(self, folder: str) -> str:
        """The peft name of the LoRA adapter in ``folder``, loaded beside the base weights the
        first time (raises what peft raises for one that does not fit)."""

        def load() -> str:
            from peft import PeftModel

            if folder in self.adapters:
                return self.adapters[folder]
            self._named += 1
            name = f"adapter{self._named}"
            shared = isinstance(self.model, PeftModel)
            try:
                if shared:
                    self.model.load_adapter(folder, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
            except BaseException:
                # peft copies the weights that fit before it raises for the rest: take the
                # half-loaded adapter out again. A first one would apply to every row decoding
                # now; one beside others would keep its name, and the next adapter would be
                # loaded into its layers.
                if not shared:
                    _strip_adapter_layers(self.model)
                elif name in self.model.peft_config:
                    self.model.delete_adapter(name)
                raise
            self.model.eval()
            self.adapters[folder] = name
            return name

        return self.between_steps(load)

    def unload_adapter(self, folder: str) -> None:
        """Take the adapter in ``folder`` out of the model (deleted or renamed): the base weights
        and the other adapters stay. Replies already asked of it are written first; then it
        goes, and the plain layers come back with the last one."""

        def unload() -> None:
            if (name := self.adapters.pop(folder, None)) is not None:
                self._leaving.add(name)
                self._drop_unused()

        self.between_steps(unload)

    def _drop_unused(self) -> None:
        """Delete the adapters taken out that no reply uses any more (between steps)."""
        used = {r.adapter for r in self._rows} | {r.adapter for r in self._pending}
        for name in sorted(self._leaving - used):
            if self.adapters or len(self._leaving) > 1:
                self.model.delete_adapter(name)
            else:
                self.model = self.model.unload()
            self._leaving.discard(name)  # only once it is out, or base rows could decode with it

    def _adapters_of(self, rows: list[Request]) -> dict:
        """What tells peft each row's adapter. When every row uses one adapter, it is made the
        active one instead: peft's mixed-batch path costs more per step (bf16 on this CPU, 8
        rows: 146 ms against 108 with the adapter active and 84 merged)."""
        if not self._named:  # never asked for an adapter: a plain model, and peft not imported
            return {}
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return {}
        names = {r.adapter for r in rows}
        if len(names) == 1 and BASE not in names:
            if self.model.active_adapter != (name := names.pop()):
                self.model.set_adapter(name, inference_mode=True)  # active, not trainable
            return {}
        return {"adapter_names": [r.adapter for r in rows]}

    def _run(self) -> None:
        """Admit what waits, decode a step, until nothing is left. Whatever goes wrong fails the
        requests it reached with the error, never leaves one waiting, and the next request
        starts a new worker."""
        import torch

        admitted: list[Request] = []
        try:
            with torch.inference_mode():
                while True:
                    with self._lock:
                        for request in [r for r in self._pending if r.cancelled()]:
                            self._pending.remove(request)  # stopped while waiting for room
                            self._finish(request)
                        while self._between:
                            work, done = self._between.popleft()
                            try:
                                done.set_result(work())
                            except BaseException as exc:  # the caller raises it; the batch goes on
                                done.set_exception(exc)
                        if self._leaving:
                            self._drop_unused()
                        if not self._pending and not self._rows:
                            self._worker = None  # a later submit starts a new worker
                            return
                        room = self.max_batch - len(self._rows)
                        admitted = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
                    while admitted:
                        self._admit(admitted.pop(0))
                    if self._rows:
                        self._step()
        except BaseException as exc:
            self._fail(self._rows + admitted, exc)
            self._clear()
            with self._lock:
                self._fail(list(self._pending), exc)
                self._pending.clear()
                while self._between:
                    self._between.popleft()[1].set_exception(exc)
                self._worker = None
                if self._leaving:  # no reply uses them now
                    self._drop_unused()

    def _admit(self, request: Request) -> None:
        import torch

        if request.cancelled():
            self._finish(request)
            return
        if request.adapter not in {BASE, *self.adapters.values(), *self._leaving}:
            self._fail([request], ModelError(ADAPTER_REMOVED))
            return
        cache = new_cache(self.max_batch)
        try:
            ids = torch.tensor([request.prompt], device=self.model.device)
            logits = self.model(
                input_ids=ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                **self._adapters_of([request]),
            ).logits
        except Exception as exc:  # this request alone fails; the batch goes on
            self._fail([request], exc)
            return
        request.position = len(request.prompt)
        if self._advance(request, self._choose([request], logits[:, -1])[0]):
            return
        if not self._rows:
            self._rows, self._cache = [request], cache
            self._mask = torch.ones((1, request.position), dtype=torch.long, device=self.model.device)
            self.widest = max(self.widest, 1)
            return
        width = max(self._mask.shape[1], request.position)
        mask = torch.zeros((len(self._rows) + 1, width), dtype=torch.long, device=self.model.device)
        mask[:-1, width - self._mask.shape[1] :] = self._mask
        mask[-1, width - request.position :] = 1
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.join(theirs, width)
        self._rows.append(request)
        self._mask = mask
        self.widest = max(self.widest, len(self._rows))

    def _step(self) -> None:
        import torch

        rows = self._rows
        device = self.model.device
        ids = torch.tensor([[r.generated[-1]] for r in rows], device=device)
        positions = torch.tensor([[r.position] for r in rows], device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        try:
            logits = self.model(
                input_ids=ids,
                attention_mask=self._mask,
                position_ids=positions,
                past_key_values=self._cache,
                use_cache=True,
                **self._adapters_of(rows),
            ).logits
        except Exception as exc:
            self._fail(rows, exc)
            self._clear()
            return
        done = []
        for i, (request, token) in enumerate(zip(rows, self._choose(rows, logits[:, -1]))):
            request.position += 1
            if self._advance(request, token):
                done.append(i)
        if done:
            self._leave(done)

    def _clear(self) -> None:
        """No rows, no cache: the next request starts a batch of its own."""
        self._rows, self._cache, self._mask = [], None, None

    def _leave(self, done: list[int]) -> None:
        order = leaving_order(len(self._rows), done)
        if not order:
            self._clear()
            return
        mask = self._mask[order]
        start = int(mask.any(dim=0).nonzero()[0])  # columns only the finished rows used
        for layer in self._cache.layers:
            layer.keep(order, start)
        self._mask = mask[:, start:]
        self._rows = [self._rows[i] for i in order]

    def _choose(self, rows: list[Request], logits) -> list[int]:
        """Each row's next token (greedy, or sampled at its temperature among the ``TOP_K`` most
        likely within ``TOP_P``, as ``generate`` samples), with its log-probability recorded for
        confidence scores (before temperature: the model's own belief)."""
        import torch

        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1).tolist()
        for i, request in enumerate(rows):
            if request.temperature > 0:
                top, where = torch.topk(logits[i] / request.temperature, min(TOP_K, logits.shape[-1]))
                probs = torch.softmax(top, dim=-1)
                outside = probs.cumsum(0) - probs > TOP_P  # the smallest set covering TOP_P
                probs[outside] = 0
                try:
                    tokens[i] = int(where[torch.multinomial(probs, 1)])
                except RuntimeError as exc:  # no finite probabilities: this row alone fails
                    self._fail([request], exc)
                    tokens[i] = FAILED
                    continue
            request.stats["token_logprobs"].append(float(logprobs[i, tokens[i]]))
            request.stats["token_ids"].append(tokens[i])
        return tokens

    def _advance(self, request: Request, token: int) -> bool:
        """Add ``token`` to the reply and pass on any new text; True when the reply is over."""
        if token == FAILED:
            return True  # the reader has its error already
        request.generated.append(token)
        request.stats["new_tokens"] = len(request.generated)
        text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        if len(text) > request.printed and not text.endswith("\ufffd"):
            request.out.put(text[request.printed :])
            request.printed = len(text)
        over = (
            token in self.eos
            or len(request.generated) >= request.max_new_tokens
            or request.cancelled()
            or is_looping(request.generated)
            # Every few tokens, look for a whole sentence said twice.
            or (len(request.generated) % 8 == 0 and repeats_sentence(text))
        )
        if over:
            if len(text) > request.printed:
                request.out.put(text[request.printed :])
            self._finish(request)
        return over

    @staticmethod
    def _finish(request: Request) -> None:
        request.out.put(_END)

    @staticmethod
    def _fail(requests: list[Request], exc: Exception) -> None:
        for request in requests:
            request.out.put(exc)
