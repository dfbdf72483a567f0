"""Configuration: every key defaulted, unknown keys refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dicomnode.config import Config, load_config, parse_config
from dicomnode.errors import ConfigError
from dicomnode.pipeline.definition import parse_pipelines, reference_definitions


def test_no_file_is_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.node.ae_title == "DICOMNODE"
    assert config.node.port == 11112
    assert config.storage.path == tmp_path / "var"
    assert config.rules_dir == tmp_path / "rules"
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'dicomnode.db'}"
    assert config.callers == ()


def test_the_contract_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "node: {ae_title: ROUTER, host: 127.0.0.1, port: 11200}\n"
        "storage: {path: spool}\n"
        "callers: [PACS, 'CT1@10.1.2.3', {ae_title: MR1, host: 10.1.2.4}]\n"
        "completion:\n"
        "  quiet_seconds: 20\n"
        "  settle_seconds: 3\n"
        "  max_wait_seconds: 600\n"
        "  by_modality: {MR: {quiet_seconds: 60}}\n"
        "destinations:\n"
        "  pacs: {ae_title: PACS, host: 127.0.0.1, port: 4242}\n"
        "rules_dir: my-rules\n"
    )
    config = load_config(path)
    assert (config.node.ae_title, config.node.port) == ("ROUTER", 11200)
    assert config.storage.path == tmp_path / "spool"  # relative to the file's folder
    assert config.rules_dir == tmp_path / "my-rules"
    assert [(c.ae_title, c.host) for c in config.callers] == [
        ("PACS", None),
        ("CT1", "10.1.2.3"),
        ("MR1", "10.1.2.4"),
    ]
    assert config.allows_caller("PACS", "10.9.9.9")
    assert config.allows_caller("CT1", "10.1.2.3")
    assert not config.allows_caller("CT1", "10.1.2.99")
    assert not config.allows_caller("UNKNOWN", "10.1.2.3")
    assert config.completion.policy_for("MR").quiet_seconds == 60
    assert config.completion.policy_for("MR").settle_seconds == 3
    assert config.completion.policy_for("CT").quiet_seconds == 20
    assert config.destinations["pacs"].port == 4242


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node:\n  port: 70000\n", "x.yaml:2: node.port: Input should be less than or equal"),
        ("node:\n  colour: blue\n", "x.yaml:2: node.colour: unknown key"),
        ("storage: {path: a}\nextra_top: 1\n", "x.yaml:2: extra_top: unknown key"),
        ("node:\n  ae_title: WAY_TOO_LONG_AE_TITLE\n", "x.yaml:2: node.ae_title: Value error"),
        ("callers:\n  - ae_title: 'A\\\\B'\n", "x.yaml:2: callers.0.ae_title: Value error"),
        (
            "destinations:\n  pacs:\n    ae_title: PACS\n    host: h\n",
            "x.yaml:2: destinations.pacs.port: Field required",
        ),
        ("completion:\n  quiet_seconds: -1\n", "x.yaml:2: completion.quiet_seconds"),
        ("node: [1, 2]\n", "x.yaml:1: node: Input should be a valid dictionary"),
        ("node: {port: 1\n", "x.yaml:2: not valid YAML"),
        ("- 1\n- 2\n", "x.yaml:1: the configuration must be a mapping"),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, Path("x.yaml"))
    assert expected in str(raised.value)


def test_names_the_index_cannot_hold_are_refused_when_the_file_loads() -> None:
    """Destination and pipeline names live in 64-character index columns: PostgreSQL would
    refuse a longer one at the first send or job, long after the file was accepted."""
    long_name = "d" * 65
    destination = f"destinations:\n  {long_name}: {{ae_title: PACS, host: h, port: 104}}\n"
    with pytest.raises(ConfigError, match="at most 64"):
        parse_config(destination, Path("x.yaml"))
    parse_config(destination.replace(long_name, long_name[:64]), Path("x.yaml"))

    _, pipelines = reference_definitions()
    definition = next(iter(pipelines.values())).model_dump()
    with pytest.raises(ConfigError, match=f"pipelines.{long_name}: .*at most 64"):
        parse_pipelines({long_name: definition}, "x.yaml")
    assert parse_pipelines({long_name[:64]: definition}, "x.yaml")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("node:\n  port: 0.5\n  nope: 1\nrules_dirr: x\n", Path("x.yaml"))
    lines = str(raised.value).splitlines()
    assert len(lines) == 3


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_the_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.node.port = 1  # type: ignore[misc]
