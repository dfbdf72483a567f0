"""Token files: read once at start, owner-only, never shown; a bad one stops ``serve``."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.admin import read_tokens
from dicomnode.admin.tokens import Credential, Tokens
from dicomnode.config import AdminConfig, Config
from dicomnode.errors import ConfigError
from dicomnode.node import check_config
from dicomnode.testing.cli import run_dicomnode
from dicomnode.testing.ports import LOOPBACK


def token_file(folder: Path, name: str, value: str, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(f"{value}\n")
    path.chmod(mode)
    return path


def admin(**settings: Any) -> AdminConfig:
    return AdminConfig.model_validate(settings)


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "readable by every user"),
        (0o604, "readable by every user"),
        (0o666, "readable by every user"),
        (0o620, "writable by other users"),
        (0o602, "writable by other users"),
        (0o601, "open to other users"),
    ],
)
def test_a_token_file_others_may_read_or_change_is_refused_with_the_fix(
    tmp_path: Path, mode: int, problem: str
) -> None:
    value = secrets.token_hex(32)
    path = token_file(tmp_path, "ops.token", value, mode)
    with pytest.raises(ConfigError) as refused:
        read_tokens(admin(tokens=[{"file": str(path), "role": "admin"}]))
    message = str(refused.value)
    assert message.startswith(f"admin.tokens[0]: {path} is {problem} (mode {mode:04o})")
    assert f"run `chmod 600 {path}`" in message
    assert value not in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_owner_only_and_group_readable_token_files_are_read(tmp_path: Path, mode: int) -> None:
    """Group read is the usual root:dicomnode 0640 layout of a service's secrets."""
    path = token_file(tmp_path, "ops.token", "s3cret-token", mode)
    tokens = read_tokens(admin(token_file=str(path)))
    assert tokens.match("s3cret-token") == Credential("ops.token", "admin", b"s3cret-token")


def test_every_kind_of_token_is_read_with_its_name_and_role(tmp_path: Path) -> None:
    viewer = token_file(tmp_path, "ward.token", "viewer-token")
    ops = token_file(tmp_path, "ops.token", "ops-token")
    tokens = read_tokens(
        admin(
            token="inline-token",  # noqa: S106 - a test token
            tokens=[
                {"file": str(viewer)},  # role viewer by default, named after the file
                {"file": str(ops), "role": "admin", "name": "on-call"},
            ],
        )
    )
    assert [(c.name, c.role) for c in tokens.credentials] == [
        ("admin.token", "admin"),
        ("ward.token", "viewer"),
        ("on-call", "admin"),
    ]
    assert tokens.match("viewer-token") is tokens.credentials[1]
    assert tokens.match("ops-token") is tokens.credentials[2]
    for wrong in ("", "ops-toke", "ops-token ", "ops-tokenx", "OPS-TOKEN", "\udcff"):
        assert tokens.match(wrong) is None, wrong
    assert tokens.describe() == "2 admin, 1 viewer"
    assert not Tokens() and tokens


def test_a_token_never_shows_in_a_repr_or_an_error(tmp_path: Path) -> None:
    tokens = read_tokens(admin(tokens=[{"file": str(token_file(tmp_path, "a", "abc123"))}]))
    assert "abc123" not in repr(tokens)
    bad = token_file(tmp_path, "bad", "two words")
    with pytest.raises(ConfigError, match=r"admin\.tokens\[0\] .*bad: a token is one word") as e:
        read_tokens(admin(tokens=[{"file": str(bad)}]))
    assert "two words" not in str(e.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "same-token", "tokens": [{"file": "same"}]}, "is the same as another"),
        ({"tokens": [{"file": "a", "name": "x"}, {"file": "b", "name": "x"}]}, "two tokens"),
        ({"tokens": [{"file": "empty"}]}, "the token is empty"),
        ({"tokens": [{"file": "missing"}]}, "cannot read"),
        ({"token": "  "}, "admin.token: the token is empty"),
    ],
)
def test_ambiguous_or_empty_tokens_are_refused(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    token_file(tmp_path, "same", "same-token")
    token_file(tmp_path, "a", "token-a")
    token_file(tmp_path, "b", "token-b")
    token_file(tmp_path, "empty", "  ")
    for entry in settings.get("tokens", []):
        entry["file"] = str(tmp_path / entry["file"])
    with pytest.raises(ConfigError, match=message):
        read_tokens(admin(**settings))


def test_check_config_reads_the_token_files_relative_to_the_configuration(
    tmp_path: Path,
) -> None:
    token_file(tmp_path, "ops.token", "ops-token")
    config = Config.model_validate(
        {"admin": {"host": "0.0.0.0", "tokens": [{"file": "ops.token", "role": "admin"}]}}
    ).resolved(tmp_path)
    checked = check_config(config)
    assert checked.admin_access is not None
    assert checked.admin_access.tokens.match("ops-token") is not None


def write_config(folder: Path, token: dict[str, Any]) -> Path:
    path = folder / "dicomnode.yaml"
    document = {
        "node": {"host": LOOPBACK, "port": 0},
        "storage": {"path": str(folder / "var")},
        "rules_dir": str(folder / "rules"),
        "admin": {"port": 0, **token},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_world_readable_token_file_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    value = secrets.token_hex(32)
    path = token_file(tmp_path, "admin.token", value, 0o644)
    config = write_config(tmp_path, {"tokens": [{"file": "admin.token", "role": "admin"}]})
    result = run_dicomnode("serve", "--config", str(config), timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"admin.tokens[0]: {path} is readable by every user (mode 0644)" in result.stderr
    assert f"chmod 600 {path}" in result.stderr
    assert value not in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()  # stopped before it touched the storage


def test_config_show_prints_an_inline_token_as_stars(tmp_path: Path) -> None:
    value = secrets.token_hex(16)
    result = run_dicomnode(
        "config", "show", "--config", str(write_config(tmp_path, {"token": value}))
    )
    assert result.returncode == 0, result.stderr
    assert value not in result.stdout
    assert "token: '**********'" in result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "a-token", "token_file": "b"}, "give token or token_file, not both"),
        ({"allowed_hosts": ["https://admin.example.org"]}, "is not a host name"),
        ({"allowed_hosts": ["admin.example.org/ui"]}, "is not a host name"),
    ],
)
def test_admin_settings_that_cannot_mean_what_was_meant_are_refused(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        admin(**settings)
