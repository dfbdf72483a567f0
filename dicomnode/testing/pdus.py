"""DICOM Upper Layer PDUs built byte by byte, for tests that play a hostile or broken peer.

pynetdicom's encoders refuse to build most of what these tests need (an even context
ID, a missing transfer syntax, a length that lies), so the PDUs are packed here by
PS3.8 9.3 directly. Every builder takes the fields a test may want to break; the
defaults make a well-formed PDU. ``read_pdu`` reads the node's answer.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1
IMPLICIT_LE = b"1.2.840.10008.1.2"
EXPLICIT_LE = b"1.2.840.10008.1.2.1"
CT_IMAGE_STORAGE = b"1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.9.7433.1"

# PDU types (PS3.8 Table 9-11).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
_HEADER = struct.Struct(">BBL")


def header(pdu_type: int, length: int) -> bytes:
    """A PDU header: type, reserved, length of what follows (which may lie)."""
    return _HEADER.pack(pdu_type, 0, length)


def pdu(pdu_type: int, body: bytes) -> bytes:
    return header(pdu_type, len(body)) + body


def item(item_type: int, body: bytes, length: int | None = None) -> bytes:
    """A variable item or sub-item (PS3.8 9.3.2.x): type, reserved, 2-byte length."""
    return struct.pack(">BBH", item_type, 0, len(body) if length is None else length) + body


def application_context(name: bytes = APPLICATION_CONTEXT) -> bytes:
    return item(0x10, name)


def presentation_context(
    context_id: int,
    abstract_syntax: bytes | None = CT_IMAGE_STORAGE,
    transfer_syntaxes: Sequence[bytes] = (EXPLICIT_LE, IMPLICIT_LE),
) -> bytes:
    """A presentation context item (RQ); None or () leaves the sub-items out."""
    body = bytes([context_id, 0, 0, 0])
    if abstract_syntax is not None:
        body += item(0x30, abstract_syntax)
    for syntax in transfer_syntaxes:
        body += item(0x40, syntax)
    return item(0x20, body)


def user_information(max_pdu: int = 16384) -> bytes:
    """Maximum length (PS3.8 D.1) and implementation class UID (PS3.7 D.3.3.2)."""
    return item(0x50, item(0x51, struct.pack(">L", max_pdu)) + item(0x52, IMPLEMENTATION_UID))


def ae_title(title: bytes) -> bytes:
    return title.ljust(16)[:16]


def associate_rq(
    called: bytes = b"DICOMNODE",
    calling: bytes = b"HOSTILE",
    items: Iterable[bytes] | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2); ``items`` replace the default variable items."""
    if items is None:
        items = (application_context(), presentation_context(1), user_information())
    fixed = struct.pack(">HH", 1, 0) + ae_title(called) + ae_title(calling) + bytes(32)
    return pdu(ASSOCIATE_RQ, fixed + b"".join(items))


def pdv(context_id: int, control: int, fragment: bytes) -> bytes:
    """A presentation data value item (PS3.8 9.3.5.1, control header PS3.8 E.2)."""
    return struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment


def p_data_tf(*pdvs: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs))


def release_rq() -> bytes:
    return pdu(RELEASE_RQ, bytes(4))


def abort() -> bytes:
    return pdu(ABORT, bytes(4))


def store_command(
    sop_instance_uid: bytes,
    message_id: int = 1,
    sop_class_uid: bytes = CT_IMAGE_STORAGE,
) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian, with a dataset."""

    def element(element_tag: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0, element_tag, len(value)) + value

    def text(element_tag: int, uid: bytes) -> bytes:
        return element(element_tag, uid + b"\0" * (len(uid) % 2))

    body = b"".join(
        (
            text(0x0002, sop_class_uid),
            element(0x0100, struct.pack("<H", 0x0001)),
            element(0x0110, struct.pack("<H", message_id)),
            element(0x0700, struct.pack("<H", 0)),
            element(0x0800, struct.pack("<H", 0x0001)),
            text(0x1000, sop_instance_uid),
        )
    )
    return element(0x0000, struct.pack("<L", len(body))) + body


@dataclass(frozen=True, slots=True)
class Pdu:
    """A PDU read back from the node."""

    pdu_type: int
    body: bytes

    @property
    def is_rejection(self) -> bool:
        return self.pdu_type == ASSOCIATE_RJ

    @property
    def is_abort(self) -> bool:
        return self.pdu_type == ABORT


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> Pdu | None:
    """The next PDU from ``sock``; None when the node closed the connection first."""
    sock.settimeout(timeout)
    head = _read_exactly(sock, _HEADER.size)
    if head is None:
        return None
    pdu_type, _, length = _HEADER.unpack(head)
    body = _read_exactly(sock, length)
    return None if body is None else Pdu(pdu_type, body)


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the node closes ``sock`` within ``timeout`` (any PDUs before are skipped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    data = bytearray()
    try:
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    return bytes(data)


def associate(sock: socket.socket, calling: bytes = b"HOSTILE", max_pdu: int = 16384) -> int:
    """Negotiate CT Image Storage (Explicit VR LE) on context 1; the node's maximum PDU.

    Raises ``ConnectionError`` when the node does not accept.
    """
    items = (
        application_context(),
        presentation_context(1, CT_IMAGE_STORAGE, (EXPLICIT_LE,)),
        user_information(max_pdu),
    )
    sock.sendall(associate_rq(calling=calling, items=items))
    answer = read_pdu(sock)
    if answer is None or answer.pdu_type != ASSOCIATE_AC:
        raise ConnectionError(f"association not accepted: {answer}")
    # The user information item's maximum length sub-item (PS3.8 D.1), as the node sent it.
    offset = answer.body.find(b"\x51\x00\x00\x04")
    return int(struct.unpack_from(">L", answer.body, offset + 4)[0]) if offset >= 0 else 0
