"""Receiving over DICOM-TLS (issue 12): DCMTK storescu ``+tls`` with mutual TLS, callers
bound to a certificate subject, TLS records that carry several PDUs, and certificates
replaced on disk (or reloaded on SIGHUP) without a restart.

The node runs in this process (its logs read with ``capture_logs``), except where a
signal must reach it: that test runs ``dicomnode serve`` in its own process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pynetdicom.dsutils import split_dataset
from structlog.testing import capture_logs

from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom, write_small_instances
from dicomnode.testing import pdus
from dicomnode.testing.hostile import events
from dicomnode.testing.node import NODE_AE, NodeProcess
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.ports import LOOPBACK, free_port, wait_for_port
from dicomnode.testing.process import poll_until
from dicomnode.testing.storescu import storescu
from dicomnode.testing.storescu_log import acknowledged_uids, parse_storescu_log
from dicomnode.testing.tls_clients import client_context, dcmtk_tls_args, server_certificate


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: Issued
    ct1: Issued  # CN=ct1,O=Hospital
    ct2: Issued  # CN=ct2,O=Hospital: the same CA, another subject


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = TestCA(tmp_path / "pki")
    return Pki(
        ca=ca,
        server=ca.issue("dicomnode.test", stem="server"),
        ct1=ca.issue("ct1", organization="Hospital", stem="ct1"),
        ct2=ca.issue("ct2", organization="Hospital", stem="ct2"),
    )


def tls_config(pki: Pki, port: int = 0) -> dict[str, Any]:
    return {
        "port": port,
        "certificate": str(pki.server.certificate),
        "private_key": str(pki.server.private_key),
        "ca_certificates": str(pki.ca.certificate),
    }


@pytest.fixture
def tls_node(node_factory: Callable[..., Node], pki: Pki) -> Node:
    return node_factory(node={"tls": tls_config(pki)})


def tls_port(node: Node) -> int:
    port = node.scp.tls_port
    assert port is not None
    return port


def store_over_tls(
    port: int,
    paths: list[Path],
    pki: Pki,
    client: Issued | None,
    calling_ae: str = "MODALITY",
) -> subprocess.CompletedProcess[str]:
    return storescu(
        paths,
        ae_title=NODE_AE,
        port=port,
        calling_ae=calling_ae,
        propose="uncompressed",
        extra_args=dcmtk_tls_args(pki.ca.certificate, client),
        timeout=300,
    )


def acknowledged(result: subprocess.CompletedProcess[str]) -> set[str]:
    return acknowledged_uids(parse_storescu_log(result.stdout))


def uids_of(paths: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def api(node: Node, path: str) -> Any:
    assert node.admin is not None
    with urllib.request.urlopen(f"http://{LOOPBACK}:{node.admin.port}{path}", timeout=10) as r:
        return json.load(r)


def test_the_real_ct_over_mutual_tls_is_stored_in_full(
    tls_node: Node, pki: Pki, real_ct_images: list[Path]
) -> None:
    result = store_over_tls(tls_port(tls_node), real_ct_images, pki, pki.ct1)

    assert result.returncode == 0, result.stdout[-3000:]
    assert acknowledged(result) == uids_of(real_ct_images)
    assert tls_node.index.count_instances() == len(real_ct_images) == 28
    (series,) = api(tls_node, "/api/series")
    assert series["instance_count"] == 28
    assert api(tls_node, "/api/overview")["node"]["dicom_tls_port"] == tls_port(tls_node)


def test_hundreds_of_small_instances_over_tls_arrive_without_a_stall(
    tls_node: Node, pki: Pki, tmp_path: Path
) -> None:
    # A reader that waited on select() for bytes OpenSSL had already decrypted would sit
    # out the node's idle time-out (5 s here) and abort: fewer than all would be stored.
    paths = list(write_small_instances(tmp_path / "small", count=300))

    result = store_over_tls(tls_port(tls_node), paths, pki, pki.ct1)

    assert result.returncode == 0, result.stdout[-3000:]
    assert acknowledged(result) == uids_of(paths)
    assert tls_node.index.count_instances() == 300


def _status(body: bytes) -> int | None:
    """The Status (0000,0900) of a response command set in a P-DATA-TF's body."""
    at = body.find(struct.pack("<HHL", 0, 0x0900, 2))
    return None if at < 0 else int(struct.unpack_from("<H", body, at + 8)[0])


