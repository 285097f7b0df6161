"""Small helpers shared by the tabs: formatting only, no logic."""

from __future__ import annotations

import html

from knowledge.retrieve import Hit


def passage_location(hit: Hit) -> str:
    where = hit.doc + (f", page {hit.page}" if hit.page else "")
    return where + (f" · {hit.heading}" if hit.heading else "")


def _passage_block(n: int, hit: Hit, limit: int) -> str:
    excerpt = html.escape(hit.text.strip())
    if len(excerpt) > limit:
        excerpt = excerpt[:limit].rsplit(" ", 1)[0] + " …"
    quoted = "\n".join("> " + line if line.strip() else ">" for line in excerpt.splitlines())
    return f"**[{n}] {html.escape(passage_location(hit))}**\n\n{quoted}"


def sources_markdown(passages: list[Hit], cited: list[int]) -> str:
    """The sources panel: cited passages in full view, the other retrieved ones folded away."""
    if not passages:
        return "_No passages from the documents were relevant to this question._"
    shown = [_passage_block(n, passages[n - 1], 700) for n in cited]
    others = [n for n in range(1, len(passages) + 1) if n not in cited]
    parts = ["### Cited sources", *shown] if shown else ["_The answer cites no passage._"]
    if others:
        folded = "\n\n".join(_passage_block(n, passages[n - 1], 300) for n in others)
        parts.append(
            f"<details><summary>{len(others)} more retrieved passage(s), not cited</summary>\n\n"
            f"{folded}\n\n</details>"
        )
    return "\n\n".join(parts)


def answer_footer(answer) -> str:
    """Which model answered and how fast, under the sources."""
    parts = [f"Answered by `{answer.model}`" if answer.covered else "Not sent to the model"]
    if "first_token_s" in answer.timings:
        parts.append(f"first token {answer.timings['first_token_s']:.1f} s")
    if "total_s" in answer.timings:
        parts.append(f"total {answer.timings['total_s']:.1f} s")
    return "<sub>" + " · ".join(parts) + "</sub>"
