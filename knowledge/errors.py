"""Errors that reach the user as one sentence.

The core raises these; only the UI turns them into ``gr.Error`` and the CLI into one line
on stderr with a non-zero exit.
"""

from __future__ import annotations


class TsumugiError(Exception):
    """An error whose message is a complete sentence meant for the user."""


class ParseError(TsumugiError):
    """A file could not be turned into text; the message says why and what to do."""


class ConfigError(TsumugiError, ValueError):
    """A setting has an impossible value."""


class StoreError(TsumugiError):
    """A knowledge base could not be read or written."""


class Cancelled(TsumugiError):
    """Long work was cancelled by the user."""
