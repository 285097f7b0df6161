"""Write the contoso manuals' FAQ sections as a question/answer/source CSV.

python scripts/contoso_faq.py ../shared/data/contoso-manuals tests/data/eval/contoso-faq.csv \
    tests/data/eval/contoso-eval.csv
The manuals are MIT-licensed (Azure-Samples/contoso-chat); the CSV is derived from them.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

_ITEM = re.compile(r"^\d+\)\s*(.+?)\s*\n((?:[ \t]+\S.*\n?)+)", re.M)


def faq_pairs(corpus: Path) -> list[tuple[str, str, str]]:
    pairs = []
    for path in sorted(corpus.glob("*.md"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
        faq = path.read_text("utf-8").split("## FAQ", 1)[1]
        for m in _ITEM.finditer(faq):
            answer = " ".join(line.strip() for line in m.group(2).splitlines() if line.strip())
            pairs.append((m.group(1).strip(), answer, path.name))
    return pairs


UNANSWERABLE = [
    # Out of the domain altogether.
    "What is the capital of Australia?",
    "How do I bake sourdough bread?",
    "Who won the football world cup in 2018?",
    "What is the boiling point of water on Mount Everest?",
    # Near the domain: the products exist, the facts do not.
    "Does the TrailMaster X4 Tent come with a built-in solar charger?",
    "Can I pay for the Alpine Explorer Tent in monthly instalments?",
    "Is there a student discount on hiking boots?",
    "Which stores in Tokyo sell the SummitClimber backpack?",
    "How many calories does the CompactCook stove burn per hour of hiking?",
    "Does the company offer a trade-in programme for old tents?",
]


def write(path: str, rows: list[tuple[str, str, str]], with_unanswerable: bool) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "answer", "source"] + (["unanswerable"] if with_unanswerable else []))
        for row in rows:
            writer.writerow(list(row) + ([""] if with_unanswerable else []))
        if with_unanswerable:
            writer.writerows([q, "", "", "yes"] for q in UNANSWERABLE)


if __name__ == "__main__":
    # argv: manuals folder, FAQ pairs CSV (for tuning), evaluation CSV (pairs + unanswerable)
    pairs = faq_pairs(Path(sys.argv[1]))
    write(sys.argv[2], pairs, with_unanswerable=False)
    if len(sys.argv) > 3:
        write(sys.argv[3], pairs, with_unanswerable=True)
    print(f"{len(pairs)} pairs, {len(UNANSWERABLE)} unanswerable questions")
