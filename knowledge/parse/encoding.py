"""Decode bytes of unknown encoding: UTF-8, UTF-16, Shift_JIS, EUC-JP, cp1252."""

from __future__ import annotations

import codecs
import re

_KANA = re.compile(r"[\u3040-\u30ff]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
_PRIVATE_OR_CONTROL = re.compile(r"[\ue000-\uf8ff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _looks_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM shows up as a NUL in every other byte of ASCII text."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) / 2
    if odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    return None


def _japanese_score(text: str) -> float:
    """Share of non-ASCII characters that are kana, among plausible Japanese text.

    Bytes of a European code page decoded as Shift_JIS or EUC-JP give isolated kanji and
    private-use characters but almost never kana, so kana is the tell.
    """
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return 0.0
    if _PRIVATE_OR_CONTROL.search(text):
        return 0.0
    joined = "".join(non_ascii)
    kana = len(_KANA.findall(joined))
    cjk = len(_CJK.findall(joined))
    if cjk < 0.9 * len(non_ascii):
        return 0.0
    return kana / len(non_ascii)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Return ``(text, encoding)`` for raw bytes, trying the encodings users actually send."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(name, errors="replace"), name
    utf16 = _looks_utf16(data)
    if utf16:
        return data.decode(utf16, errors="replace"), utf16
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best: tuple[float, str, str] | None = None
    for name in ("cp932", "euc_jp"):
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        score = _japanese_score(text)
        if score >= 0.15 and (best is None or score > best[0]):
            best = (score, text, name)
    if best:
        return best[1], best[2]
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"
