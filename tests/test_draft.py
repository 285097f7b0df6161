"""Reply drafting in English and Japanese, decisions on drafts, and drafts as tuning data."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque

import pytest

from assistant.answering.prompt import language_of
from assistant.drafting.compose import DraftConfig, compose
from assistant.tuning.data import from_drafts
from knowledge.errors import ConfigError, TsumugiError
from knowledge.text import strip_citations
from tests.conftest import ROOT

EN_MESSAGE = (
    "Hello,\n\nI am planning a camping trip with my family. How many people can sleep in the "
    "TrailMaster X4 Tent? Thanks,\nSam"
)
JA_MESSAGE = "お世話になっております。先日購入した商品を返品したいのですが、開封した商品でも返品できますか？"
JA_EMAIL = (
    "お世話になっております。山田です。\n先週購入した炊飯器が届いたのですが、使わないので返品したいです。"
    "返金はいつ頃になりますか？\nよろしくお願いいたします。\n山田太郎"
)


def _draft(service, kb, message, **config):
    return deque(service.draft(kb, message, DraftConfig(**config)), maxlen=1)[0]


def _valid_citations(answer) -> list[int]:
    marks = [int(m) for m in re.findall(r"\[(\d{1,2})\]", answer.text)]
    assert all(1 <= m <= len(answer.passages) for m in marks), (marks, len(answer.passages))
    return marks


def test_english_draft_is_grounded_and_stored(service):
    answer = _draft(service, "contoso", EN_MESSAGE, signature="Aiko\nCustomer Support")
    assert language_of(answer.text) == "en"
    assert answer.text.startswith("Dear customer,")
    assert answer.text.rstrip().endswith("Aiko\nCustomer Support")
    assert _valid_citations(answer), answer.text
    assert any(answer.passages[n - 1].doc == "product_info_1.md" for n in answer.cited)
    assert answer.confidence is not None and answer.draft_id
    stored = service.drafts.get(answer.draft_id)
    assert stored.status == "pending" and stored.message == EN_MESSAGE.strip() and stored.kb == "contoso"


def test_japanese_draft_is_in_japanese_with_keigo_and_citations(service):
    answer = _draft(service, "ja-support", JA_MESSAGE)
    assert language_of(answer.text) == "ja"
    assert "誠にありがとうございます" in answer.text and "申し上げます" in answer.text
    assert _valid_citations(answer), answer.text
    assert any(answer.passages[n - 1].doc == "henpin.md" for n in answer.cited)
    # Whatever the model wrote, the body is Japanese: its own words, or the documents' sentences.
    body = answer.text.split("ございます。", 1)[1]
    assert language_of(body) == "ja"


def test_tones_and_templates(service):
    concise = _draft(service, "contoso", EN_MESSAGE, tone="concise")
    assert concise.text.startswith("Hello,") and concise.text.rstrip().endswith("Regards,")
    templated = _draft(
        service, "contoso", EN_MESSAGE, template="Hi Sam,\n\n{reply}\n\n-- {signature}", signature="Team"
    )
    assert templated.text.startswith("Hi Sam,") and templated.text.endswith("-- Team")
    with pytest.raises(ConfigError, match=r"\{reply\}"):
        DraftConfig(template="no placeholder")
    with pytest.raises(ConfigError, match="tone"):
        DraftConfig(tone="rude")
    with pytest.raises(ConfigError, match="message"):
        _draft(service, "contoso", "   ")


def test_the_rest_of_a_message_does_not_answer_a_question_the_documents_do_not_cover(service):
    """Store pick-up is in no document: searched with the customer's pleasantry around it
    (いつも利用させていただいております), it was answered from the cash-on-delivery passage."""
    message = (
        "いつも利用させていただいております。\n店舗で商品を受け取ることはできますか？\n"
        "お忙しいところ恐れ入りますが、ご回答をお願いいたします。\n佐々木"
    )
    answer = _draft(service, "ja-support", message, style="quote")
    assert not answer.covered and answer.needs_review, answer.text
    assert answer.text.startswith("佐々木様\n\n") and "改めてご連絡いたします" in answer.text


def test_message_the_documents_do_not_cover_gets_a_holding_reply(service):
    answer = _draft(service, "contoso", "Can I pay my electricity bill through your website?")
    assert not answer.covered and answer.needs_review
    assert "get back to you" in answer.text and answer.text.startswith("Dear customer,")


def test_accepted_drafts_become_tuning_data(service):
    first = _draft(service, "contoso", EN_MESSAGE)
    edited = strip_citations(first.text) + "\n\nP.S. Enjoy the trip!"
    accepted = service.drafts.accept(first.draft_id, edited)
    assert accepted.status == "accepted" and accepted.final == edited
    second = _draft(service, "contoso", "Is the TrailMaster X4 Tent waterproof?")
    with pytest.raises(TsumugiError, match="why"):
        service.drafts.reject(second.draft_id, "  ")
    rejected = service.drafts.reject(second.draft_id, "Wrong product")
    assert rejected.status == "rejected" and rejected.reason == "Wrong product"
    with pytest.raises(TsumugiError):
        service.drafts.accept("no-such-draft", "text")

    data = from_drafts(service.drafts, "contoso")
    pairs = [(e.question, e.answer) for e in data.examples]
    assert (EN_MESSAGE.strip(), edited) in pairs
    assert all(q != "Is the TrailMaster X4 Tent waterproof?" for q, _ in pairs), (
        "rejected drafts are not data"
    )
    stats = service.drafts.stats("contoso")
    assert stats["accepted"] >= 1 and stats["rejected"] >= 1 and stats["answers"] >= stats["drafts"]

    # The tuning request sees them; fewer than six pairs is refused in one sentence, no job made.
    from assistant.tuning.train import TuneConfig

    jobs_before = len(service.jobs.list())
    with pytest.raises(TsumugiError, match="at least 6"):
        service.start_tune(
            "from-drafts", {"kind": "drafts", "kb": "contoso"}, TuneConfig.from_preset("quick")
        )
    assert len(service.jobs.list()) == jobs_before


def test_accepted_drafts_export_as_parquet_and_a_dataset_folder(service, tmp_path):
    import os

    import datasets

    first = _draft(service, "contoso", "Is the TrailMaster X4 Tent easy to set up?")
    service.drafts.accept(first.draft_id, strip_citations(first.text) + " [1]", by="aiko")
    pending = _draft(service, "contoso", "Does the tent come with stakes?")
    accepted = service.drafts.list(kb="contoso", status="accepted")[::-1]  # oldest first
    env = {**os.environ, "TSUMUGI_DATA": str(service.settings.data_dir), "TSUMUGI_MODEL_CACHE": str(service.settings.model_cache)}  # fmt: skip
    outputs = {"parquet": tmp_path / "drafts.parquet", "folder": tmp_path / "drafts-dataset"}
    for out in outputs.values():
        result = subprocess.run(
            [sys.executable, "-m", "assistant", "export-data", "drafts", "--kb", "contoso", "--out", str(out)],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"Wrote {len(accepted)} rows of accepted drafts" in result.stdout
    read_back = {
        "parquet": datasets.Dataset.from_parquet(str(outputs["parquet"]), cache_dir=str(tmp_path / "cache")),
        "folder": datasets.load_from_disk(str(outputs["folder"])),
    }
    for exported in read_back.values():
        assert exported["id"] == [d.id for d in accepted] and pending.draft_id not in exported["id"]
        assert exported["question"] == [d.message for d in accepted]
        assert exported["answer"] == [strip_citations(d.final) for d in accepted]
        assert exported["decided_by"][-1] == "aiko" and "[1]" not in exported["answer"][-1]
        assert exported["confidence"] == [d.confidence for d in accepted]


def test_draft_cli_reads_stdin(service):
    env_data = str(service.settings.data_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistant",
            "draft",
            "--kb",
            "contoso",
            "--tone",
            "friendly",
            "--no-citations",
        ],
        input=EN_MESSAGE,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            **__import__("os").environ,
            "TSUMUGI_DATA": env_data,
            "TSUMUGI_MODEL_CACHE": str(service.settings.model_cache),
        },
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hi there,") and "[1]" not in result.stdout
    assert "confidence" in result.stderr and "stored as pending" in result.stderr


def test_compose_defaults_per_language():
    config = DraftConfig(tone="formal", signature="Support")
    assert compose("Body.", "en", config) == (
        "Dear customer,\n\nThank you for contacting us.\n\nBody.\n\nPlease do not hesitate to contact us if "
        "there is anything else we can help with.\n\nKind regards,\n\nSupport"
    )
    ja = compose("本文です。", "ja", DraftConfig())
    assert ja.startswith("お問い合わせいただき、誠にありがとうございます。") and ja.endswith(
        "何卒よろしくお願い申し上げます。"
    )


def test_the_models_own_greeting_and_sign_off_are_removed():
    from assistant.drafting.compose import clean_body

    body = (
        "Hi Sam,\n\nI hope you're doing well! The answer to your question is:\n\n"
        "The tent sleeps four people [1]. It is waterproof [2].\n\nBest regards,\nSupport Team"
    )
    assert clean_body(body) == "The tent sleeps four people [1]. It is waterproof [2]."
    assert clean_body("Yes, it sleeps four [1].") == "Yes, it sleeps four [1]."


def test_a_signed_message_is_answered_by_name():
    """A customer who signs "Maria Lopez" is not greeted "Dear customer"; an unsigned message,
    a team or a sentence after the sign-off, is."""
    from assistant.drafting.compose import customer_name

    email = (
        "Hello,\n\nThe pole of my TrailMaster X4 Tent snapped after 14 months. Is it covered?\n\n"
        "Thanks,\nMaria Lopez\nSent from my phone"
    )
    assert customer_name(email) == "Maria Lopez"
    assert customer_name("Is it waterproof?\n\nBest, Sam.") == "Sam"
    assert customer_name("Thanks,\nMr. Tanaka") == "Mr. Tanaka"
    assert compose("Body.", "en", DraftConfig(tone="friendly"), "Mr. Tanaka").startswith("Hi Mr. Tanaka,")
    for unsigned in (
        "Is the tent waterproof?",
        "Best regards,\nThe Smith family",
        "Thanks for the help,\nCould you also tell me the weight?",
        "Thanks,\nOrder ABC-123",
        "Regards,\nAcme Support Team",
    ):
        assert customer_name(unsigned) == "", unsigned
    formal = compose("Body.", "en", DraftConfig(), customer_name(email))
    assert formal.startswith("Dear Maria Lopez,\n\nThank you for contacting us.")
    assert compose("Body.", "en", DraftConfig(tone="friendly"), "Maria Lopez").startswith("Hi Maria,")
    assert compose("本文です。", "ja", DraftConfig()).startswith("お問い合わせいただき")


def test_a_japanese_customer_signing_with_their_name_is_addressed_with_sama():
    from assistant.drafting.compose import customer_name

    assert customer_name(JA_EMAIL) == "山田太郎"
    assert customer_name("返品できますか？\nよろしくお願いします。\n佐々木") == "佐々木"
    assert customer_name("返品できますか？\n" + "山田" * 30_000) == ""  # a pasted page, not a name
    for unsigned in (
        "返品できますか？",
        "返品できますか？\n以上",
        "返品できますか？\n東京",
        "返品できますか？\n太郎",
    ):
        assert customer_name(unsigned) == "", unsigned
    assert compose("本文です。", "ja", DraftConfig(), "山田太郎").startswith(
        "山田太郎様\n\nお問い合わせいただき、誠にありがとうございます。"
    )


def test_a_question_inside_a_customers_email_is_answered(service):
    """Greetings, a self-introduction, what happened and a signature around the question: the
    message searched whole covered too little of any passage, and the draft said it would check
    and reply later (python -m bench.messages)."""
    answer = _draft(service, "ja-support", JA_EMAIL, style="quote")
    assert answer.covered and not answer.needs_review, answer.text
    assert answer.passages[0].doc == "henpin.md"
    assert "5営業日以内に返金いたします" in answer.text
    assert answer.text.startswith("山田太郎様\n\n")
    assert service.drafts.get(answer.draft_id).message == JA_EMAIL.strip()
    # A request is no question: what is searched is the message less the sentences that share no
    # term with the documents (the greeting, the self-introduction, the sign-off, the name).
    request = "お世話になっております。山田です。\n返金までにかかる日数を教えてください。\nよろしくお願いいたします。\n山田太郎"
    answer = _draft(service, "ja-support", request, style="quote")
    assert answer.covered and answer.passages[0].doc == "henpin.md", answer.text
    assert "5営業日以内に返金いたします" in answer.text
    # A question that names nothing ("どうすればよいですか？") is answered from what the message tells.
    answer = _draft(
        service, "ja-support", "炊飯器にエラー表示「E01」が出ました。どうすればよいですか？", style="quote"
    )
    assert answer.covered and "内釜が正しくセットされていません" in answer.text, answer.text
