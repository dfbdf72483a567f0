"""What storescu saw: each C-STORE it sent and the answer, read back from its log.

Tests that disturb a transfer ask which instances the sender saw acknowledged: only
those must be durable at the receiver.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydicom


@dataclass(frozen=True, slots=True)
class StoreAttempt:
    """One C-STORE request storescu sent, and what came back (if anything)."""

    msg_id: int
    path: Path | None
    sop_instance_uid: str | None = None
    status: int | None = None  # the DIMSE status; logged at debug level only
    status_text: str | None = None  # "Success", "Warning: ...", or why it failed

    @property
    def acknowledged(self) -> bool:
        """The receiver answered Success or Warning, i.e. took the instance (PS3.7 C)."""
        if self.status is not None:
            return self.status in (0x0000, 0x0001) or 0xB000 <= self.status <= 0xBFFF
        text = self.status_text or ""
        return text.startswith(("Success", "Warning"))


_SENDING_FILE = re.compile(r"Sending file: (.+)$")
_REQUEST = re.compile(r"Sending Store Request \(MsgID (\d+)")
_RESPONSE_TEXT = re.compile(r"Received Store Response \((.+)\)\s*$")
_RESPONDED_TO = re.compile(r"Message ID Being Responded To\s*: (\d+)")
_INSTANCE_UID = re.compile(r"Affected SOP Instance UID\s*: ([0-9.]+)")
_STATUS = re.compile(r"DIMSE Status\s*: 0x([0-9A-Fa-f]{4})(?::\s*(.*))?$")
_FAILED = re.compile(r"Store Failed, file: ")
_ERROR = re.compile(r"^E: (.+)$")


@dataclass(slots=True)
class _Attempt:
    msg_id: int
    path: Path | None
    uid: str | None = None
    status: int | None = None
    text: str | None = None


def parse_storescu_log(log: str) -> list[StoreAttempt]:
    """Every C-STORE in a storescu ``-v`` or ``-d`` log, in order, with its outcome.

    At ``-d`` the outgoing and incoming DIMSE dumps give the SOP Instance UID and the
    numeric status; at ``-v`` only "Received Store Response (Success)" is printed.
    """
    attempts: dict[int, _Attempt] = {}
    path: Path | None = None
    current: _Attempt | None = None
    block: Literal["out", "in"] | None = None
    target: _Attempt | None = None
    failed = False
    for line in log.splitlines():
        if "OUTGOING DIMSE MESSAGE" in line:
            block, target = "out", current
        elif "INCOMING DIMSE MESSAGE" in line:
            block, target = "in", None
        elif "END DIMSE MESSAGE" in line:
            block = None
        elif m := _SENDING_FILE.search(line):
            path, failed = Path(m.group(1)), False
        elif m := _REQUEST.search(line):
            current = attempts.setdefault(int(m.group(1)), _Attempt(int(m.group(1)), path))
        elif m := _RESPONSE_TEXT.search(line):
            if current is not None:
                current.text = m.group(1)
        elif block == "in" and (m := _RESPONDED_TO.search(line)):
            target = attempts.get(int(m.group(1)))
        elif block is not None and target is not None and (m := _INSTANCE_UID.search(line)):
            target.uid = target.uid or m.group(1)
        elif block == "in" and target is not None and (m := _STATUS.search(line)):
            target.status = int(m.group(1), 16)
            target.text = m.group(2) or target.text
        elif _FAILED.search(line):
            failed = True
        elif failed and current is not None and (m := _ERROR.search(line)):
            if current.status is None and current.text is None:
                current.text = m.group(1)
            failed = False
    return [
        StoreAttempt(a.msg_id, a.path, a.uid, a.status, a.text)
        for a in sorted(attempts.values(), key=lambda a: a.msg_id)
    ]


def acknowledged_uids(attempts: Sequence[StoreAttempt]) -> set[str]:
    """SOP Instance UIDs the sender saw acknowledged; read from the file if not logged."""
    uids: set[str] = set()
    for attempt in attempts:
        if not attempt.acknowledged:
            continue
        uid = attempt.sop_instance_uid
        if uid is None and attempt.path is not None:
            ds = pydicom.dcmread(attempt.path, stop_before_pixels=True)
            uid = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
        if uid:
            uids.add(str(uid))
    return uids
