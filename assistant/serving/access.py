"""Who may do what: the serving mode, the caller, and the limits on anonymous visitors.

Three modes, decided once at start-up from the settings and the user file:

- **local**: no users, not open. The server listens on 127.0.0.1 only (``check_exposure``
  refuses anything else), so the one person who can reach it is the one who started it: they
  are admin, with no login.
- **login**: there are users and the server is not open. Everyone logs in; the user's role
  decides.
- **open**: a Hugging Face Space, or ``TSUMUGI_ALLOW_OPEN=1``. Anonymous visitors get the
  agent's abilities at most (ask and draft, on the public knowledge bases), never admin, even
  with no users at all. Administration is a separate page (``/admin``) behind a login; its
  admin is created from the command line or from ``TSUMUGI_ADMIN_PASSWORD``, never through
  the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from assistant.config import OpenLimits
from knowledge.errors import ConfigError
from knowledge.names import spelling

Mode = Literal["local", "login", "open"]


@dataclass(frozen=True)
class Caller:
    """The person behind a web request: a user name (None when anonymous) and a role."""

    name: str | None
    role: str

    @property
    def anonymous(self) -> bool:
        return self.name is None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_visitor(self) -> bool:
        """An anonymous visitor of an open server (local mode's anonymous admin is not one)."""
        return self.anonymous and not self.is_admin


LOCAL_ADMIN = Caller(None, "admin")
"""The caller in local single-user mode, and in code that runs without a server (tests, CLI)."""


class Access:
    """The serving mode and the rules that follow from it; one per server."""

    def __init__(self, users, open_mode: bool, limits: OpenLimits | None = None) -> None:
        self.users = users
        self.limits = limits or OpenLimits()
        self.mode: Mode = "open" if open_mode else ("login" if users.any() else "local")
        """Fixed when the server starts, as its login page is: a user added while a local
        server runs takes effect from the next start."""

    def caller(self, username: str | None) -> Caller | None:
        """The caller for a request's login name; None when that login no longer exists."""
        if username:
            username = spelling(username)
            role = self.users.role(username)
            return Caller(username, role) if role else None
        mode = self.mode
        if mode == "local":
            return LOCAL_ADMIN
        if mode == "open":
            return Caller(None, "agent")
        return None  # login mode without a login: the page asks for one

    def public_kbs(self) -> tuple[str, ...]:
        if self.limits.public_kbs:
            return self.limits.public_kbs
        from assistant.serving.demo import DEMO_KB

        return (DEMO_KB,)

    def check_kb(self, caller: Caller | None, kb_name: str | None) -> None:
        """Refuse an anonymous visitor a knowledge base that is not public."""
        if caller is not None and caller.is_visitor:
            if kb_name not in self.public_kbs():
                raise ConfigError(
                    f"The knowledge base {kb_name!r} is not open to visitors; choose "
                    f"{' or '.join(repr(k) for k in self.public_kbs())}, or log in."
                )

    def check_model(
        self, caller: Caller | None, adapter: str | None, precision: str | None = None, default: str = "auto"
    ) -> None:
        """Refuse an anonymous visitor another model than the default: each adapter or
        precision is one more model loaded in memory, which a visitor must not be able to
        multiply."""
        if caller is not None and caller.is_visitor:
            if adapter or precision not in (None, "", "auto", default):
                raise ConfigError(
                    "Visitors use the default model; log in to choose an adapter or a precision."
                )

    def check_question(
        self,
        caller: Caller | None,
        kb_name: str | None,
        text: str,
        adapter: str | None = None,
        precision: str | None = None,
        default: str = "auto",
    ) -> None:
        """Everything a question or a draft is checked against: the knowledge base, the model
        and the length of the text (all open to anyone but a visitor)."""
        self.check_kb(caller, kb_name)
        self.check_model(caller, adapter, precision, default)
        self.check_text(caller, text)

    def max_tokens(self, caller: Caller | None, asked: int) -> int:
        """An anonymous visitor's answer length is bounded."""
        if caller is not None and caller.is_visitor:
            return min(int(asked), self.limits.max_answer_tokens)
        return int(asked)

    def check_text(self, caller: Caller | None, text: str) -> None:
        """An anonymous visitor's question is bounded: reading a long prompt is one step of
        the model that nothing can interrupt."""
        if caller is not None and caller.is_visitor and len(text) > self.limits.max_question_chars:
            raise ConfigError(
                f"Questions here are limited to {self.limits.max_question_chars} characters "
                f"(this one has {len(text)}); shorten it, or log in."
            )

    def may_escalate(self, caller: Caller | None) -> bool:
        """Visitors never reach the larger (paid) model."""
        return not (caller is not None and caller.is_visitor)


def ensure_admin_from_secret(users, name: str, password: str) -> bool:
    """Create the admin ``name`` with ``password`` (a Space secret), or set its password to it.

    True when something changed. The secret is the Space owner's way in: the page itself can
    never create an admin.
    """
    if not password:
        return False
    existing = {u["name"]: u["role"] for u in users.list()}
    if name not in existing:
        users.add(name, password, "admin")
        return True
    if existing[name] != "admin":
        raise ConfigError(f"TSUMUGI_ADMIN_USER names {name!r}, an agent; choose another name for the admin.")
    if users.verify(name, password):
        return False
    users.set_password(name, password)
    return True