def _echo_command(message_id: int) -> bytes:
    """A C-ECHO-RQ command set (PS3.7 9.3.5.1), Implicit VR Little Endian."""

    def element(element_tag: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0, element_tag, len(value)) + value

    body = b"".join(
        (
            element(0x0002, pdus.VERIFICATION + b"\0"),
            element(0x0100, struct.pack("<H", 0x0030)),
            element(0x0110, struct.pack("<H", message_id)),
            element(0x0800, struct.pack("<H", 0x0101)),  # no dataset
        )
    )
    return element(0x0000, struct.pack("<L", len(body))) + body


def test_pdus_that_share_tls_records_are_all_served(
    tls_node: Node, pki: Pki, tmp_path: Path
) -> None:
    # Senders that buffer their output (dcm4che's, say) let one TLS record (16 KiB at
    # most) carry the end of one PDU and the next ones. Here every message goes in one
    # write, a C-ECHO last: the final record holds the tail of the last dataset, which
    # the node reads to its exact length, and the whole C-ECHO after it, which OpenSSL
    # has then decrypted already while the socket has nothing more: a reader that asks
    # select() only would wait for bytes that never come, and never answer the C-ECHO.
    paths = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=12, rows=96, columns=96)).paths
    messages = []
    for number, path in enumerate(paths, 1):
        _meta, offset = split_dataset(path)
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID).encode()
        messages.append(pdus.p_data_tf(pdus.pdv(1, 0x03, pdus.store_command(uid, number))))
        messages.append(pdus.p_data_tf(pdus.pdv(1, 0x02, path.read_bytes()[offset:])))
    messages.append(pdus.p_data_tf(pdus.pdv(3, 0x03, _echo_command(len(paths) + 1))))
    request = pdus.associate_rq(
        calling=b"MODALITY",
        items=(
            pdus.application_context(),
            pdus.presentation_context(1, pdus.CT_IMAGE_STORAGE, (pdus.EXPLICIT_LE,)),
            pdus.presentation_context(3, pdus.VERIFICATION, (pdus.IMPLICIT_LE,)),
            pdus.user_information(128 * 1024),
        ),
    )
    context = client_context(pki.ca.certificate, pki.ct1)
    with (
        socket.create_connection((LOOPBACK, tls_port(tls_node)), timeout=30) as raw,
        context.wrap_socket(raw) as sock,
    ):
        sock.sendall(request)
        accepted = pdus.read_pdu(sock)
        assert accepted is not None and accepted.pdu_type == pdus.ASSOCIATE_AC, accepted
        sock.sendall(b"".join(messages))
        answers = [pdus.read_pdu(sock, timeout=30) for _ in range(len(paths) + 1)]
        sock.sendall(pdus.release_rq())
        released = pdus.read_pdu(sock, timeout=30)
    assert all(a is not None and a.pdu_type == pdus.P_DATA_TF for a in answers), answers
    assert [_status(a.body) for a in answers if a is not None] == [0] * (len(paths) + 1)
    assert released is not None and released.pdu_type == pdus.RELEASE_RP
    assert tls_node.index.count_instances() == len(paths)


# -- callers bound to a certificate subject ---------------------------------------------


