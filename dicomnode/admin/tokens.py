"""The admin API's bearer tokens: read once at start, each with a name and a role.

A token is a secret as good as a password, so it lives in a file only the node's user
can read: a token file that other users may read, or anyone but its owner may change,
stops the node at start-up (``ConfigError`` naming the file and the ``chmod``).
Group read access is allowed, for the usual ``root:dicomnode 0640`` layout. The inline
``admin.token`` remains for compatibility (the configuration file is then the secret).

Tokens are compared in constant time, each against every configured token, so neither
a token's content nor which token matched shows in the answer's timing. Their values
never reach a log, the audit trail or an error message (``Credential``'s repr hides it).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomnode.config import AdminConfig
from dicomnode.errors import ConfigError
from dicomnode.secretfiles import check_secret_file

Role = Literal["viewer", "admin"]

# RFC 6750 2.1 b64token: what an Authorization header can carry unquoted.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, slots=True)
class Credential:
    """One configured token: ``name`` is what the audit trail records, never ``secret``."""

    name: str
    role: Role
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Tokens:
    """The configured tokens; empty means an open API (allowed on loopback only)."""

    credentials: tuple[Credential, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.credentials)

    def match(self, presented: str) -> Credential | None:
        """The credential whose token is ``presented``; every one is compared, in
        constant time, whatever matches first."""
        candidate = presented.encode("utf-8", "surrogateescape")
        found = None
        for credential in self.credentials:
            if hmac.compare_digest(candidate, credential.secret):
                found = credential
        return found

    def describe(self) -> str:
        """How many tokens of each role, e.g. ``1 admin, 2 viewer`` (no names, no values)."""
        admins = sum(c.role == "admin" for c in self.credentials)
        viewers = len(self.credentials) - admins
        parts = [f"{admins} admin"] if admins else []
        if viewers:
            parts.append(f"{viewers} viewer")
        return ", ".join(parts)


def single(token: str, role: Role = "admin", name: str = "token") -> Tokens:
    """One token (tests, and ``admin.token``)."""
    return Tokens((Credential(name, role, _checked(token, "the token")),))


def read_tokens(admin: AdminConfig) -> Tokens:
    """Every token of ``admin``: ``token``, ``token_file`` and ``tokens``. Raises
    ConfigError for a file that cannot be read, that other users may read or change, an
    empty or malformed token, a token given twice or two tokens of the same name."""
    found: list[Credential] = []
    if admin.token is not None:
        found.append(
            Credential(
                "admin.token", "admin", _checked(admin.token.get_secret_value(), "admin.token")
            )
        )
    if admin.token_file is not None:
        found.append(_from_file(admin.token_file, "admin", None, "admin.token_file"))
    for number, token in enumerate(admin.tokens):
        found.append(_from_file(token.file, token.role, token.name, f"admin.tokens[{number}]"))
    names: set[str] = set()
    secrets: set[bytes] = set()
    for credential in found:
        if credential.name in names:
            raise ConfigError(
                f"admin.tokens: two tokens are named {credential.name!r}; give each a "
                "distinct name (the audit trail tells them apart by it)"
            )
        if credential.secret in secrets:
            raise ConfigError(
                f"admin: the token {credential.name!r} is the same as another one; each "
                "person or system needs its own token"
            )
        names.add(credential.name)
        secrets.add(credential.secret)
    return Tokens(tuple(found))


def check_token_file(path: Path, key: str) -> None:
    """Refuse a token file others may read, or anyone but its owner may change."""
    check_secret_file(path, key, "a token file")


def _from_file(path: Path, role: Role, name: str | None, key: str) -> Credential:
    check_token_file(path, key)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from exc
    return Credential(name or path.name, role, _checked(text, f"{key} {path}"))


def _checked(token: str, where: str) -> bytes:
    token = token.strip()
    if not token:
        raise ConfigError(f"{where}: the token is empty")
    if not _TOKEN.fullmatch(token):
        # The message must not quote the token: it may be a real one with a typo.
        raise ConfigError(
            f"{where}: a token is one word of letters, digits and -._~+/ (e.g. the output "
            "of `openssl rand -hex 32`)"
        )
    return token.encode("ascii")
