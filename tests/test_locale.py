"""The page in Japanese: every text the UI marks for translation has its Japanese, and no
translation is left over from a text the page no longer shows. The browser's side (a Japanese
browser reading チャット, 送信) is in tests/e2e/test_browser.py."""

from __future__ import annotations

import ast
import json

import pytest

from tests.conftest import ROOT

UI = ROOT / "assistant" / "ui"


def _keys_in(value) -> set[str]:
    """The translation keys in a page's configuration, however Gradio stored them."""
    from gradio.i18n import I18nData

    if isinstance(value, I18nData):
        return {value.key}
    if isinstance(value, str) and value.startswith("__i18n__"):
        return {json.loads(value[len("__i18n__") :])["key"]}
    if isinstance(value, dict):
        return set().union(*(_keys_in(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(_keys_in(v) for v in value))
    return set()


def _written_keys(function: str = "t") -> set[str]:
    """Texts passed to ``t("…")`` (or ``say``) in the UI's code, also those shown only in some
    modes (the Account tab, a Space's storage notice) or returned by an event (New
    conversation's empty sources panel)."""
    found = set()
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function and node.args:
                if isinstance(node.args[0], ast.Constant):
                    found.add(node.args[0].value)
    return found


def _japanese(section: str) -> dict[str, str]:
    from assistant.ui.locale import JAPANESE_FILE

    return json.loads(JAPANESE_FILE.read_text(encoding="utf-8"))[section]


@pytest.fixture(scope="module")
def page_keys(tmp_path_factory, model_cache):
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui import build_app

    data = tmp_path_factory.mktemp("locale-data")
    demo = build_app(Tsumugi(Settings(data_dir=data, model_cache=model_cache)))
    return _keys_in(demo.get_config_file())


def test_every_text_marked_for_translation_has_its_japanese_and_none_is_stale(page_keys):
    japanese = _japanese("page")
    # The page's own choices (answer styles, tones, passage sizes) are found in the page built.
    assert {"Chat", "Send", "Quote the documents (most faithful)", "Friendly"} <= page_keys
    marked = page_keys | _written_keys()
    assert sorted(marked - set(japanese)) == [], "texts shown in English to a Japanese reader"
    assert sorted(set(japanese) - marked) == [], "translations of texts the page no longer shows"
    untranslated = [k for k, v in japanese.items() if not v.strip() or v == k]
    assert untranslated == []
    # A translation is an ICU message in the browser, where braces are placeholders for values
    # Gradio never passes.
    assert [v for v in japanese.values() if "{" in v or "}" in v] == []


def test_a_text_with_braces_is_refused_as_a_translation_key():
    from assistant.ui.locale import t

    assert t("Send").key == "Send"
    with pytest.raises(ValueError, match="braces"):
        t("Put {reply} where the drafted answer goes")


def test_every_message_the_server_builds_has_its_japanese_with_the_same_values():
    from string import Formatter

    from assistant.ui.common import _BADGE_COLOURS

    japanese = _japanese("messages")
    # The confidence words are passed by name, not written at the call.
    used = _written_keys("say") | set(_BADGE_COLOURS)
    assert sorted(used - set(japanese)) == [] and sorted(set(japanese) - used) == []

    def fields(text: str) -> set:
        return {name for _, name, _, _ in Formatter().parse(text) if name is not None}

    # A value the Japanese forgets (or names differently) would be lost or fail to format.
    assert [k for k, v in japanese.items() if fields(k) != fields(v)] == []


def test_the_sources_panel_speaks_the_questions_language():
    """The panel's notes (how sure, who wrote it, how long) follow the question, as the answer
    and its refusal do: a Japanese agent read 「確信度」 nowhere, only "confidence high"."""
    from assistant.answering.answer import Answer
    from assistant.ui.common import answer_footer, sources_markdown
    from knowledge.retrieve import Hit

    def footer(question: str) -> str:
        fields = dict(done=True, model="m", confidence=0.8, style="quote", method="quoted")
        return answer_footer(Answer(question, timings={"total_s": 1.25}, **fields))

    japanese, english = footer("返品はいつまでできますか？"), footer("How long can I return it?")
    assert "確信度 高 0.80" in japanese and "文書からの引用で" in japanese and "合計 1.2 秒" in japanese
    assert "confidence high 0.80" in english and "no model wrote it" in english and "total 1.2 s" in english
    hits = [Hit(chunk_id=1, doc="henpin.md", page=None, heading="", text="30日以内", score=1.0)] * 2
    assert "引用元" in sources_markdown(hits, [1], japanese=True)
    assert "ほかに検索された箇所 1 件" in sources_markdown(hits, [1], japanese=True)
    assert "Cited sources" in sources_markdown(hits, [1]) and "引用元" not in sources_markdown(hits, [1])


def _toasts_written() -> tuple[list[str], list[tuple[str, set]]]:
    """What the UI's code sends as a toast or a refusal: the sentences raised as ``gr.Error``
    or refused by ``refuse_untyped`` (with ``7`` for each value an f-string fills in), and
    the templates ``inform`` and ``warn`` fill, with the names of the values passed."""
    raised, filled = [], []
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            first = node.args[0] if name in ("Error", "inform", "warn") else node.args[-1]
            if name in ("inform", "warn"):
                assert not isinstance(first, ast.JoinedStr), (
                    f"{path.name}: a toast's template, not an f-string"
                )
                if isinstance(first, ast.Constant):
                    filled.append((first.value, {k.arg for k in node.keywords}))
            elif name in ("Error", "refuse_untyped"):
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    raised.append(first.value)
                elif isinstance(first, ast.JoinedStr):
                    raised.append(
                        "".join(v.value if isinstance(v, ast.Constant) else "7" for v in first.values)
                    )
    return raised, filled


def test_every_toast_and_refusal_the_page_sends_reaches_a_japanese_reader_in_japanese():
    """A Japanese page told 「ナレッジ」 in its tabs and "Choose or create a knowledge base
    first." in its toasts: Gradio shows a toast as the server sends it."""
    from string import Formatter

    from assistant.drafting.compose import NO_MESSAGE
    from assistant.ui.chat_tab import TYPE_FIRST
    from assistant.ui.common import KB_FIRST
    from assistant.ui.locale import translated

    raised, filled = _toasts_written()
    raised += [KB_FIRST, TYPE_FIRST, NO_MESSAGE]
    assert "Choose or create a knowledge base first." in raised and len(raised) > 20
    assert ("Deleted the adapter {name}.", {"name"}) in filled and len(filled) > 12
    assert [s for s in raised if translated(s, japanese=True) == s] == [], (
        "sent in English to a Japanese reader"
    )
    assert all(translated(s, japanese=False) == s for s in raised)
    japanese = _japanese("told")
    assert [t for t, _ in filled if t not in japanese] == [], "toasts without their Japanese"
    fields = {t: {f for _, f, _, _ in Formatter().parse(t) if f} for t, _ in filled}
    assert [t for t, given in filled if fields[t] != given] == [], (
        "a value the template does not take, or lacks"
    )


def test_the_core_s_sentences_reach_a_japanese_reader_with_their_values():
    """Why a file was not added is written in the core, in English; the page fills the
    Japanese with the same file name. Expectations are written by hand."""
    from assistant.ui.locale import translated
    from knowledge.errors import ParseError, TsumugiError
    from knowledge.names import check_name
    from knowledge.parse import parse_bytes, parse_file
    from tests.conftest import FIXTURES

    with pytest.raises(ParseError) as empty:
        parse_bytes(b"", "空.txt")
    assert translated(str(empty.value), True) == "空.txt は空です。索引にするものがありません。"
    with pytest.raises(ParseError) as locked:
        parse_file(FIXTURES / "unstructured-password.pdf")
    assert translated(str(locked.value), True) == (
        "unstructured-password.pdf はパスワードで保護されています。保護のないコピーを保存して、"
        "そちらをアップロードしてください。"
    )
    with pytest.raises(ParseError) as strange:
        parse_bytes(b"\x00\x01\x02binary", "tool.exe")
    assert translated(str(strange.value), True).startswith("tool.exe は対応していない形式です。")
    with pytest.raises(TsumugiError) as named:
        check_name("../secrets", "adapter")
    assert translated(str(named.value), True).startswith("「../secrets」はアダプターの名前に使えません。")
    with pytest.raises(TsumugiError) as quoted:  # repr() quotes a name with an apostrophe in "…"
        check_name("Bob's manuals/", "knowledge-base")
    assert translated(str(quoted.value), True).startswith(
        "「Bob's manuals/」はナレッジベースの名前に使えません。"
    )
    # A name holding the template's own words is kept whole: numbers match only numbers, and
    # a word only the catalogue's words.
    big = "Menu is new.pdf is 31 MB, over the 30 MB limit; split it or ask an admin to raise TSUMUGI_MAX_FILE_MB."
    assert translated(big, True).startswith("Menu is new.pdf は 31 MB で、上限の 30 MB を超えています。")
    assert translated("Q3: summary.pdf: added", True) == "Q3: summary.pdf：追加"
    # A sentence without a template stays as it was written, not half translated.
    assert translated("tool.exe is empty; there is nothing to index. Really.", True).endswith("Really.")
    assert translated("The server said no.", True) == "The server said no."
    assert translated("The server said: no", True) == "The server said: no", "'no' is not a word it knows"
    assert translated("guide.pdf: failed", True) == "guide.pdf：失敗"


def test_every_told_template_is_still_written_somewhere_and_keeps_its_values():
    """A template whose English changed where it is written would never match again."""
    import re
    from string import Formatter

    japanese = _japanese("told")
    sources = "\n".join(
        p.read_text(encoding="utf-8")
        for folder in ("assistant", "knowledge")
        for p in (ROOT / folder).rglob("*.py")
    )
    # Source code splits a long sentence over lines ("…" "…"): compare without those seams.
    joined = re.sub(r'"\s*\n\s*f?"', "", sources)

    def fields(text: str) -> set:
        return {name for _, name, _, _ in Formatter().parse(text) if name is not None}

    def pieces(template: str) -> list[str]:
        """Its runs of fixed words: a value may come quoted (``{name!r}``) where it is written."""
        texts = [text for text, _, _, _ in Formatter().parse(template)]
        return [p.strip() for text in texts for p in re.split("['\"]", text) if len(p.strip()) >= 12]

    assert [k for k, v in japanese.items() if fields(k) != fields(v)] == []
    assert [k for k in japanese if any(p not in joined for p in pieces(k))] == [], "templates nobody fills"
    assert sum(bool(pieces(k)) for k in japanese) > 60


def test_the_reader_is_japanese_when_the_browser_asks_for_japanese_first():
    from types import SimpleNamespace

    from assistant.ui.locale import reader_japanese

    def asks(header: str) -> bool:
        return reader_japanese(SimpleNamespace(headers={"accept-language": header}))

    assert asks("ja,en-US;q=0.9,en;q=0.8") and asks("ja-JP") and asks("JA-jp;q=1")
    assert not asks("en-US,ja;q=0.9") and not asks("") and not asks("jav")
    assert not reader_japanese(), "outside an event (the CLI, a test): English"


def test_the_draft_panel_speaks_the_japanese_readers_language(tmp_path, model_cache):
    """An agent on a Japanese page read "Drafts: 0 (0 accepted, …) · answers escalated to the
    larger model …" under every draft."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from assistant.ui.draft_tab import recent_rows, stats_markdown

    app = Tsumugi(Settings(data_dir=tmp_path / "data", model_cache=model_cache))
    english = stats_markdown(app, None)
    assert english.startswith("Drafts: 0 (0 accepted, 0 rejected, 0 pending) · answers escalated")
    token = LocalContext.request.set(SimpleNamespace(headers={"accept-language": "ja"}))
    try:
        japanese, recent = stats_markdown(app, "返品"), recent_rows(app, None)
    finally:
        LocalContext.request.reset(token)
    assert japanese.startswith(
        "**返品** の下書き：0 件（承認 0・却下 0・未決定 0） · 大きめのモデルへのエスカレーション"
    )
    assert (
        "大きめのモデルは設定されていません。確信度が 0.50 未満の回答には「要確認」が付きます。" in japanese
    )
    assert recent["headers"][:3] == ["日時", "状態", "確信度"]


def test_every_metric_of_the_evaluate_table_has_its_japanese_name_and_meaning():
    """The comparison table a support lead reads to decide on an adapter: a metric added
    without its Japanese would show its English line on a Japanese page."""
    from assistant.evaluation.metrics import METRIC_HELP, METRIC_LABEL
    from assistant.ui.locale import translated

    shown = [*METRIC_LABEL.values(), *METRIC_HELP.values()]
    assert [s for s in shown if translated(s, japanese=True) == s] == []
    assert translated(METRIC_LABEL["f1"], True) == "回答のトークン F1"
