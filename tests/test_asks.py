"""What a question asks for: a number, and whether a text gives it."""

from __future__ import annotations

import pytest

from assistant.answering.asks import gives_number, number_asked


@pytest.mark.parametrize(
    ("question", "unit"),
    [
        ("白米が炊けるまで何分かかりますか？", "分"),
        ("飛騨川流域一貫開発計画は何年度に立てられましたか。", "年度"),
        ("送料はいくらですか？", ""),
        ("フィルターはどのくらいで交換しますか？", ""),
        ("How many USB ports does it have?", ""),
        ("How long does a full charge take?", ""),
        ("What is the return policy?", None),
        ("何色がありますか？", None),
        ("返品は何をすればいいですか？", None),
        ("何日かかりますか？", "日"),
        # the same words asking nothing: "repeatedly", "a few days ago", "no matter how"
        ("何度も炊飯ボタンを押しましたが動きません。どうすればいいですか？", None),
        ("何日か前に注文しました。届いていますか？", None),
        ("いくら押しても電源が入りません。", None),
        ("いくつか質問があります。返品はできますか？", None),
        ("No matter how long I hold the button, it won't turn on. What should I do?", None),
        ("How do I check how much storage is left?", None),
        ("Hi, how long does shipping take?", ""),
        ("So how long does shipping take?", ""),
        ("何時間も待ちましたが、まだ炊けないのはなぜですか？", None),
        ("何年間も使っていますが、修理できますか？", None),
        ("何時から営業していますか？", "時"),
        ("いくらで修理してもらえますか？", ""),
        ("いくらか割引はありますか？", None),
        ("いくつ買っても送料は同じですか？", None),
        ("どの程度の汚れなら保証の対象ですか？", None),
    ],
)
def test_which_questions_ask_for_a_number(question, unit):
    assert number_asked(question) == unit


@pytest.mark.parametrize(
    ("question", "text", "gives"),
    [
        ("白米が炊けるまで何分かかりますか？", "炊き上がりまでの時間は約45分です。", True),
        (
            "白米が炊けるまで何分かかりますか？",
            "メニューから「白米」を選び、炊飯ボタンを押してください。",
            False,
        ),
        # a number of another kind is not the one asked for; time answers time in any unit
        ("白米が炊けるまで何分かかりますか？", "内釜は5.5合炊きです。", False),
        ("白米が炊けるまで何分かかりますか？", "お米は計量カップで1杯ずつ量ります。", False),
        ("充電には何時間かかりますか？", "約90分で満充電になります。", True),
        ("何年度に立てられましたか。", "1962年より開始された。", True),
        ("1863年に約したが、実際に開港したのは何年ですか?", "1868年1月1日に開港した。", True),
        # confirming the number the asker heard answers them
        ("45分で炊けると聞きましたが、本当は何分かかりますか？", "約45分で炊き上がります。", True),
        ("送料はいくらですか？", "5,000円以上のご注文は送料無料です。", True),
        ("送料はいくらですか？", "一般的な配送方法でお届けします。", False),
        ("How long does the battery last?", "It lasts up to 10 hours.", True),
        ("How often should I replace the filter?", "Replace it every six months.", True),
        ("How often should I replace the filter?", "Replace it once a year.", True),
        # a digit inside a name, a citation mark and a list number are not answers
        ("How long does the battery last?", "The TrailMaster X4 battery is rechargeable [2].", False),
        ("How long does it take to boil water?", "1. Place the stove on a flat surface.", False),
        ("What is the return policy?", "Anything at all.", True),
        # a number in a name is not the question's number (KAMADO-5's 5), nor an answer
        ("KAMADO-5の保温は何時間までできますか？", "保温は5時間までです。", True),
        ("KAMADO-5の保温は何時間までできますか？", "KAMADO-5は炊飯器です。", False),
        ("How long does the battery last?", "The KAMADO-5 has no battery.", False),
        # a word between the number and its counter; a time of the other length
        ("返品は何日以内にできますか？", "商品到着後5営業日以内にご連絡ください。", True),
        ("白米が炊けるまで何分かかりますか？", "2024年モデルの炊飯ボタンを押します。", False),
        # an amount in words, and a number before its unit
        ("How long is the warranty?", "The tent has a lifetime warranty.", True),
        ("How much does shipping cost?", "Shipping is free.", True),
        # a day without a number
        ("How long does shipping take?", "Orders placed before noon ship the same day.", True),
        ("何日に発送されますか？", "ご注文の翌営業日に発送します。", True),
        ("How heavy is the tent?", "It weighs 5kg.", True),
        # people and money answer in their own counters
        ("何人まで泊まれますか？", "最大4名様までご宿泊いただけます。", True),
        ("ベルには何人の兄弟がいたか?", "ベルは1847年にエディンバラに生まれる。", False),
        ("送料は何円ですか？", "全国一律¥550です。", True),
        ("開店は何時ですか？", "午前10:00に開店します。", True),
        ("返品は何時までできますか？", "商品到着後30日以内です。", True),
        ("送料は何円ですか？", "送料は 550 円です。", True),
        # an amount in words, and a list for how many
        ("いくつ入っていますか？", "三つ入っています。", True),
        ("保証は何年ですか？", "永久保証です。", True),
        ("何日で届きますか？", "本日発送します。", True),
        ("How often should I clean it?", "Clean the filter weekly.", True),
        ("How many colours does it come in?", "Red, blue and green.", True),
        ("How many colours does it come in?", "- Red\n- Blue", True),
        ("How long does shipping take?", "- Orders are packed by hand\n- Parcels are insured", False),
    ],
)
def test_which_texts_give_the_number_asked_for(question, text, gives):
    assert gives_number(text, question) is gives


def test_only_digits_count_when_spelled_numbers_are_left_out():
    question = "How long does it take to boil water?"
    assert gives_number("On one hand, it is light.", question)
    assert not gives_number("On one hand, it is light.", question, spelled=False)
    assert gives_number("It boils in 4 minutes.", question, spelled=False)
    assert not gives_number("三日で届きます。", "何日で届きますか？", spelled=False)
    assert not gives_number("十分に乾かしてください。", "何分乾かしますか？", spelled=False)
