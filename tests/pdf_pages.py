"""Write small PDFs whose text sits exactly where a test puts it, for the parser's layout rules.

A page is a list of ``(x, y, size, text)``; Latin text is set in Helvetica, anything else in
the Japanese font every PDF reader knows without embedding (HeiseiKakuGo-W5, Adobe-Japan1).
Points, from the page's bottom left; an A4 page is 595 x 842.
"""

from __future__ import annotations

from pathlib import Path

Item = tuple[float, float, float, str]

_FONTS = (
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    b"<< /Type /Font /Subtype /Type0 /BaseFont /HeiseiKakuGo-W5 /Encoding /UniJIS-UCS2-H "
    b"/DescendantFonts [<< /Type /Font /Subtype /CIDFontType0 /BaseFont /HeiseiKakuGo-W5 "
    b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Japan1) /Supplement 2 >> /DW 1000 "
    b"/FontDescriptor << /Type /FontDescriptor /FontName /HeiseiKakuGo-W5 /Flags 4 "
    b"/FontBBox [-92 -250 1010 922] /ItalicAngle 0 /Ascent 752 /Descent -221 /CapHeight 737 "
    b"/StemV 114 >> >>] >>",
)


def _show(item: Item) -> str:
    x, y, size, text = item
    if text.isascii():
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return f"BT /F1 {size} Tf {x} {y} Td ({escaped}) Tj ET"
    return f"BT /F2 {size} Tf {x} {y} Td <{''.join(f'{ord(c):04X}' for c in text)}> Tj ET"


def write_pdf(path: Path, pages: list[list[Item]]) -> Path:
    objects: list[bytes] = list(_FONTS)
    contents = []
    for items in pages:
        stream = "\n".join(_show(item) for item in items).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        contents.append(len(objects))
    parent = len(objects) + len(pages) + 1
    kids = []
    for content in contents:
        objects.append(
            f"<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 1 0 R /F2 2 0 R >> >> /Contents {content} 0 R >>".encode()
        )
        kids.append(len(objects))
    objects.append(
        f"<< /Type /Pages /Count {len(kids)} /Kids [{' '.join(f'{k} 0 R' for k in kids)}] >>".encode()
    )
    objects.append(f"<< /Type /Catalog /Pages {parent} 0 R >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer << /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    path.write_bytes(bytes(out))
    return path
