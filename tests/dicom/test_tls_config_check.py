"""``dicomnode config check`` (and ``serve``, in the same words) names ``node.tls`` and the
file at fault when the listener's key is missing or is not the certificate's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.pki import TestCA
from dicomnode.testing.ports import LOOPBACK, free_port


def write_config(folder: Path, tls: dict[str, Any]) -> Path:
    document = {
        "node": {"host": LOOPBACK, "port": free_port(), "tls": {"port": free_port(), **tls}},
        "storage": {"path": str(folder / "var")},
        "rules_dir": str(folder / "rules"),
        "admin": {"port": 0},
    }
    path = folder / "dicomnode.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("fault", ["missing", "another key", "not a key", "world-readable"])
def test_a_listener_key_that_does_not_load_is_named_with_node_tls(
    tmp_path: Path, fault: str
) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("dicomnode.test", stem="server")
    key = server.private_key
    if fault == "missing":
        key = tmp_path / "pki" / "absent.key"
        expected = f"node.tls: {key}: No such file or directory"
    elif fault == "another key":
        key = ca.issue("someone-else", stem="other").private_key
        expected = f"node.tls: {server.certificate} / {key}: not a certificate and its key"
        expected += " (key values mismatch)"
    elif fault == "not a key":
        key = tmp_path / "pki" / "certificate-as.key"  # a PEM file, but a certificate
        key.touch(mode=0o600)
        key.write_bytes(ca.certificate.read_bytes())
        expected = f"node.tls: {server.certificate} / {key}: not a certificate and its key"
    else:
        key.chmod(0o644)
        expected = f"node.tls: {key}: a private key that other users may read or change"
    config = write_config(
        tmp_path,
        {
            "certificate": str(server.certificate),
            "private_key": str(key),
            "ca_certificates": str(ca.certificate),
        },
    )

    checked = run_dicomnode("config", "check", "--config", str(config))
    served = run_dicomnode("serve", "--config", str(config), timeout=60)

    assert checked.returncode == 2, checked.stdout + checked.stderr
    (line,) = [line for line in checked.stderr.splitlines() if "node.tls" in line]
    assert expected in line
    assert "_ssl.c" not in line  # OpenSSL's source location is no use to an operator
    assert served.returncode == 2, served.stderr
    # The same words from "node.tls" on (``serve`` names its file "configuration").
    assert line[line.index("node.tls") :] in served.stderr
    assert not (tmp_path / "var").exists(), "serve touched the storage before its checks"


def test_config_check_passes_a_listener_whose_files_load(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("dicomnode.test", stem="server")
    config = write_config(
        tmp_path,
        {
            "certificate": str(server.certificate),
            "private_key": str(server.private_key),
            "ca_certificates": str(ca.certificate),
        },
    )

    checked = run_dicomnode("config", "check", "--config", str(config))

    assert checked.returncode == 0, checked.stdout + checked.stderr
