"""Pseudonyms and UIDs derived from the originals by HMAC-SHA256 under a secret key.

Derived, not drawn at random: the same key gives the same pseudonyms in a later run (an
export can resume or grow), and two keys give pseudonyms nobody can link. Nothing is held
in module state; each :class:`Pseudonyms` remembers only what it replaced, for the
mapping file its owner may ask for.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from pydicom.uid import UID

KEY_BYTES: Final = 32
PATIENT_PREFIX: Final = "ANON-"
UUID_ROOT: Final = "2.25."  # PS3.5 B.2: a UID made of a UUID's 128 bits as one integer
MAPPING_COLUMNS: Final = ("kind", "original", "pseudonym")


def new_key() -> bytes:
    """A fresh key for one export (keep it with the export's private state, never in it)."""
    return secrets.token_bytes(KEY_BYTES)


class Pseudonyms:
    """What one key makes of patient identities and UIDs, and a record of it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the de-identification key must be at least 16 bytes")
        self._key = key
        self._replaced: dict[tuple[str, str], str] = {}

    def _digest(self, domain: str, value: str) -> bytes:
        # The domain keeps a UID and a patient ID with the same text apart.
        message = domain.encode("ascii") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def patient(self, identity: str) -> str:
        """``ANON-`` and 10 base32 characters (50 bits) for one patient identity."""
        text = base64.b32encode(self._digest("patient", identity)).decode("ascii")
        pseudonym = PATIENT_PREFIX + text[:10]
        self._replaced.setdefault(("patient", identity), pseudonym)
        return pseudonym

    def uid(self, uid: str) -> str:
        """A ``2.25.`` UID for an instance UID; well-known UIDs (SOP classes, ...) are kept."""
        uid = uid.strip("\x00 ")
        if not uid or UID(uid).type:  # in the standard's registry (PS3.6 Annex A)
            return uid
        raw = bytearray(self._digest("uid", uid)[:16])
        # Mark it an RFC 9562 version 8 (application-defined) UUID, as PS3.5 B.2 expects
        # a UUID: 122 bits of the HMAC remain.
        raw[6] = (raw[6] & 0x0F) | 0x80
        raw[8] = (raw[8] & 0x3F) | 0x80
        new = UUID_ROOT + str(int.from_bytes(raw, "big"))
        self._replaced.setdefault(("uid", uid), new)
        return new

    def mapping(self) -> list[dict[str, str]]:
        """Every replacement made so far, in the order first made."""
        return [
            {"kind": kind, "original": original, "pseudonym": pseudonym}
            for (kind, original), pseudonym in self._replaced.items()
        ]

    def write_mapping(self, path: Path, earlier: Iterable[Mapping[str, str]] = ()) -> None:
        """The mapping as CSV, readable by its owner only (0600), replaced atomically.

        ``earlier``: rows an earlier run wrote (a resumed export), kept after this run's
        unless this run replaced the same original. It re-identifies every exported
        object: whoever may read it may read the PACS.
        """
        rows = self.mapping()
        seen = {(row["kind"], row["original"]) for row in rows}
        rows += [
            {column: row.get(column, "") for column in MAPPING_COLUMNS}
            for row in earlier
            if (row.get("kind"), row.get("original")) not in seen
        ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MAPPING_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(fd)
        temporary.replace(path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
