"""``config check`` runs every check ``serve`` runs before it binds, with the same words.

Measured before: ``config check`` passed an admin API on 0.0.0.0 without a token, which
``serve`` then refused; an operator who checked first still had a node that did not start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.ports import LOOPBACK, free_port

BROKEN: dict[str, tuple[dict[str, Any], str | None, str]] = {
    "admin-open-on-all-addresses": (
        {"admin": {"host": "0.0.0.0", "port": 0}},  # the mistake under test
        None,
        "admin.host is '0.0.0.0', which other machines can reach, and no admin token",
    ),
    "rule-names-an-unknown-destination": (
        {},
        "- {name: r, match: {Modality: CT}, forward_to: nowhere}\n",
        "forward_to",
    ),
    "rule-names-an-unknown-pipeline": (
        {},
        "- {name: r, match: {Modality: CT}, pipeline: nothing-by-this-name}\n",
        "pipeline",
    ),
}


def write_config(folder: Path, settings: dict[str, Any], rules: str | None) -> Path:
    document: dict[str, Any] = {
        "node": {"host": LOOPBACK, "port": free_port()},
        "storage": {"path": str(folder / "var")},
        "rules_dir": str(folder / "rules"),
        "admin": {"port": 0},
        **settings,
    }
    if rules is not None:
        (folder / "rules").mkdir(parents=True)
        (folder / "rules" / "r.yaml").write_text(rules)
    path = folder / "dicomnode.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_config_check_refuses_what_serve_refuses_with_the_same_message(
    tmp_path: Path, case: str
) -> None:
    settings, rules, expected = BROKEN[case]
    config = write_config(tmp_path, settings, rules)

    checked = run_dicomnode("config", "check", "--config", str(config))
    served = run_dicomnode("serve", "--config", str(config), timeout=60)

    assert served.returncode == 2, served.stderr
    assert expected in served.stderr
    assert checked.returncode == 2, checked.stdout + checked.stderr
    refusal = [line for line in served.stderr.splitlines() if expected in line]
    assert refusal and refusal[0] in checked.stderr.splitlines()
    assert not (tmp_path / "var").exists(), "serve touched the storage before its checks"


def test_config_check_passes_an_admin_on_all_addresses_with_a_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"admin": {"host": "0.0.0.0", "token": "s3cret"}}, None)

    checked = run_dicomnode("config", "check", "--config", str(config))

    assert checked.returncode == 0, checked.stderr
    assert "token required" in checked.stdout
    assert "s3cret" not in checked.stdout + checked.stderr


def test_config_check_reports_a_storage_in_use_as_information(
    node_process: Callable[..., NodeProcess],
) -> None:
    node = node_process().start()

    checked = run_dicomnode("config", "check", "--config", str(node.config_path))

    assert checked.returncode == 0, checked.stderr
    storage = node.config.storage.path
    assert f"storage {storage} is in use by process {node.process.pid}" in checked.stdout
    assert node.process.running
    node.stop()
    after = run_dicomnode("config", "check", "--config", str(node.config_path))
    assert after.returncode == 0, after.stderr
    assert f"storage {storage}: free" in after.stdout
