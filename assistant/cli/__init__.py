"""Command line: ``python -m assistant <command>``. Progress on stderr, results on stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assistant.cli.admin import (
    _cmd_adapters,
    _cmd_deploy,
    _cmd_eval,
    _cmd_export,
    _cmd_export_data,
    _cmd_jobs,
    _cmd_keys,
    _cmd_models,
    _cmd_serve,
    _cmd_tune,
    _cmd_users,
)
from assistant.cli.answers import _cmd_ask, _cmd_draft, _cmd_ingest, _cmd_list, _cmd_reembed, _cmd_search
from assistant.cli.common import dataset_arguments, drive, style_argument
from assistant.tuning.deploy import SERVERS
from knowledge.errors import TsumugiError

__all__ = ["build_parser", "drive", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description="Tsumugi from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add files and folders (recursively) to a knowledge base")
    p.add_argument("--kb", required=True, help="knowledge base (created if missing)")
    p.add_argument("--json", action="store_true", help="print per-file results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--chunk-size", type=int, help="tokens per passage when the knowledge base is created (default 224)"
    )
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("list", help="list knowledge bases, or the documents of one")
    p.add_argument("--kb")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("reembed", help="switch a knowledge base to another embedding model")
    p.add_argument("--kb", required=True)
    p.add_argument("--model", required=True, help="model folder, cached hub id, or all-MiniLM-L6-v2")
    p.set_defaults(func=_cmd_reembed)

    def retrieval_args(p):
        p.add_argument("--top-k", type=int, default=5)
        p.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")

    p = sub.add_parser("search", help="show the passages retrieved for a query")
    p.add_argument("--kb", required=True)
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    retrieval_args(p)
    p.add_argument("--cutoff", action="store_true", help="drop passages below the relevance cut-off")
    p.add_argument("query")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("ask", help="answer a question from a knowledge base, with citations")
    p.add_argument("--kb", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    retrieval_args(p)
    p.add_argument(
        "--no-cutoff", action="store_true", help="answer from passages below the relevance cut-off too"
    )
    p.add_argument("--adapter", help="answer with this tuned adapter")
    style_argument(p)
    p.add_argument("question")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("tune", help="LoRA-tune the chat model on question/answer pairs or a knowledge base")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        help="question/answer pairs: a CSV, TSV, XLSX, JSONL or Parquet file, a folder written by "
        "Dataset.save_to_disk, or a hub dataset id",
    )
    source.add_argument("--kb", help="continue pre-training on this knowledge base's documents")
    source.add_argument(
        "--drafts", nargs="?", const="", metavar="KB", help="train on accepted reply drafts (of KB, or all)"
    )
    p.add_argument("--name", required=True, help="name of the adapter to create")
    p.add_argument("--base", help="base model (default: the configured chat model)")
    p.add_argument("--preset", choices=["quick", "balanced", "thorough"], default="quick")
    p.add_argument("--quant", choices=["4bit", "8bit", "none"], default="4bit")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--epochs", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--rank", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--question-column")
    p.add_argument("--answer-column")
    dataset_arguments(p)
    p.add_argument("--json", action="store_true", help="print the adapter card as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--detach", action="store_true", help="start the job, print its id and return")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("export", help="export an adapter as a zip, or merged into a standalone model folder")
    p.add_argument("--adapter", required=True)
    p.add_argument("--merge", action="store_true", help="merge into the base model and save a folder")
    p.add_argument(
        "--for",
        dest="serve_with",
        choices=SERVERS,
        help="the folder vLLM loads, or an Ollama Modelfile with the adapter; with SERVE.md",
    )
    p.add_argument("--out", required=True, type=Path, help="folder to write to")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("deploy", help="load an adapter into a running vLLM (or Tsumugi) server")
    p.add_argument("--adapter", required=True)
    p.add_argument("--to", required=True, metavar="URL", help="the server, e.g. http://gpu-host:8000")
    p.add_argument("--out", type=Path, help="export into this folder (default: under the data folder)")
    p.add_argument("--path", metavar="FOLDER", help="where the server sees the --out folder, if elsewhere")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("eval", help="measure answer quality on a set of questions with expected answers")
    p.add_argument("--kb", required=True)
    p.add_argument(
        "--set",
        required=True,
        help="CSV/XLSX/JSONL/Parquet file, saved dataset folder, hub dataset id, or the name of a stored set",
    )
    dataset_arguments(p)
    p.add_argument("--adapter", help="answer with this tuned adapter")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-retrieval", action="store_true", help="answer from the model alone (closed book)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--no-decompose", action="store_true", help="one retrieval per question, never split")
    p.add_argument("--escalate", action="store_true", help="send low-confidence answers to the larger model")
    style_argument(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--details", action="store_true", help="with --json: every question's answer and scores")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "export-data", help="export accepted drafts, an evaluation set or run as Parquet or a dataset"
    )
    p.add_argument("what", choices=["drafts", "eval-set", "eval-run"])
    p.add_argument("--kb", help="drafts: of this knowledge base (default all); eval-set: its knowledge base")
    p.add_argument("--name", help="eval-set: the set's name; eval-run: the run's id")
    p.add_argument(
        "--out",
        type=Path,
        help="a .parquet file, or a folder for Dataset.save_to_disk (load_from_disk reads it)",
    )
    p.add_argument("--push-to-hub", metavar="REPO", help="also push it to the hub as a private dataset")
    p.set_defaults(func=_cmd_export_data)

    p = sub.add_parser("draft", help="draft a reply to a customer message (read from stdin or --message)")
    p.add_argument("--kb", required=True)
    p.add_argument("--tone", choices=["formal", "friendly", "concise"], default="formal")
    p.add_argument("--signature", help="text under the reply (name, team)")
    p.add_argument("--template", type=Path, help="file with a reply template containing {reply}")
    p.add_argument("--message", type=Path, help="file with the customer's message (default: stdin)")
    p.add_argument("--adapter", help="draft with this tuned adapter")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-decompose", action="store_true", help="one retrieval for the whole message")
    p.add_argument("--no-citations", action="store_true", help="print the reply without [n] marks")
    style_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_draft)

    p = sub.add_parser("serve", help="serve the OpenAI-compatible API (and with --ui the web app)")
    p.add_argument("--host", help="address to listen on (default TSUMUGI_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ui", action="store_true", help="serve the web app at / as well")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("users", help="list, add or delete users of the web app (login and roles)")
    p.add_argument("--add", metavar="NAME")
    p.add_argument("--role", choices=["agent", "admin"], default="agent")
    p.add_argument("--passwd", metavar="NAME", help="change a user's password")
    p.add_argument("--delete", metavar="NAME")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    p.set_defaults(func=_cmd_users)

    p = sub.add_parser("keys", help="list, create or revoke API keys")
    p.add_argument("--create", metavar="NAME")
    p.add_argument("--role", choices=["agent", "admin"], default="agent")
    p.add_argument(
        "--kb", action="append", metavar="NAME", help="limit the key to this knowledge base (repeat)"
    )
    p.add_argument(
        "--adapter", action="append", metavar="NAME", help="limit the key to this adapter (repeat)"
    )
    p.add_argument("--expires-days", type=float, metavar="DAYS", help="the key stops working after DAYS")
    p.add_argument("--revoke", metavar="NAME")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("jobs", help="list background jobs (training, evaluation), or cancel one")
    p.add_argument("--json", action="store_true")
    p.add_argument("--cancel", metavar="JOB_ID")
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("models", help="list the chat and embedding models, choose one, or download one")
    p.add_argument("--json", action="store_true")
    p.add_argument("--use-chat", metavar="NAME", help="answer with this chat model from now on")
    p.add_argument("--use-embed", metavar="NAME", help="embed new knowledge bases with this model")
    p.add_argument("--pull", metavar="HUB_ID", help="download a hub model (needs TSUMUGI_ALLOW_DOWNLOADS=1)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("adapters", help="list, rename or delete tuned adapters")
    p.add_argument("--json", action="store_true")
    p.add_argument("--delete", metavar="NAME")
    p.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"))
    p.set_defaults(func=_cmd_adapters)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from assistant.serving.service import Tsumugi

        return args.func(Tsumugi(), args)
    except TsumugiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
