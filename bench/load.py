"""Load: concurrent chat clients through the web app (gradio_client) and the HTTP API (the
official openai client) against one Tsumugi server on loopback, for a bounded time.

Reported: requests, errors, throughput and p50/p95 latency per kind of client, against the
named baseline of one client alone in the same run (the latency a single user sees). The
server runs in its own process (``app.py``), as in production.

``python -m bench.load [--clients 8] [--seconds 120] [--max-tokens 48]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How many people can sleep in the TrailMaster X4 Tent?",
    "Is the RainGuard Hiking Jacket waterproof?",
    "What is the temperature rating of the CozyNights Sleeping Bag?",
    "Which fuel does the EcoFire Camping Stove use?",
    "How much does the TrailLite Daypack weigh?",
    "Can I wash the Summit Breeze Jacket in a machine?",
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_server(data: Path, model_cache: Path, port: int) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "TSUMUGI_DATA": str(data),
        "TSUMUGI_MODEL_CACHE": str(model_cache),
        "TSUMUGI_PORT": str(port),
        "TSUMUGI_HOST": "127.0.0.1",
        # All API clients share one key here: the per-key limits would measure themselves.
        "TSUMUGI_API_RATE": "100000",
        "TSUMUGI_API_KEY_CONCURRENCY": "64",
        "TSUMUGI_API_QUEUE": "64",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("the server did not start in 240 s")


def prepare(data: Path, model_cache: Path) -> str:
    """A data folder with the contoso manuals and an API key; returns the key."""
    from assistant.config import Settings
    from assistant.serving.keys import ApiKeyStore
    from assistant.serving.service import Tsumugi

    app = Tsumugi(Settings(data_dir=data, model_cache=model_cache))
    deque(app.ingest("contoso", [ROOT.parent / "shared" / "data" / "contoso-manuals"]), maxlen=0)
    return ApiKeyStore(data).create("load")


def _client(kind: str, ask, stop_at: float, out: list, errors: list, n: int) -> None:
    """One client: questions one after another until ``stop_at`` (at least one); ``ask``
    returns the answer's text."""
    i = n
    while i == n or time.time() < stop_at:
        question = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        started = time.perf_counter()
        try:
            if not ask(question):
                raise RuntimeError("empty answer")
            out.append(time.perf_counter() - started)
        except Exception as exc:  # counted and reported
            errors.append(f"{kind}: {exc.__class__.__name__}: {exc}"[:200])


def _gradio_client(
    url: str, kb: str, max_tokens: int, stop_at: float, out: list, errors: list, n: int
) -> None:
    from gradio_client import Client

    client = Client(url + "/", verbose=False)

    def ask(question: str) -> str:
        *_, last = client.submit(question, [], kb, 5, 0.0, max_tokens, api_name="/respond")
        return last[0][-1]["content"]

    _client("gradio", ask, stop_at, out, errors, n)


def _api_client(
    url: str, key: str, kb: str, max_tokens: int, stop_at: float, out: list, errors: list, n: int
) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)

    def ask(question: str) -> str:
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": question}],
            max_tokens=max_tokens,
            extra_body={"kb": kb},
        )
        return reply.choices[0].message.content

    _client("api", ask, stop_at, out, errors, n)


def run_load(
    url: str, key: str, kb: str, gradio_clients: int, api_clients: int, seconds: float, max_tokens: int
) -> dict:
    """Start the clients together; each sends questions one after another until ``seconds``
    have passed (a request under way finishes). Returns latencies and errors per kind."""
    stop_at = time.time() + seconds
    results = {"gradio": [], "api": []}
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_gradio_client, args=(url, kb, max_tokens, stop_at, results["gradio"], errors, n)
        )
        for n in range(gradio_clients)
    ] + [
        threading.Thread(
            target=_api_client, args=(url, key, kb, max_tokens, stop_at, results["api"], errors, n)
        )
        for n in range(api_clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    summary = {
        "clients": {"gradio": gradio_clients, "api": api_clients},
        "wall_s": round(wall, 1),
        "errors": errors,
    }
    for kind, latencies in results.items():
        summary[kind] = {
            "requests": len(latencies),
            "per_minute": round(len(latencies) / wall * 60, 1),
            "p50_s": None if not latencies else round(statistics.median(latencies), 2),
            "p95_s": None if not latencies else round(percentile(latencies, 0.95), 2),
        }
    total = len(results["gradio"]) + len(results["api"])
    summary["answers_per_minute"] = round(total / wall * 60, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--clients", type=int, default=8, help="clients of each kind")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    args = parser.parse_args()
    from tests.conftest import free_port

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        key = prepare(data, args.model_cache)
        port = free_port()
        server = start_server(data, args.model_cache, port)
        url = f"http://127.0.0.1:{port}"
        try:
            run_load(url, key, "contoso", 1, 0, 10, args.max_tokens)  # warm the model
            alone = run_load(url, key, "contoso", 1, 1, args.seconds / 4, args.max_tokens)
            loaded = run_load(url, key, "contoso", args.clients, args.clients, args.seconds, args.max_tokens)
        finally:
            server.terminate()
            server.wait(timeout=30)
    rows = [
        "| clients | answers/min | web app p50 / p95 | API p50 / p95 | errors |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("1 + 1 (baseline)", alone), (f"{args.clients} + {args.clients}", loaded)):
        rows.append(
            f"| {name} | {r['answers_per_minute']} | {r['gradio']['p50_s']} / {r['gradio']['p95_s']} s | "
            f"{r['api']['p50_s']} / {r['api']['p95_s']} s | {len(r['errors'])} |"
        )
    ratio = (loaded["api"]["p95_s"] or 0) / max(1e-9, alone["api"]["p95_s"] or 1e-9)
    rows.append(f"\nAPI p95 under load ×{ratio:.1f} the single-client p95; max_tokens {args.max_tokens}.")
    table = "\n".join(rows)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps({"baseline": alone, "load": loaded}, indent=2), "utf-8")
    (out / "load.md").write_text(table + "\n", "utf-8")


if __name__ == "__main__":
    main()
