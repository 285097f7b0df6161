"""The Tune tab's adapters panel: each adapter's card and before/after comparison, rename,
delete, download and merge (:mod:`assistant.ui.tune_tab` lays it out)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr

from assistant.ui.common import adapter_change, refuse_untyped
from assistant.ui.locale import inform, table, translated
from knowledge.errors import TsumugiError
from knowledge.progress import format_seconds

COMPARISON_HEADERS = ["Question", "Expected", "Base model", "Tuned model"]


def adapter_names(app) -> list[str]:
    return app.adapters.names()


def adapter_details(app, name: str | None) -> tuple[str, dict]:
    if not name or not app.adapters.exists(name):
        prompt = translated("_Choose an adapter to see its card and the before/after comparison._")
        return prompt, table(COMPARISON_HEADERS, [])
    info = app.adapters.get(name)
    card, m = info.card, info.card.get("metrics", {})
    s, d = card.get("settings", {}), card.get("data", {})
    lines = [
        f"### {html.escape(name)}",
        f"Base model `{card.get('base_model')}` · {s.get('quant')} · preset {s.get('preset')} · "
        f"rank {s.get('rank')} · {s.get('epochs')} epochs · created {card.get('created')}",
        f"Trained on {d.get('train')} examples from {html.escape(str(d.get('source')))}, "
        f"measured on {d.get('validation')} held-out ones (data `{str(d.get('sha256', ''))[:12]}`).",
        f"**Validation loss {m.get('val_loss_before', 0):.3f} → {m.get('val_loss_after', 0):.3f}**, "
        f"perplexity {m.get('perplexity_before', 0):.1f} → {m.get('perplexity_after', 0):.1f} "
        "(lower is better: how surprised the model is by the expected answers). "
        f"{m.get('tokens_per_s', 0):.0f} tokens/s, {format_seconds(card.get('duration_s', 0))} in all.",
    ]
    rows = []
    comparison = info.path / "comparison.json"
    if comparison.exists():
        for row in json.loads(comparison.read_text(encoding="utf-8")):
            rows.append([row["question"], row["expected"], row["base"], row["tuned"]])
    return "\n\n".join(lines), table(COMPARISON_HEADERS, rows)


def adapter_card(app, adapter):
    return adapter_details(app, adapter)


def refresh_adapters(app, adapter):
    names = adapter_names(app)
    return gr.update(choices=names, value=adapter if adapter in names else None)


def rename_ready(app, adapter, new):
    """At the click, before the rename's event (whose outputs a refusal would mark "Error"):
    an adapter chosen, and a new name that is valid and free."""
    if not adapter:
        raise gr.Error("Choose an adapter to rename first.")
    if not (new or "").strip():
        raise gr.Error("Type the adapter's new name first.")
    try:
        app.adapters.check_new_name(new)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc


def rename_adapter(app, adapter, new):
    """Rename; the other tabs' selectors follow through the returned change."""
    try:
        new = app.rename_adapter(adapter or "", new or "")
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Renamed {old} to {new}.", old=adapter, new=new)
    return gr.update(choices=adapter_names(app), value=new), "", adapter_change(adapter, new)


def delete_typed(app, adapter, typed=""):
    """At the click, before the delete's event (whose outputs a refusal would mark "Error"):
    an adapter may be hours of tuning, so its name must be typed."""
    refuse_untyped(adapter, typed, "Type the exact name of the selected adapter to delete it.")


def delete_adapter(app, adapter, typed=""):
    """Delete; the other tabs' selectors that chose it go back to the base model."""
    delete_typed(app, adapter, typed)
    try:
        app.delete_adapter(adapter or "")
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Deleted the adapter {name}.", name=adapter)
    return gr.update(choices=adapter_names(app), value=None), "", adapter_change(adapter, None)


def download_adapter(app, adapter):
    try:
        path = app.export_adapter(adapter or "", Path(app.settings.data_dir) / "exports")
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return gr.update(value=str(path), visible=True), ""


def save_merged_model(app, adapter, progress=gr.Progress()):
    if not adapter:
        raise gr.Error("Choose an adapter first.")
    progress(0.1, desc="Merging the adapter into the base model…")
    out = Path(app.settings.data_dir).resolve() / "exports" / f"{adapter}-merged"
    try:
        app.export_adapter(adapter, out, merge=True)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return gr.update(visible=False), (
        f"Saved a standalone model folder at `{out}`: it loads with "
        f'`AutoModelForCausalLM.from_pretrained("{out}")`, or in Tsumugi with TSUMUGI_MODEL.'
    )
