"""Load: concurrent chat clients through the web app (gradio_client) and the HTTP API (the
official openai client) against a Tsumugi server on loopback, for a bounded time.

Two servers in one run: the batched path (the default: requests join the model's running
batch) and the one-at-a-time path (``TSUMUGI_MAX_BATCH=1``, the baseline), each under the same
8 web and 8 API clients; and one client alone on the batched server (the latency a single user
sees). Answers are written by the model (the detailed style), so generation is what is loaded.
Reported: requests, errors, throughput and p50/p95 latency per kind of client. Each server runs
in its own process (``app.py``), as in production.

``python -m bench --only load`` (or ``python -m bench.load [--clients 8] [--seconds 90]``)
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


def _questions() -> list[str]:
    """The 89 contoso FAQ questions: every client asks them in turn from its own starting
    point, so answers do not repeat one another (a handful of questions asked over and over
    would measure caches, not the server)."""
    import csv

    with open(ROOT / "tests" / "data" / "eval" / "contoso-faq.csv", encoding="utf-8") as fh:
        return [row["question"] for row in csv.DictReader(fh)]


QUESTIONS = _questions()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


STYLE = "detailed"
"""Every answer generated in full: the quote style, the default, writes no tokens."""


def start_server(data: Path, model_cache: Path, port: int, max_batch: int) -> subprocess.Popen:
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
        "TSUMUGI_MAX_BATCH": str(max_batch),
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


def ask_until(kind: str, ask, stop_at: float, out: list, errors: list, n: int) -> None:
    """One client: questions one after another until ``stop_at`` (at least one); ``ask``
    returns the answer's text. Latencies go to ``out``, failures to ``errors``."""
    i = start = n * 11  # clients start far apart in the list
    while i == start or time.time() < stop_at:
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
        *_, last = client.submit(question, [], kb, 5, 0.0, max_tokens, "auto", "", STYLE, api_name="/respond")
        return last[0][-1]["content"]

    ask_until("gradio", ask, stop_at, out, errors, n)


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
            extra_body={"kb": kb, "style": STYLE},
        )
        return reply.choices[0].message.content

    ask_until("api", ask, stop_at, out, errors, n)


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


def measure(clients: int, seconds: float, lengths: tuple[int, ...], model_cache: Path) -> dict:
    """For each answer length: both paths under the same clients, and one client alone on the
    batched one. Returns ``{length: {"single", "one_at_a_time", "batched"}}``."""
    from tests.conftest import free_port

    results: dict = {n: {} for n in lengths}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        key = prepare(data, model_cache)
        for path, max_batch in (("one_at_a_time", 1), ("batched", 16)):
            port = free_port()
            server = start_server(data, model_cache, port, max_batch)
            url = f"http://127.0.0.1:{port}"
            try:
                run_load(url, key, "contoso", 1, 0, 10, lengths[0])  # warm the model
                for n in lengths:
                    if path == "batched":
                        results[n]["single"] = run_load(url, key, "contoso", 0, 1, seconds, n)
                    results[n][path] = run_load(url, key, "contoso", clients, clients, seconds, n)
            finally:
                server.terminate()
                server.wait(timeout=30)
    return results


def section(results: dict, max_tokens: int) -> list[str]:
    rows = [
        f"### Answers of at most {max_tokens} tokens",
        "",
        "| path | clients | answers/min | web app p50 / p95 | API p50 / p95 | errors |",
        "|---|---|---|---|---|---|",
    ]
    named = (
        ("one client alone (batched server)", "single"),
        ("one at a time (baseline, TSUMUGI_MAX_BATCH=1)", "one_at_a_time"),
        ("batched (default)", "batched"),
    )
    for name, key in named:
        r = results[key]
        who = f"{r['clients']['gradio']} + {r['clients']['api']}"
        rows.append(
            f"| {name} | {who} | {r['answers_per_minute']} | {r['gradio']['p50_s']} / {r['gradio']['p95_s']} s | "
            f"{r['api']['p50_s']} / {r['api']['p95_s']} s | {len(r['errors'])} |"
        )
    batched, baseline, single = results["batched"], results["one_at_a_time"], results["single"]
    worst_p95 = max(batched["gradio"]["p95_s"] or 0, batched["api"]["p95_s"] or 0)
    rows += [
        "",
        f"Throughput ×{batched['answers_per_minute'] / max(1e-9, baseline['answers_per_minute']):.2f} "
        f"the one-at-a-time path (target ≥ ×3); p95 under load ×{worst_p95 / max(1e-9, single['api']['p95_s'] or 0):.2f} "
        f"a single client's (target ≤ ×3); errors {len(batched['errors']) + len(baseline['errors'])}.",
        "",
    ]
    return rows


def report(
    clients: int = 8,
    seconds: float = 90,
    lengths: tuple[int, ...] = (48, 256),
    model_cache: Path | None = None,
) -> str:
    """Measure, write bench/results/load.md and load.json, and return the report. 256 tokens is
    the longest answer the chat and the API allow by default; 48 keeps the prompt's reading
    (prefill) a large share of each answer."""
    from bench.common import machine

    results = measure(clients, seconds, lengths, model_cache or ROOT / "data" / "models")
    info = machine()
    rows = [
        f"Machine: {info['cpu']} (flags: {info.get('cpu_flags', '?')}), {info['cores']} cores, "
        f"torch {info['torch']}. {clients} web + {clients} API clients for {seconds:.0f} s each, "
        f"{STYLE} answers on the contoso manuals (prompts of about 1,200 tokens).",
        "",
    ]
    for n in lengths:
        rows += section(results[n], n)
    text = "\n".join(rows)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=2), "utf-8")
    (out / "load.md").write_text(text, "utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--clients", type=int, default=8, help="clients of each kind")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[48, 256])
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    args = parser.parse_args()
    print(report(args.clients, args.seconds, tuple(args.max_tokens), args.model_cache))


if __name__ == "__main__":
    main()