def test_a_caller_bound_to_a_certificate_subject_is_accepted_with_that_certificate_only(
    node_factory: Callable[..., Node], pki: Pki, tmp_path: Path
) -> None:
    node = node_factory(
        node={"tls": tls_config(pki)},
        callers=[{"ae_title": "CT1", "certificate_subject": "CN=ct1,O=Hospital"}, "PLAIN"],
    )
    paths = list(
        write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16)).paths
    )
    port, plain_port = tls_port(node), node.scp.port
    assert plain_port is not None

    with capture_logs() as logged:
        accepted = store_over_tls(port, paths, pki, pki.ct1, calling_ae="CT1")
        other_subject = store_over_tls(port, paths, pki, pki.ct2, calling_ae="CT1")
        no_certificate = storescu(
            paths, ae_title=NODE_AE, port=plain_port, calling_ae="CT1", propose="uncompressed"
        )
        unbound_over_tls = store_over_tls(port, paths, pki, pki.ct2, calling_ae="PLAIN")

    assert accepted.returncode == 0 and acknowledged(accepted) == uids_of(paths)
    assert unbound_over_tls.returncode == 0 and acknowledged(unbound_over_tls) == uids_of(paths)
    for refused in (other_subject, no_certificate):
        assert refused.returncode != 0 and not acknowledged(refused)
        assert "Association Rejected" in refused.stdout
    rejected = [e for e in logged if e["event"] == "association_rejected"]
    assert [(e["reason"], e["peer_ae"]) for e in rejected] == [("caller_not_allowed", "CT1")] * 2
    assert rejected[0]["detail"].endswith("(certificate CN=ct2,O=Hospital)")
    assert "certificate" not in rejected[1]["detail"].partition("callers")[2]  # plain: none
    assert node.index.count_instances() == len(paths)


# -- certificates replaced on disk ------------------------------------------------------


def _common_name(certificate: x509.Certificate) -> str:
    (attribute,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def _move_into_place(new: Issued, target: Issued, *, key: bool = True) -> None:
    """Replace ``target``'s files by ``new``'s as an operator's renewal script does
    (rename over: each file is whole, its inode new)."""
    if key:
        new.private_key.replace(target.private_key)
    new.certificate.replace(target.certificate)


def test_a_certificate_replaced_on_disk_is_used_for_the_next_association(
    tls_node: Node, pki: Pki, tmp_path: Path
) -> None:
    port = tls_port(tls_node)
    before = server_certificate(port, pki.ca.certificate, pki.ct1)
    assert _common_name(before) == "dicomnode.test"
    renewed = pki.ca.issue("dicomnode-renewed.test", stem="renewed")

    with capture_logs() as logged:
        _move_into_place(renewed, pki.server)
        after = server_certificate(port, pki.ca.certificate, pki.ct1)
        paths = list(
            write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16)).paths
        )
        stored = store_over_tls(port, paths, pki, pki.ct1)

    assert _common_name(after) == "dicomnode-renewed.test"
    assert after.serial_number != before.serial_number
    assert stored.returncode == 0 and acknowledged(stored) == uids_of(paths)
    reloads = [e for e in logged if e["event"].startswith("tls_reload")]
    assert [(e["event"], e["trigger"]) for e in reloads] == [("tls_reloaded", "file_changed")]


