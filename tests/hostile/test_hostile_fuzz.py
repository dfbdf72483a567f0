"""Fuzzing the receive path: mutated datasets and PDUs against a node in its own process.

The property, for every example hypothesis draws (fixed seed, bounded count):

- the node answers with a valid C-STORE status (PS3.4 B.2.3, PS3.7 C), an A-ABORT or by
  closing the connection, and never leaves the sender waiting;
- the node stays up: a C-ECHO succeeds after the example;
- its memory stays bounded: RSS (and the peak, VmHWM, at the end) under the start-up
  RSS plus ``RSS_ALLOWANCE``;
- everything it acknowledged (0x0000) is indexed, and its spooled file reads completely
  with pydicom (every element, recursively) and with DCMTK ``dcmdump``.

Datasets are the phantom CT with nested sequences of defined and undefined length added
(and the real CT of ``DICOMNODE_TEST_DATA`` when set), encoded in Explicit or Implicit
VR Little Endian or deflated; mutations flip bits, truncate, insert and delete bytes, and
rewrite lengths, VR codes, tags and item structure at element boundaries a small walker
finds. PDU mutations lie about PDU and PDV lengths, break control headers and context IDs,
oversize a PDU and cut the stream. The node runs with the default limits, once on each
receiving path (the adapted one and pynetdicom's stock one).
"""

from __future__ import annotations

import copy
import os
import secrets
import socket
import struct
import subprocess
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom.dsutils import encode
from sqlalchemy import select

from dicomnode.phantom import CTPhantomSpec, ct_phantom_datasets
from dicomnode.store.database import Database
from dicomnode.store.spool import Spool
from dicomnode.store.tables import InstanceRow
from dicomnode.testing import pdus
from dicomnode.testing.hostile import PATHS, echo_problem, echo_succeeds, start_node, stuck_report
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.ports import LOOPBACK
from dicomnode.testing.process import HarnessTimeoutError, poll_until

# A mutated character set is still a readable file: pydicom warns and decodes as ASCII.
pytestmark = pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")

DATASET_EXAMPLES = 400
PDU_EXAMPLES = 200
RSS_ALLOWANCE = 384 * 1024 * 1024  # what the node may grow by over its start-up RSS
ANSWER_TIMEOUT_S = 45.0  # the node's idle timeout (10 s here) ends any wait far sooner
DCMDUMP = "/usr/bin/dcmdump"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's, as generate_uid uses it

DEFLATED_LE = b"1.2.840.10008.1.2.1.99"
SYNTAXES = {"explicit": pdus.EXPLICIT_LE, "implicit": pdus.IMPLICIT_LE, "deflated": DEFLATED_LE}
# One transfer syntax per context, so the answer says which encoding the node expects.
CONTEXT_IDS = {"explicit": 1, "implicit": 3, "deflated": 5}

# PS3.4 B.2.3 (C-STORE) and the general statuses of PS3.7 C.
SUCCESS = 0x0000
WARNINGS = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
GENERAL_FAILURES = frozenset({0x0110, 0x0117, 0x0122, 0x0124, 0x0210, 0x0211, 0x0212, 0x0213})

LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
VR_CODES = [b"ZZ", b"\0\0", b"ob", b"SQ", b"OB", b"UN", b"US", b"UL", b"CS", b"UI", b"FD", b"AT"]
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
ITEM_TAGS = [b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0"]  # as encoded


def is_valid_store_status(status: int) -> bool:
    return (
        status == SUCCESS
        or status in WARNINGS
        or status in GENERAL_FAILURES
        or 0xA700 <= status <= 0xA7FF
        or 0xA900 <= status <= 0xA9FF
        or 0xC000 <= status <= 0xCFFF
    )


# -- what to send ---------------------------------------------------------------------


def phantom_template() -> Dataset:
    """A phantom CT slice with sequences of defined and undefined length, nested."""
    ds = next(ct_phantom_datasets(CTPhantomSpec(slices=1, rows=48, columns=48)))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D4000", "SRT", "Abdomen"
    ds.AnatomicRegionSequence = Sequence([code])
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = generate_uid()
    inner.PurposeOfReferenceCodeSequence = Sequence([copy.deepcopy(code)])
    ds.SourceImageSequence = Sequence([inner, copy.deepcopy(inner)])
    sequence: DataElement = ds["SourceImageSequence"]
    sequence.is_undefined_length = True
    for item in sequence.value:
        item.is_undefined_length_sequence_item = True
    return ds


def templates() -> list[Dataset]:
    found = [phantom_template()]
    root = os.environ.get("DICOMNODE_TEST_DATA")
    folder = Path(root) / "ct-head-phantom-philips" if root else None
    if folder is not None and folder.is_dir():
        images = sorted(p for p in folder.iterdir() if p.name.startswith("I"))[:2]
        found += [pydicom.dcmread(p) for p in images]
    return found


TEMPLATES = templates()


@dataclass(frozen=True, slots=True)
class Field:
    """Where an encoded dataset keeps one structural field, for mutations to aim at."""

    offset: int
    size: int
    kind: str  # tag, vr, length, item_tag, item_length, delimiter


def structure(data: bytes, implicit: bool) -> list[Field]:
    """The structural fields of a well-formed Little Endian dataset (a tiny walker)."""
    fields: list[Field] = []

    def elements(pos: int, end: int) -> int:
        while pos + 8 <= end:
            group, number = struct.unpack_from("<HH", data, pos)
            tag = group << 16 | number
            if tag in (ITEM_END, SEQUENCE_END):
                fields.append(Field(pos, 8, "delimiter"))
                return pos + 8
            fields.append(Field(pos, 4, "tag"))
            if implicit:
                vr = _implicit_vr(tag)
                length_at, size, value = 4, 4, 8
            else:
                vr = data[pos + 4 : pos + 6]
                fields.append(Field(pos + 4, 2, "vr"))
                length_at, size, value = (8, 4, 12) if vr in LONG_VRS else (6, 2, 8)
            length = int.from_bytes(data[pos + length_at : pos + length_at + size], "little")
            fields.append(Field(pos + length_at, size, "length"))
            if vr == b"SQ" or length == UNDEFINED:
                pos = items(pos + value, length)
            else:
                pos += value + length
        return pos

    def items(pos: int, length: int) -> int:
        end = len(data) if length == UNDEFINED else pos + length
        while pos + 8 <= end:
            tag = struct.unpack_from("<HH", data, pos)
            if (tag[0] << 16 | tag[1]) == SEQUENCE_END:
                fields.append(Field(pos, 8, "delimiter"))
                return pos + 8
            (item_length,) = struct.unpack_from("<L", data, pos + 4)
            fields.extend((Field(pos, 4, "item_tag"), Field(pos + 4, 4, "item_length")))
            if item_length == UNDEFINED:
                pos = elements(pos + 8, len(data))
            elif tag == (0xFFFE, 0xE000) and _is_dataset_item(data, pos + 8, item_length):
                elements(pos + 8, pos + 8 + item_length)
                pos += 8 + item_length
            else:
                pos += 8 + item_length  # a pixel data fragment
        return pos

    elements(0, len(data))
    return fields


def _implicit_vr(tag: int) -> bytes:
    try:
        return dictionary_VR(tag).encode()
    except KeyError:
        return b"UN"


def _is_dataset_item(data: bytes, pos: int, length: int) -> bool:
    # Items of a sequence hold elements; fragments of encapsulated pixel data hold bytes.
    return length >= 8 and struct.unpack_from("<H", data, pos)[0] not in (0, 0xFFFE)


LENGTHS_4 = [0, 1, 2, 3, 7, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, UNDEFINED]
LENGTHS_2 = [0, 1, 3, 0xFFFE, 0xFFFF]


def fresh_uid() -> str:
    """A new UID of fixed length: a replayed example must put its fields at the same
    offsets, or hypothesis finds the strategy flaky."""
    return f"{UID_ROOT}1{secrets.randbelow(10**30):030d}"


@dataclass(frozen=True, slots=True)
class Example:
    context: str  # the presentation context it is sent on: explicit, implicit, deflated
    data: bytes
    uid: str  # the SOP Instance UID the command names (and the dataset, unless broken)
    note: str  # what was done, for the failure message
    intact: bool  # nothing broken: the node must store it


@st.composite
def mutated_dataset(draw: st.DrawFn) -> Example:
    """A real dataset, encoded, then broken in up to three places."""
    template = draw(st.sampled_from(range(len(TEMPLATES))))
    ds = copy.deepcopy(TEMPLATES[template])
    ds.SOPInstanceUID = fresh_uid()
    context = draw(st.sampled_from(sorted(SYNTAXES)))
    # Mostly the context's own encoding; sometimes the other one (issue 11: implicit
    # bytes on an explicit context were acknowledged).
    encoding = "implicit" if context == "implicit" else "explicit"
    if draw(st.sampled_from((False, False, False, False, True))):
        encoding = "explicit" if encoding == "implicit" else "implicit"
    implicit = encoding == "implicit"
    data = encode(ds, implicit, True)
    assert data is not None
    fields = structure(data, implicit)
    notes = [f"template {template} as {encoding} on {context}"]
    count = draw(st.integers(0, 3))
    edits: list[tuple[int, int, bytes, str]] = []  # (offset, bytes replaced, new, note)
    for _ in range(count):
        kind = draw(
            st.sampled_from(["flip", "length", "vr", "tag", "item", "truncate", "insert", "delete"])
        )
        edits.append(_edit(draw, kind, data, fields, implicit))
    for offset, removed, new, note in sorted(edits, key=lambda e: e[0], reverse=True):
        data = data[:offset] + new + data[offset + removed :]
        notes.append(note)
    if context == "deflated":
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = compressor.compress(data) + compressor.flush()
        if draw(st.booleans()):
            # The stream's length depends on the UID's random digits; the draw must not.
            at = draw(st.integers(0, 1 << 16)) % len(data)
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            notes.append(f"deflated stream byte {at} inverted")
    intact = len(notes) == 1 and encoding == ("implicit" if context == "implicit" else "explicit")
    return Example(context, data, str(ds.SOPInstanceUID), "; ".join(notes), intact)


def _edit(
    draw: st.DrawFn, kind: str, data: bytes, fields: list[Field], implicit: bool
) -> tuple[int, int, bytes, str]:
    def field_of(*kinds: str) -> Field | None:
        chosen = [f for f in fields if f.kind in kinds]
        return draw(st.sampled_from(chosen)) if chosen else None

    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return at, 1, bytes([data[at] ^ (1 << bit)]), f"bit {bit} of byte {at} flipped"
    if kind == "truncate":
        return at, len(data) - at, b"", f"truncated at {at}"
    if kind == "insert":
        junk = draw(st.binary(min_size=1, max_size=12))
        return at, 0, junk, f"{junk.hex()} inserted at {at}"
    if kind == "delete":
        span = draw(st.integers(1, 12))
        return at, span, b"", f"{span} bytes deleted at {at}"
    if kind == "length" and (field := field_of("length", "item_length")) is not None:
        choices = LENGTHS_2 if field.size == 2 else LENGTHS_4
        old = int.from_bytes(data[field.offset : field.offset + field.size], "little")
        limit = (1 << (8 * field.size)) - 1
        near = [v for v in (old + 1, old - 1, old + 2, old * 2) if 0 <= v <= limit]
        value = draw(st.sampled_from(choices + near))
        new = value.to_bytes(field.size, "little")
        return field.offset, field.size, new, f"length at {field.offset} {old} -> {value}"
    if kind == "vr" and not implicit and (field := field_of("vr")) is not None:
        code = draw(st.sampled_from(VR_CODES))
        return field.offset, 2, code, f"VR at {field.offset} -> {code!r}"
    if kind == "tag" and (field := field_of("tag")) is not None:
        new = draw(st.binary(min_size=4, max_size=4))
        return field.offset, 4, new, f"tag at {field.offset} -> {new.hex()}"
    if kind == "item" and (field := field_of("item_tag", "delimiter")) is not None:
        how = draw(st.sampled_from(["drop", "double", "retag"]))
        size = 8
        if how == "drop":
            return field.offset, size, b"", f"{field.kind} at {field.offset} dropped"
        header = data[field.offset : field.offset + size]
        if how == "double":
            return field.offset, size, header * 2, f"{field.kind} at {field.offset} doubled"
        other = draw(st.sampled_from(ITEM_TAGS))
        return field.offset, 4, other, f"{field.kind} at {field.offset} -> {other.hex()}"
    bit = draw(st.integers(0, 7))  # the kind had nothing to aim at: a plain flip
    return at, 1, bytes([data[at] ^ (1 << bit)]), f"bit {bit} of byte {at} flipped"


# -- talking to the node --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    max_pdu: int  # the node's; 0 means unlimited (PS3.8 D.1)
    contexts: dict[int, bool]  # context ID -> accepted


def associate(port: int) -> tuple[socket.socket, Accepted]:
    """A well-formed A-ASSOCIATE-RQ; retried while the node sheds the last example's load."""
    items = [pdus.application_context()]
    for name, context_id in CONTEXT_IDS.items():
        items.append(pdus.presentation_context(context_id, transfer_syntaxes=[SYNTAXES[name]]))
    items.append(pdus.user_information(max_pdu=65536))
    request = pdus.associate_rq(calling=b"FUZZER", items=items)
    found: list[tuple[socket.socket, Accepted]] = []

    def attempt() -> bool:
        sock = socket.create_connection((LOOPBACK, port), timeout=10)
        sock.sendall(request)
        answer = pdus.read_pdu(sock)
        if answer is None or answer.pdu_type != pdus.ASSOCIATE_AC:
            sock.close()
            return False
        found.append((sock, parse_accept(answer.body)))
        return True

    poll_until(attempt, timeout=60, what="an A-ASSOCIATE-AC", interval=0.2)
    return found[0]


def parse_accept(body: bytes) -> Accepted:
    pos, contexts, max_pdu = 68, {}, 0  # after the fixed fields (PS3.8 9.3.3)
    while pos + 4 <= len(body):
        kind, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if kind == 0x21:
            contexts[value[0]] = value[2] == 0
        elif kind == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_kind, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_kind == 0x51:
                    (max_pdu,) = struct.unpack_from(">L", value, sub + 4)
                sub += 4 + sub_length
        pos += 4 + length
    return Accepted(max_pdu, contexts)


def data_pdus(context_id: int, data: bytes, max_pdu: int) -> list[bytes]:
    """The dataset as P-DATA-TF PDUs no longer than the node's maximum, last one flagged."""
    room = (max_pdu or 1 << 20) - 6  # a PDV item's length and header (PS3.8 9.3.5.1)
    pieces = [data[i : i + room] for i in range(0, len(data), room)] or [b""]
    return [
        pdus.p_data_tf(pdus.pdv(context_id, 0x02 if i == len(pieces) - 1 else 0x00, piece))
        for i, piece in enumerate(pieces)
    ]


def command_pdu(context_id: int, uid: str) -> bytes:
    return pdus.p_data_tf(pdus.pdv(context_id, 0x03, pdus.store_command(uid.encode())))


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # status, abort, closed, other
    status: int | None = None
    detail: str = ""


def read_answer(sock: socket.socket) -> Answer:
    """The node's answer to a C-STORE: its status, an A-ABORT, or the connection closed."""
    command = b""
    while True:
        try:
            answer = pdus.read_pdu(sock, timeout=ANSWER_TIMEOUT_S)
        except TimeoutError:
            return Answer("other", detail=f"no answer within {ANSWER_TIMEOUT_S} s")
        if answer is None:
            return Answer("closed")
        if answer.is_abort:
            return Answer("abort")
        if answer.pdu_type != pdus.P_DATA_TF:
            return Answer("other", detail=f"PDU type 0x{answer.pdu_type:02x}")
        pos = 0
        while pos + 6 <= len(answer.body):
            (length,) = struct.unpack_from(">L", answer.body, pos)
            control = answer.body[pos + 5]
            command += answer.body[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if control & 0x03 == 0x03:  # the command's last fragment (PS3.8 E.2)
                status = command_status(command)
                if status is None:
                    return Answer("other", detail=f"no status in {command.hex()}")
                return Answer("status", status)


def command_status(command: bytes) -> int | None:
    pos = 0
    while pos + 8 <= len(command):
        group, number, length = struct.unpack_from("<HHL", command, pos)
        if (group, number) == (0x0000, 0x0900) and length == 2:
            return int(struct.unpack_from("<H", command, pos + 8)[0])
        pos += 8 + length
    return None


def release(sock: socket.socket) -> None:
    try:
        sock.sendall(pdus.release_rq())
        pdus.read_pdu(sock, timeout=10)
    except OSError:
        pass  # the node may close first; the example's answer was already judged
    finally:
        sock.close()


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for process {pid}")


# -- the node and the property ----------------------------------------------------------


@dataclass
class FuzzTarget:
    node: NodeProcess
    baseline_rss: int
    database: Database
    spool: Spool
    acknowledged: int = 0

    @property
    def pid(self) -> int:
        return self.node.process.pid

    def check_after(self, answer: Answer, uid: str, what: str) -> None:
        """Everything the property demands once an example has been sent."""
        if currently_in_test_context():  # the plain cases share this check
            event(f"answer {answer.kind} {answer.status and f'0x{answer.status:04X}'}")
        assert answer.kind in ("status", "abort", "closed"), f"{what}: {answer}"
        if answer.kind == "status":
            assert answer.status is not None
            assert is_valid_store_status(answer.status), f"{what}: status 0x{answer.status:04X}"
        assert self.node.process.running, f"{what}: the node died\n{self.node.logs()[-3000:]}"
        problem: list[str | None] = [None]

        def echoes() -> bool:
            problem[0] = echo_problem(self.node.port, "FUZZECHO")
            return problem[0] is None

        try:
            poll_until(echoes, timeout=60, what="C-ECHO")
        except HarnessTimeoutError as exc:
            raise AssertionError(
                f"{what}: C-ECHO fails after it ({problem[0]}); the node's threads:\n"
                + stuck_report(self.node)
            ) from exc
        rss = rss_bytes(self.pid)
        assert rss <= self.baseline_rss + RSS_ALLOWANCE, f"{what}: RSS {rss >> 20} MiB"
        if answer.status == SUCCESS:
            self.acknowledged += 1
            self.check_readable(uid, what)

    def check_readable(self, uid: str, what: str) -> None:
        with self.database.reading() as session:
            name = session.scalar(
                select(InstanceRow.spool_name).where(InstanceRow.sop_instance_uid == uid)
            )
        assert name is not None, f"{what}: acknowledged {uid} is not indexed"
        path = self.spool.path(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                touch_every_element(pydicom.dcmread(path))
            except Exception as exc:
                raise AssertionError(f"{what}: pydicom cannot read {path}: {exc!r}") from exc
        # pydicom reads a dataset whose encoding differs from its transfer syntax by
        # guessing; a reader that trusts the file's meta information fails on it.
        guessed = [str(w.message) for w in caught if "VR, but found" in str(w.message)]
        assert not guessed, f"{what}: {path}: {guessed}"
        dump = subprocess.run(
            [DCMDUMP, str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
        stderr = dump.stderr.decode(errors="replace")  # a mutated value may be any bytes
        problems = [line for line in stderr.splitlines() if line.startswith(("E:", "F:"))]
        assert dump.returncode == 0 and not problems, f"{what}: dcmdump {path}: {stderr}"


def touch_every_element(ds: Dataset) -> None:
    """Read every element's value, into nested items: pydicom parses lazily.

    A private element in Implicit VR takes its VR from pydicom's private dictionary, which
    real devices contradict (the real Philips CT re-encoded as Implicit VR: (01F1,1026) is
    DS text where the dictionary says FD). That is no structural damage, and the node keeps
    such instances (refusing them would lose a scanner's studies), so here, as pydicom
    itself offers, such a value is read as UN. Public elements get no such leniency.
    """
    lenient = pydicom.config.convert_wrong_length_to_UN
    try:
        for tag in list(ds.keys()):
            pydicom.config.convert_wrong_length_to_UN = tag.is_private
            element = ds[tag]  # converts this one raw element
            if element.VR == "SQ":
                for item in element.value:
                    touch_every_element(item)
    finally:
        pydicom.config.convert_wrong_length_to_UN = lenient


@pytest.fixture(scope="module", params=PATHS)
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """A node on the adapted or pynetdicom's stock receiving path: both are fuzzed."""
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    node = start_node(workdir, request.param, {"node": {"idle_timeout_seconds": 10.0}})
    try:
        poll_until(
            lambda: echo_succeeds(node.port, "FUZZECHO"), timeout=60, what="the first C-ECHO"
        )
        database = Database(node.config.database_url)
        target = FuzzTarget(
            node, rss_bytes(node.process.pid), database, Spool(node.config.spool_path)
        )
        yield target
        peak = rss_bytes(target.pid, "VmHWM")
        assert peak <= target.baseline_rss + RSS_ALLOWANCE, f"peak RSS {peak >> 20} MiB"
        database.close()
    finally:
        node.stop()


FUZZ_SETTINGS = settings(
    max_examples=DATASET_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@seed(20261107)
@FUZZ_SETTINGS
@given(example=mutated_dataset())
def test_mutated_datasets_get_a_valid_answer_and_what_is_acknowledged_reads_back(
    fuzz_target: FuzzTarget, example: Example
) -> None:
    sock, accepted = associate(fuzz_target.node.port)
    context_id = CONTEXT_IDS[example.context]
    assert accepted.contexts.get(context_id), f"the node refused the {example.context} context"
    try:
        sock.sendall(command_pdu(context_id, example.uid))
        for message in data_pdus(context_id, example.data, accepted.max_pdu):
            sock.sendall(message)
        answer = read_answer(sock)
    except OSError:
        answer = Answer("closed")  # the node closed while we were still sending
    finally:
        release(sock)
    fuzz_target.check_after(answer, example.uid, example.note)
    if example.intact:  # the harness sends what a node must take, unless it breaks it
        assert answer.status == SUCCESS, f"{example.note}: {answer}"


def test_a_command_group_element_leading_a_dataset_is_refused_or_reads_back(
    fuzz_target: FuzzTarget,
) -> None:
    """The fuzzer's first find, kept as a plain case: bit 3 of the first byte flipped
    makes (0008,0005) SpecificCharacterSet a (0000,0005) command element. pydicom reads
    group 0000 at the start of a stored dataset as a command set (Implicit VR), so it
    read the acknowledged file only by guessing its encoding again."""
    ds = phantom_template()
    ds.SOPInstanceUID = fresh_uid()
    data = bytearray(encode(ds, False, True) or b"")
    assert data[:4] == b"\x08\x00\x05\x00"  # (0008,0005) leads the dataset
    data[0] ^= 0x08
    sock, accepted = associate(fuzz_target.node.port)
    try:
        sock.sendall(command_pdu(CONTEXT_IDS["explicit"], ds.SOPInstanceUID))
        for message in data_pdus(CONTEXT_IDS["explicit"], bytes(data), accepted.max_pdu):
            sock.sendall(message)
        answer = read_answer(sock)
    finally:
        release(sock)
    fuzz_target.check_after(answer, ds.SOPInstanceUID, "(0000,0005) leading the dataset")


PDU_MUTATIONS = [
    "pdu_length_short",
    "pdu_length_long",
    "pdu_length_huge",
    "pdv_length",
    "control",
    "context_id",
    "oversized",
    "garbage_pdu",
    "cut",
    "split",
]


@st.composite
def mutated_stream(draw: st.DrawFn) -> tuple[str, int, str]:
    """(mutation, a parameter, a note): how to break the P-DATA-TF carrying a dataset."""
    kind = draw(st.sampled_from(PDU_MUTATIONS))
    parameter = draw(st.integers(0, 0xFFFF))
    return kind, parameter, f"{kind} ({parameter})"


def broken_stream(
    kind: str, parameter: int, context_id: int, example: Example, max_pdu: int
) -> list[bytes]:
    """The C-STORE's PDUs, one of them broken as ``kind`` says."""
    data = example.data
    messages = [command_pdu(context_id, example.uid), *data_pdus(context_id, data, max_pdu)]
    target = 1 + parameter % (len(messages) - 1)  # a dataset PDU
    message = bytearray(messages[target])
    (length,) = struct.unpack_from(">L", message, 2)
    if kind == "pdu_length_short":
        struct.pack_into(">L", message, 2, max(0, length - 1 - parameter % 64))
    elif kind == "pdu_length_long":
        struct.pack_into(">L", message, 2, length + 1 + parameter % 64)
    elif kind == "pdu_length_huge":
        struct.pack_into(">L", message, 2, 0xFFFFFFF0 - parameter)
    elif kind == "pdv_length":
        struct.pack_into(">L", message, 6, parameter * 0x10001)
    elif kind == "control":
        message[11] = parameter & 0xFF
    elif kind == "context_id":
        message[10] = (parameter & 0xFF) or 2
    elif kind == "oversized":
        # One PDU twice the node's maximum: PS3.8 9.3.1 lets it abort the association.
        size = 2 * (max_pdu or 1 << 17) + parameter
        padding = data + b"\0" * (size - len(data)) if len(data) < size else data
        message = bytearray(pdus.p_data_tf(pdus.pdv(context_id, 0x02, padding)))
        return [messages[0], bytes(message)]
    elif kind == "garbage_pdu":
        junk = pdus.header(0x08 + parameter % 0xF0, 4) + parameter.to_bytes(4, "big")
        return [messages[0], junk, *messages[1:]]
    elif kind == "cut":
        return [messages[0], bytes(message[: 1 + parameter % len(message)])]
    elif kind == "split":
        at = 1 + parameter % max(1, len(data) - 1)
        return [
            messages[0],
            pdus.p_data_tf(pdus.pdv(context_id, 0x00, data[:at])),
            pdus.p_data_tf(pdus.pdv(context_id, 0x02, data[at:])),
        ]
    messages[target] = bytes(message)
    return messages


@seed(20261108)
@settings(FUZZ_SETTINGS, max_examples=PDU_EXAMPLES)
@given(stream=mutated_stream(), example=mutated_dataset())
def test_broken_pdus_get_an_abort_or_a_valid_answer_and_the_node_stays_up(
    fuzz_target: FuzzTarget, stream: tuple[str, int, str], example: Example
) -> None:
    kind, parameter, what = stream
    sock, accepted = associate(fuzz_target.node.port)
    context_id = CONTEXT_IDS[example.context]
    messages = broken_stream(kind, parameter, context_id, example, accepted.max_pdu)
    try:
        for message in messages:
            sock.sendall(message)
        # A lying length leaves the node waiting for bytes that never come: say so.
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock)
    except OSError:
        answer = Answer("closed")
    finally:
        sock.close()
    fuzz_target.check_after(answer, example.uid, f"{what}; {example.note}")
