"""Commands for admins: serve, users, keys, tune, export, adapters, eval, jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from assistant.cli.common import (
    ProgressPrinter,
    drive,
    follow_job,
)
from assistant.evaluation.metrics import format_metric
from knowledge.errors import ConfigError


def _cmd_serve(app, args) -> int:
    from assistant.server import run_server

    host = args.host or app.settings.host
    if not app.settings.api_keys and not _keys(app).configured():
        print(
            "warning: no API keys yet; every request will be refused until you run "
            "`python -m assistant keys --create NAME`.",
            file=sys.stderr,
        )
    run_server(app, host, args.port, ui=args.ui)
    return 0


def _keys(app):
    from assistant.serving.keys import ApiKeyStore

    return ApiKeyStore(app.settings.data_dir, app.settings.api_keys)


def _read_password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("The two passwords differ; nothing was changed.")
    return first


def _cmd_users(app, args) -> int:
    from assistant.serving.users import UserStore

    users = UserStore(app.settings.data_dir)
    if args.add:
        users.add(args.add, _read_password(args), args.role)
        print(
            f"User {args.add!r} ({args.role}) created; from its next start the web app asks everyone to log in.",
            file=sys.stderr,
        )
    elif args.passwd:
        users.set_password(args.passwd, _read_password(args))
        print(f"Password of {args.passwd!r} changed.", file=sys.stderr)
    elif args.delete:
        users.delete(args.delete)
        print(f"User {args.delete!r} deleted.", file=sys.stderr)
    else:
        for record in users.list():
            print(f"{record['name']}  {record['role']:6} created {record['created']}")
    return 0


def _cmd_keys(app, args) -> int:
    keys = _keys(app)
    if args.create:
        key = keys.create(args.create, args.role, args.kb, args.adapter, args.expires_days)
        print(key)
        print(
            f"Key {args.create!r} ({_scope(keys.list(), args.create)}) created; it is shown only now.",
            file=sys.stderr,
        )
        return 0
    if args.revoke:
        keys.revoke(args.revoke)
        print(f"Key {args.revoke!r} revoked.", file=sys.stderr)
        return 0
    for record in keys.list():
        print(f"{record['name']}  {_scope([record], record['name'])} created {record['created']}")
    return 0


def _scope(records: list[dict], name: str) -> str:
    """A key's role, scope and expiry in a few words."""
    import time

    record = next(r for r in records if r["name"] == name)
    parts = [record["role"]]
    parts.append(
        "knowledge bases: " + ", ".join(record["kbs"]) if record.get("kbs") else "all knowledge bases"
    )
    if record.get("adapters"):
        parts.append("adapters: " + ", ".join(record["adapters"]))
    if record.get("expires"):
        parts.append("expires " + time.strftime("%Y-%m-%d %H:%M", time.localtime(record["expires"])))
    return "; ".join(parts)


def _cmd_tune(app, args) -> int:
    from assistant.tuning.job import data_source
    from assistant.tuning.train import TuneConfig

    config = TuneConfig.from_preset(
        args.preset,
        quant=args.quant,
        device=args.device,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        rank=args.rank,
        alpha=args.rank * 2 if args.rank else None,
        max_length=args.max_length,
        batch_size=args.batch_size,
    )
    if args.data:
        from assistant.datasets_io import is_dataset_source

        data = data_source(
            "dataset" if is_dataset_source(args.data) else "file",
            path=args.data,
            question_column=args.question_column,
            answer_column=args.answer_column,
            split=args.split,
            subset=args.subset,
        )
    elif args.drafts is not None:
        data = data_source("drafts", kb=args.drafts)
    else:
        data = data_source("kb", kb=args.kb)
    job = app.start_tune(args.name, data, config, base=args.base)
    print(f"job {job.id}: training adapter {args.name!r}; log in {job.folder / 'log.txt'}", file=sys.stderr)
    if args.detach:
        print(job.id)
        return 0
    job = follow_job(app, job, args.quiet)
    if job.state != "done":
        print(f"error: {job.error or job.state}", file=sys.stderr)
        return 130 if job.state == "cancelled" else 1
    info = app.adapters.get(job.result["adapter"])
    m = info.card["metrics"]
    if args.json:
        print(json.dumps(info.card, ensure_ascii=False, indent=2))
        return 0
    print(
        f"Saved adapter {info.name!r}: validation loss {m['val_loss_before']:.3f} → {m['val_loss_after']:.3f}, "
        f"perplexity {m['perplexity_before']:.1f} → {m['perplexity_after']:.1f}, "
        f"{m['tokens_per_s']:.0f} tokens/s, {info.card['duration_s']:.0f} s."
    )
    comparison = json.loads((info.path / "comparison.json").read_text(encoding="utf-8"))
    for row in comparison:
        print(
            f"\nQ: {row['question']}\n  expected: {row['expected']}\n  base:     {row['base']}\n  tuned:    {row['tuned']}"
        )
    return 0


def _cmd_export(app, args) -> int:
    out = app.export_adapter(args.adapter, args.out, merge=args.merge, serve_with=args.serve_with or "")
    what = "merged model folder" if args.merge else "adapter zip"
    if args.serve_with:
        what = f"{args.serve_with} folder (how to serve it: {out / 'SERVE.md'})"
    print(f"Wrote the {what} to {out}.")
    return 0


def _cmd_deploy(app, args) -> int:
    import os

    key = os.environ.get("TSUMUGI_DEPLOY_KEY", "")
    reply = app.deploy_adapter(args.adapter, args.to, key, args.out, args.path)
    print(f"{args.to}: {reply}")
    return 0


