"""Demo mode: a sample knowledge base, so a visitor can try Tsumugi at once (TSUMUGI_DEMO=1;
on by default on a Hugging Face Space)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "outdoor-gear"
DEMO_KB = "Outdoor gear sample"


def seed(app) -> bool:
    """Ingest the sample manuals into a new knowledge base when there is none; True if seeded."""
    if app.library.names():
        return False
    deque(app.ingest(DEMO_KB, sorted(SAMPLES.glob("*.md"))), maxlen=0)
    return True
