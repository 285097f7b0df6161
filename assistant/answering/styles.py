"""The answer styles, in a module of their own so that settings and forms can name them
without loading the answering code."""

from __future__ import annotations

STYLES = ("quote", "concise", "detailed")
"""quote: the passages' own sentences, each cited; concise: a short answer the model writes
from the evidence alone, checked sentence by sentence; detailed: the model writes from the
whole passages, checked the same way."""

DEFAULT_STYLE = "quote"
"""Chosen by ``python -m bench --only answers`` (README, "Answer quality")."""

STYLE_CHOICES = [
    ("Quote the documents (most faithful)", "quote"),
    ("Concise: the model's short answer, checked", "concise"),
    ("Detailed: the model's longer answer, checked", "detailed"),
]
"""Labels for the web forms."""