def _cmd_adapters(app, args) -> int:
    if args.delete:
        app.delete_adapter(args.delete)
        print(f"Deleted adapter {args.delete!r}.")
        return 0
    if args.rename:
        app.rename_adapter(*args.rename)
        print(f"Renamed adapter {args.rename[0]!r} to {args.rename[1]!r}.")
        return 0
    adapters = app.adapters.list()
    if args.json:
        print(json.dumps([{"name": a.name, **a.card} for a in adapters], ensure_ascii=False, indent=2))
    for a in [] if args.json else adapters:
        print(f"{a.name}: {a.summary()}")
    return 0


def _cmd_eval(app, args) -> int:
    from dataclasses import replace

    from assistant.datasets_io import is_dataset_source
    from assistant.evaluation.metrics import METRIC_HELP, METRIC_LABEL
    from assistant.evaluation.runs import EvalConfig
    from assistant.evaluation.sets import load_eval_set

    stored = app.eval_sets(args.kb)
    if Path(args.set).exists() or (args.set not in stored.names() and is_dataset_source(args.set)):
        evalset = load_eval_set(
            args.set,
            limits=app.settings.limits,
            split=args.split,
            subset=args.subset,
            allow_downloads=app.settings.allow_downloads,
        )
        stored.save(evalset)  # kept with the knowledge base, to run again later
    else:
        evalset = stored.get(args.set)
    if args.limit:
        evalset = replace(evalset, items=evalset.items[: args.limit])
    config = EvalConfig(
        kb=args.kb,
        adapter=args.adapter or "",
        top_k=args.top_k,
        retrieval=not args.no_retrieval,
        max_new_tokens=args.max_new_tokens,
        decompose=not args.no_decompose,
        escalate=args.escalate,
        style=args.style,
    )
    run = drive(app.evaluate(evalset, config), None if args.quiet else ProgressPrinter())
    if args.json:
        print(
            json.dumps(
                run.to_json() if args.details else {**run.to_json(), "results": None},
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    m = run.metrics
    print(f"Run {run.id}: {evalset.name} ({m['answerable']} answerable, {m['unanswerable']} unanswerable) "
          f"with {run.model}, {config.label()}")  # fmt: skip
    for key, label in METRIC_LABEL.items():
        print(f"  {label:22} {format_metric(key, m[key]):>7}   {METRIC_HELP[key]}")
    return 0


def _cmd_jobs(app, args) -> int:
    if args.cancel:
        job = app.jobs.cancel(args.cancel)
        print(f"job {job.id}: {'cancelling' if job.active else 'already ' + job.state}")
        return 0
    jobs = app.jobs.list()
    if args.json:
        print(
            json.dumps([{**j.__dict__, "folder": str(j.folder)} for j in jobs], ensure_ascii=False, indent=2)
        )
    for j in [] if args.json else jobs:
        p = j.progress
        where = f" · {p['stage']} {p['done']:g}/{p['total']:g} {p['unit']}" if p and j.active else ""
        print(
            f"{j.id}  {j.kind:5} {j.state:11} {j.request.get('name', '')}{where}{'  ' + j.error if j.error else ''}"
        )
    return 0


def _cmd_export_data(app, args) -> int:
    from assistant.datasets_io import push_rows, write_rows

    if not args.out and not args.push_to_hub:
        raise ConfigError("Say where to export: --out FILE.parquet, --out FOLDER, or --push-to-hub REPO.")
    if args.what == "drafts":
        rows, what = app.drafts.accepted_rows(args.kb), "accepted drafts"
    elif args.what == "eval-set":
        if not args.kb or not args.name:
            raise ConfigError("Name the evaluation set's knowledge base and name: --kb KB --name SET.")
        rows, what = app.eval_sets(args.kb).get(args.name).rows(), f"evaluation set {args.name!r}"
    else:
        if not args.name:
            raise ConfigError("Name the evaluation run: --name RUN_ID (see the Evaluate tab's history).")
        rows, what = app.evals.get(args.name).rows(), f"evaluation run {args.name!r}"
    if args.out:
        out = write_rows(rows, args.out)
        print(f"Wrote {len(rows)} rows of {what} to {out}.")
    if args.push_to_hub:
        url = push_rows(rows, args.push_to_hub, app.settings.allow_downloads)
        print(f"Pushed {len(rows)} rows of {what} to {url}.")
    return 0


def _cmd_models(app, args) -> int:
    if args.pull:
        import threading

        cancel = threading.Event()
        try:
            folder = drive(app.pull_model(args.pull, cancel), None if args.quiet else ProgressPrinter())
        except KeyboardInterrupt:
            cancel.set()
            raise
        print(f"Downloaded {args.pull} into the local cache ({folder}).")
    for name, setter, what in (
        (args.use_chat, app.set_chat_model, "chat model"),
        (args.use_embed, app.set_embed_model, "embedding model for new knowledge bases"),
    ):
        if name:
            entry = setter(name)
            print(f"The {what} is now {entry.name}.")
    if args.pull or args.use_chat or args.use_embed:
        return 0
    from assistant.generation.catalog import free_memory_mb

    chosen = {app.settings.model.name, app.settings.embed_model}
    entries = app.models()
    if args.json:
        print(
            json.dumps(
                [{**e.to_json(), "in_use": e.name in chosen} for e in entries], ensure_ascii=False, indent=2
            )
        )
        return 0
    device = app.settings.model.resolved_device()
    print(f"Free memory: {free_memory_mb(device, app.settings.free_memory_mb) / 1024:.1f} GB ({device})")
    for e in entries:
        need = " · ".join(f"{p} {mb / 1024:.1f} GB" for p, mb in e.memory_mb.items())
        mark = "*" if e.name in chosen else " "
        print(
            f"{mark} {e.kind:9} {e.source:9} {e.parameters / 1e6:7.0f}M  {e.size_mb:8.0f} MB  {e.name}  [{need}]"
        )
    return 0
