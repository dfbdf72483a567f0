"""``dicomnode echo`` and ``send`` over DICOM-TLS, against the node's own TLS listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.pki import Issued, TestCA
from dicomnode.testing.process import poll_until


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        self.node = self.ca.issue("dicomnode", stem="node")
        self.operator = self.ca.issue("operator", stem="operator")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_node(node_factory: Callable[..., Node], pki: Pki) -> Node:
    """A node with its plain port and a DICOM-TLS port that requires client certificates."""
    return node_factory(
        node={
            "tls": {
                "port": 0,
                "certificate": str(pki.node.certificate),
                "private_key": str(pki.node.private_key),
                "ca_certificates": str(pki.ca.certificate),
            }
        }
    )


def tls_args(pki: Pki, client: Issued | None) -> list[str]:
    args = ["--tls-ca", str(pki.ca.certificate)]
    if client is not None:
        args += ["--tls-cert", str(client.certificate), "--tls-key", str(client.private_key)]
    return args


def test_echo_over_tls_and_what_each_mistake_says(tls_node: Node, pki: Pki) -> None:
    tls_port, plain_port = tls_node.scp.tls_port, tls_node.scp.port
    ok = run_dicomnode("echo", f"DICOMNODE@127.0.0.1:{tls_port}", *tls_args(pki, pki.operator))
    assert ok.returncode == 0, ok.stderr
    assert "C-ECHO OK (0x0000)" in ok.stdout

    plain = run_dicomnode("echo", f"DICOMNODE@127.0.0.1:{plain_port}", *tls_args(pki, pki.operator))
    assert plain.returncode == 1, plain.stdout
    assert f"DICOMNODE@127.0.0.1:{plain_port}: TLS: " in plain.stderr, plain.stderr
    assert f"(--tls-ca {pki.ca.certificate})" in plain.stderr

    anonymous = run_dicomnode("echo", f"DICOMNODE@127.0.0.1:{tls_port}", *tls_args(pki, None))
    assert anonymous.returncode == 1
    assert "TLS: the peer sent tlsv13 alert certificate required" in anonymous.stderr

    wrong_name = run_dicomnode(
        "echo",
        f"DICOMNODE@127.0.0.1:{tls_port}",
        *tls_args(pki, pki.operator),
        "--tls-server-name",
        "pacs.example.org",
    )
    assert wrong_name.returncode == 1
    assert "TLS: certificate verify failed: Hostname mismatch" in wrong_name.stderr

    half = run_dicomnode(
        "echo", f"DICOMNODE@127.0.0.1:{tls_port}", "--tls-cert", str(pki.operator.certificate)
    )
    assert half.returncode == 2
    assert "--tls-cert and --tls-key go together" in half.stderr


def test_echo_to_a_destination_uses_its_tls_settings(
    tls_node: Node, pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(
        "destinations:\n"
        "  self:\n"
        f"    ae_title: DICOMNODE\n    host: 127.0.0.1\n    port: {tls_node.scp.tls_port}\n"
        "    tls:\n"
        f"      ca_certificates: {pki.ca.certificate}\n"
        f"      certificate: {pki.operator.certificate}\n"
        f"      private_key: {pki.operator.private_key}\n"
    )
    result = run_dicomnode("echo", "self", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "C-ECHO OK" in result.stdout


def test_send_over_tls_stores_the_files(tls_node: Node, pki: Pki, tmp_path: Path) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=3, rows=16, columns=16))
    target = f"DICOMNODE@127.0.0.1:{tls_node.scp.tls_port}"
    result = run_dicomnode(
        "send", str(tmp_path / "ct"), "--to", target, "--quiet", *tls_args(pki, pki.operator)
    )
    assert result.returncode == 0, result.stderr
    assert f"{target}: 3 of 3 sent, 0 failed, 0 skipped" in result.stdout
    series_uid = str(pydicom.dcmread(series.paths[0]).SeriesInstanceUID)

    def stored() -> bool:
        found = tls_node.index.find_series(series_uid)
        return found is not None and found.instance_count == 3

    poll_until(stored, timeout=30, what="the sent series in the node's index")

    refused = run_dicomnode(
        "send", str(tmp_path / "ct"), "--to", target, "--quiet", *tls_args(pki, None)
    )
    assert refused.returncode == 1
    assert f"{target}: TLS: the peer sent tlsv13 alert certificate required" in refused.stderr
