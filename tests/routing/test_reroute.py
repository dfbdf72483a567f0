"""Routing again: a series stored before its rule existed is routed by ``reroute``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.admin import AuditLog
from dicomnode.cli import main
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.dcmtk import StoreSCP
from dicomnode.testing.process import poll_until

# Each test runs on every index backend (SQLite, PostgreSQL through both drivers).
pytestmark = pytest.mark.usefixtures("database_url")

NOT_CT = "- {name: mr-to-archive, match: {Modality: MR}, forward_to: [archive]}\n"
CT = "- {name: ct-to-archive, match: {Modality: CT}, forward_to: [archive]}\n"


def cli_config(node: Node, folder: Path) -> Path:
    """The node's storage, index, rules and destinations, for commands run beside it."""
    config = node.config
    path = folder / "cli.yaml"
    data = {
        "storage": {"path": str(config.storage.path)},
        "database": {"url": config.database_url},
        "rules_dir": str(config.rules_dir),
        "destinations": {
            name: {"ae_title": d.ae_title, "host": d.host, "port": d.port}
            for name, d in config.destinations.items()
        },
    }
    path.write_text(yaml.safe_dump(data))
    return path


def send_phantom(folder: Path, port: int) -> str:
    spec = CTPhantomSpec(slices=4, rows=16, columns=16, seed=3, series_description="LATE RULE")
    series = write_ct_phantom(folder, spec)
    files = [inspect_file(p) for p in series.paths]
    results = send_files(
        [f for f in files if isinstance(f, SendableFile)],
        parse_address(f"DICOMNODE@127.0.0.1:{port}"),
    )
    assert all(r.ok for r in results), [r.note for r in results if not r.ok]
    return str(series.series_instance_uid)


def decision_of(node: Node, uid: str) -> dict[str, Any] | None:
    summary = node.index.find_series(uid)
    decisions = node.router.decisions(summary.id) if summary else []
    return decisions[-1] if decisions else None


def test_a_series_stored_before_its_rule_is_routed_again_and_audited(
    node_factory: Callable[..., Node], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(NOT_CT)
    with StoreSCP(ae_title="ARCHIVE") as archive:
        node = node_factory(
            destinations={
                "archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}
            }
        )
        config = str(cli_config(node, tmp_path))
        uid = send_phantom(tmp_path / "ct", node.scp.port)
        poll_until(lambda: decision_of(node, uid), timeout=30, what="the first decision")
        assert decision_of(node, uid)["unrouted"] is True  # type: ignore[index]

        before = node.rules.current.version
        (rules / "rules.yaml").write_text(CT)
        poll_until(lambda: node.rules.current.version != before, timeout=20, what="a reload")

        # A dry run says what would match now, and changes nothing.
        assert main(["reroute", "--dry-run", "--series", uid, "--config", config]) == 0
        assert f"series {uid} version 1: matches ct-to-archive" in capsys.readouterr().out
        assert decision_of(node, uid)["unrouted"] is True  # type: ignore[index]
        assert node.outbox.queue.list_sends(None) == []
        assert AuditLog(node.database).entries() == []

        assert main(["reroute", "--series", uid, "--config", config]) == 0
        assert "queued to be routed again" in capsys.readouterr().out
        node.router.notify()  # on SQLite a command cannot wake the node (it polls in 10 s)
        archive.wait_for_files(4, timeout=30)

    decision = decision_of(node, uid)
    assert decision is not None
    assert (decision["unrouted"], decision["forward_to"]) == (False, ["archive"])
    assert decision["rerouted"] is True and decision["rerouted_by"].endswith("(cli)")
    assert decision["replaced"][0]["unrouted"] is True
    assert decision["rules_version"] == node.rules.current.version
    (entry,) = AuditLog(node.database).entries()
    assert (entry.action, entry.target, entry.actor) == (
        "series.reroute",
        uid,
        decision["rerouted_by"],
    )

    # Usage errors: an unknown series, a time that is not one.
    assert main(["reroute", "--series", "1.2.3.999", "--config", config]) == 2
    assert "no stored series with UID 1.2.3.999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["reroute", "--since", "yesterday", "--config", config])
    assert exited.value.code == 2
    assert "'yesterday' is not an ISO 8601 time" in capsys.readouterr().err


def test_a_version_not_yet_routed_is_refused_and_a_reroute_is_queued_once(
    node_factory: Callable[..., Node], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(textwrap.dedent(NOT_CT))
    node = node_factory(
        destinations={"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": 9}}
    )
    config = str(cli_config(node, tmp_path))
    uid = send_phantom(tmp_path / "ct", node.scp.port)
    poll_until(lambda: decision_of(node, uid), timeout=30, what="the first decision")
    node.router.stop()  # nothing routes what is queued next: it stays waiting

    assert main(["reroute", "--since", "2000-01-01T00:00", "--config", config]) == 0
    assert f"series {uid} version 1: queued" in capsys.readouterr().out
    # Queued once: a second re-route is refused while the first waits, and says why.
    assert main(["reroute", "--series", uid, "--config", config]) == 1
    assert "version 1 is waiting to be routed" in capsys.readouterr().err
    assert [e.action for e in AuditLog(node.database).entries()] == ["series.reroute"]
