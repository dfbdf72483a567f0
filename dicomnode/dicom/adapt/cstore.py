"""Sending a stored file by C-STORE without pynetdicom's per-call parsing.

``Association.send_c_store(path)`` reads the file's preamble and meta with pydicom
(``split_dataset``) to learn its identity and where the dataset starts, then turns the
response into a new pydicom ``Dataset`` (``_check_received_status``). The node already
knows the identity (``SendableFile``, from the index or ``inspect_file``), and the start
is the meta's group length away (PS3.10 7.1: (0002,0000) is the meta's first element,
Explicit VR Little Endian). Together that was ~28 % of the Python time of a forward.

``send_file`` does what pynetdicom 3.0.4's ``send_c_store`` does for a file (the same
request primitive, the same reactor pause, the same handling of a missing or invalid
response) and returns the response primitive. It is used only where ``reactor`` is
installed (same version guard); otherwise, and for a file whose meta does not start with
its group length, it calls ``send_c_store``.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path
from typing import Any

from pynetdicom.dimse_primitives import C_STORE

from dicomnode.dicom.adapt import reactor

_META_START = 128 + 4  # preamble, "DICM"
_GROUP_LENGTH = struct.Struct("<HH2sHL")  # (0002,0000) UL, 2-byte length, value
_ASSOC_LOG = logging.getLogger("pynetdicom.association")


def send_file(
    assoc: Any,
    path: Path,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    msg_id: int,
) -> Any:
    """C-STORE the dataset in ``path``; the response (with ``Status``) or None."""
    offset = _dataset_offset(path) if reactor.installed() else None
    if offset is None:
        return assoc.send_c_store(path, msg_id=msg_id)
    request = C_STORE()
    request.MessageID = msg_id
    request.Priority = 2  # Low, pynetdicom's default
    request.AffectedSOPClassUID = sop_class_uid
    request.AffectedSOPInstanceUID = sop_instance_uid
    request._dataset_path = (path, offset)
    context = assoc._get_valid_context(
        sop_class_uid, transfer_syntax_uid, "scu", allow_conversion=False
    )
    # As send_c_store: keep the association thread off the DIMSE queue meanwhile.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, int(context.context_id))
        _context_id, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if response is None:
        assoc._handle_no_response()
        return None
    if not response.is_valid_response:
        _ASSOC_LOG.error("Received an invalid C-STORE-RSP response from the peer")
        assoc.abort()
        return None
    return response


def _dataset_offset(path: Path) -> int | None:
    """Where the dataset starts: after the preamble and the meta (None: read it all)."""
    try:
        with path.open("rb") as file:
            head = file.read(_META_START + _GROUP_LENGTH.size)
    except OSError:
        return None  # send_c_store raises the error the caller expects
    if len(head) < _META_START + _GROUP_LENGTH.size or head[128:132] != b"DICM":
        return None
    group, element, vr, length, value = _GROUP_LENGTH.unpack_from(head, _META_START)
    if (group, element, vr, length) != (0x0002, 0x0000, b"UL", 4):
        return None
    return _META_START + _GROUP_LENGTH.size + int(value)