def test_a_replacement_that_does_not_load_keeps_the_old_certificate(
    tls_node: Node, pki: Pki, tmp_path: Path
) -> None:
    port = tls_port(tls_node)
    before = server_certificate(port, pki.ca.certificate, pki.ct1)
    renewed = pki.ca.issue("dicomnode-renewed.test", stem="renewed")
    paths = list(
        write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16)).paths
    )

    with capture_logs() as logged:
        _move_into_place(renewed, pki.server, key=False)  # half done: its key not yet there
        during = [server_certificate(port, pki.ca.certificate, pki.ct1) for _ in range(3)]
        stored = store_over_tls(port, paths, pki, pki.ct1)
        renewed.private_key.replace(pki.server.private_key)  # the renewal completed
        after = server_certificate(port, pki.ca.certificate, pki.ct1)

    assert {c.serial_number for c in during} == {before.serial_number}
    assert stored.returncode == 0 and acknowledged(stored) == uids_of(paths)
    assert (
        after.serial_number
        == x509.load_pem_x509_certificate(pki.server.certificate.read_bytes()).serial_number
        != before.serial_number
    )
    reloads = [e for e in logged if e["event"].startswith("tls_reload")]
    # Once per change of the files, not once per connection.
    assert [(e["event"], e["trigger"]) for e in reloads] == [
        ("tls_reload_failed", "file_changed"),
        ("tls_reloaded", "file_changed"),
    ]
    assert "key values mismatch" in reloads[0]["error"]
    assert str(pki.server.private_key) in reloads[0]["error"]


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """New content under the same inode, size and modification time: a change only a
    reload on request (SIGHUP) can notice."""
    stat = path.stat()
    assert len(data) == stat.st_size
    with path.open("r+b") as file:
        file.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _same_size_renewal(ca: TestCA, current: Issued) -> Issued:
    """A new certificate and key whose files are exactly as long as ``current``'s (an
    ECDSA signature's length varies by a byte or two: issue until one fits)."""
    sizes = (current.certificate.stat().st_size, current.private_key.stat().st_size)
    for attempt in range(200):
        # A common name as long as the old one, so only the signature's length varies.
        renewed = ca.issue("dicomnode.tes2", stem=f"renewal-{attempt}")
        if (renewed.certificate.stat().st_size, renewed.private_key.stat().st_size) == sizes:
            return renewed
    raise AssertionError("no renewal of the same file sizes in 200 tries")


def test_sighup_reloads_certificates_the_file_check_cannot_see_changed(
    node_process: Callable[..., NodeProcess], pki: Pki
) -> None:
    port = free_port()
    node = node_process(node={"tls": tls_config(pki, port)}).start()
    wait_for_port(port, timeout=30)
    before = server_certificate(port, pki.ca.certificate, pki.ct1)
    renewed = _same_size_renewal(pki.ca, pki.server)
    _rewrite_in_place(pki.server.private_key, renewed.private_key.read_bytes())
    _rewrite_in_place(pki.server.certificate, renewed.certificate.read_bytes())
    unnoticed = server_certificate(port, pki.ca.certificate, pki.ct1)

    node.process.popen.send_signal(signal.SIGHUP)
    poll_until(lambda: bool(events(node, "tls_reloaded")), timeout=15, what="tls_reloaded")
    after = server_certificate(port, pki.ca.certificate, pki.ct1)

    assert unnoticed.serial_number == before.serial_number
    assert after.serial_number != before.serial_number
    assert _common_name(after) == "dicomnode.tes2"
    (reloaded,) = events(node, "tls_reloaded")
    assert (reloaded["trigger"], reloaded["context"]) == ("signal", "listener")
    assert events(node, "node_reloading")
    assert node.process.running
    assert not events(node, "tls_reload_failed")


def test_sighup_with_files_that_do_not_load_keeps_serving_the_old_certificate(
    node_process: Callable[..., NodeProcess], pki: Pki
) -> None:
    port = free_port()
    node = node_process(node={"tls": tls_config(pki, port)}).start()
    wait_for_port(port, timeout=30)
    before = server_certificate(port, pki.ca.certificate, pki.ct1)
    renewed = _same_size_renewal(pki.ca, pki.server)
    _rewrite_in_place(pki.server.certificate, renewed.certificate.read_bytes())  # not its key

    node.process.popen.send_signal(signal.SIGHUP)
    poll_until(lambda: bool(events(node, "tls_reload_failed")), timeout=15, what="the failure")

    assert server_certificate(port, pki.ca.certificate, pki.ct1).serial_number == (
        before.serial_number
    )
    (failed,) = events(node, "tls_reload_failed")
    assert (failed["trigger"], failed["context"]) == ("signal", "listener")
    assert "key values mismatch" in failed["error"]
    assert not events(node, "tls_reloaded")
    assert node.process.running
