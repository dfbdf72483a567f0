"""Files that hold a secret (tokens, passwords): refused when other users may read them.

A secret is as good as a password, so it lives in a file only the node's user can read:
one that other users may read, or anyone but its owner may change, stops the node at
start-up (``ConfigError`` naming the key, the file and the ``chmod``). Group read access
is allowed, for the usual ``root:dicomnode 0640`` layout. The admin API's token files
and the DICOMweb destinations' credentials share this one check.
"""

from __future__ import annotations

import stat
from pathlib import Path

from dicomnode.errors import ConfigError

# Anyone but the owner may write it, or others may read it (the group may read).
_UNSAFE_MODE = stat.S_IWGRP | stat.S_IRWXO


def check_secret_file(path: Path, key: str, what: str = "a token file") -> None:
    """Refuse a secret file others may read, or anyone but its owner may change."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if mode & _UNSAFE_MODE:
        raise ConfigError(
            f"{key}: {path} is {_who(mode)} (mode {stat.S_IMODE(mode):04o}); other users "
            f"must not read or change {what}: run `chmod 600 {path}`"
        )


def read_secret_file(path: Path, key: str, what: str = "a token file") -> str:
    """The file's text, stripped, once ``check_secret_file`` passed; ConfigError if it
    cannot be read or is empty. The message never quotes the content."""
    check_secret_file(path, key, what)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from exc
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text


def _who(mode: int) -> str:
    if mode & stat.S_IROTH:
        return "readable by every user"
    if mode & (stat.S_IWOTH | stat.S_IWGRP):
        return "writable by other users"
    return "open to other users"
