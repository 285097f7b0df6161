"""Admin tab: server status, users and API keys."""

from __future__ import annotations

import html
import time

import gradio as gr

from assistant.serving import status
from assistant.serving.keys import ApiKeyStore
from assistant.serving.users import UserStore
from assistant.ui.common import handler
from assistant.ui.locale import inform, t
from knowledge.errors import TsumugiError


def status_markdown(app) -> str:
    s = status.snapshot(app)
    models = ", ".join(f"`{m}`" for m in s["models_loaded"]) or "none yet (loaded on the first question)"
    jobs = s["jobs"]
    active = (
        "; ".join(f"{j['kind']} {html.escape(j['name'])} ({j['state']})" for j in s["active_jobs"]) or "none"
    )
    d = s["drafts"]
    share = "–" if d["escalated_share"] is None else f"{d['escalated_share']:.0%}"
    lines = [
        f"**Models in memory**: {models}",
        f"**Memory**: this process {s['process_rss_mb']} MB; {s['memory_available_mb']:,} of "
        f"{s['memory_total_mb']:,} MB available · **CPU cores**: {s['cpu_count']}",
        f"**Disk**: {s['disk_free_gb']} GB free under `{html.escape(s['data_dir'])}`"
        + ("" if s["storage_persistent"] else " · ⚠️ **temporary storage**: lost when the Space restarts"),
        f"**Jobs**: {jobs['running']} running, {jobs['queued']} waiting ({active}); "
        f"{jobs['failed']} failed and {jobs['interrupted']} interrupted on record",
        f"**Content**: {s['knowledge_bases']} knowledge bases, {s['adapters']} adapters, {d['drafts']} drafts "
        f"({d['accepted']} accepted) · answers escalated: {d['escalated']} of {d['answers']} ({share})",
    ]
    recent = status.problems(s)
    if recent:
        lines.append("**Recent problems** (newest last):")
        for e in recent:
            what = e.get("message") or e.get("error") or e.get("action") or e.get("state") or ""
            lines.append(
                f"- `{e['ts']}` {e['kind']}: {html.escape(str(e.get('file') or e.get('user') or ''))} {html.escape(str(what))}"
            )
    lines.append("<sub>Structured logs: `logs/events.jsonl` under the data folder.</sub>")
    return "\n\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:])


def _users_rows(users: UserStore) -> list[list]:
    return [[u["name"], u["role"], u["created"]] for u in users.list()]


def _keys_rows(keys: ApiKeyStore) -> list[list]:
    def expiry(k: dict) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(k["expires"])) if k.get("expires") else "never"

    return [
        [k["name"], k["role"], ", ".join(k.get("kbs") or []) or "all", ", ".join(k.get("adapters") or []) or "all", expiry(k), k["created"]]
        for k in keys.list()
    ]  # fmt: skip


def add_user(users, name, password, role):
    try:
        users.add(name, password, role)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("User {name} added; restart the app if it ran without login.", name=name)
    return _users_rows(users), ""


def delete_user(users, name):
    try:
        users.delete((name or "").strip())
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return _users_rows(users)


def create_key(keys, name, role, kbs=None, adapters=None, days=None):
    try:
        key = keys.create(name, role, list(kbs or []), list(adapters or []), float(days) if days else None)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return _keys_rows(keys), key


def revoke_key(keys, name):
    try:
        keys.revoke((name or "").strip())
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return _keys_rows(keys), ""


def build(app) -> None:
    users = UserStore(app.settings.data_dir)
    keys = ApiKeyStore(app.settings.data_dir)
    with gr.Row():
        gr.Markdown(t("#### Server status"))
        refresh = gr.Button(t("Refresh"), size="sm", scale=0)
    panel = gr.Markdown(status_markdown(app))
    with gr.Row():
        with gr.Column():
            gr.Markdown(
                t(
                    "#### Users\nWith at least one user, everyone logs in (from the next start; on a "
                    "public Space, visitors stay anonymous agents and admins log in at /admin). Admins "
                    "manage documents, tuning and users; agents chat and draft replies."
                )
            )
            user_table = gr.Dataframe(
                headers=["user", "role", "created"], value=_users_rows(users), interactive=False
            )
            with gr.Row():
                new_user = gr.Textbox(label=t("Name"))
                new_password = gr.Textbox(label=t("Password (8+ characters)"), type="password")
                new_role = gr.Radio(["agent", "admin"], value="agent", label=t("Role"))
            with gr.Row():
                add_btn = gr.Button(t("Add user"), variant="primary")
                remove_btn = gr.Button(t("Delete user"), variant="stop")
        with gr.Column():
            gr.Markdown(t("#### API keys\nFor the OpenAI-compatible API at `/v1`. A key is shown once."))
            key_table = gr.Dataframe(
                headers=["name", "role", "knowledge bases", "adapters", "expires", "created"],
                value=_keys_rows(keys),
                interactive=False,
            )
            with gr.Row():
                key_name = gr.Textbox(label=t("Key name"))
                key_role = gr.Radio(["agent", "admin"], value="agent", label=t("Role"))
            with gr.Row():
                key_kbs = gr.Dropdown(
                    app.library.names(), multiselect=True, label=t("Only these knowledge bases (empty: all)")
                )
                key_adapters = gr.Dropdown(
                    app.adapters.names(), multiselect=True, label=t("Only these adapters (empty: all)")
                )
                key_days = gr.Number(label=t("Expires after (days; empty: never)"), minimum=0, precision=0)
            with gr.Row():
                create_btn = gr.Button(t("Create key"), variant="primary")
                revoke_btn = gr.Button(t("Revoke key"), variant="stop")
            new_key = gr.Textbox(label=t("New key (copy it now)"), interactive=False, buttons=["copy"])

    refresh.click(lambda: status_markdown(app), None, [panel], api_name="admin_status")
    add_btn.click(
        handler(add_user, users),
        [new_user, new_password, new_role],
        [user_table, new_password],
        api_name="add_user",
    )
    remove_btn.click(handler(delete_user, users), [new_user], [user_table], api_name="delete_user")
    create_btn.click(
        handler(create_key, keys),
        [key_name, key_role, key_kbs, key_adapters, key_days],
        [key_table, new_key],
        api_name="create_key",
    )
    key_kbs.focus(lambda: gr.update(choices=app.library.names()), None, [key_kbs])
    key_adapters.focus(lambda: gr.update(choices=app.adapters.names()), None, [key_adapters])
    revoke_btn.click(handler(revoke_key, keys), [key_name], [key_table, new_key], api_name="revoke_key")
