"""``dicomnode rules check|explain`` and ``echo NAME``, as an administrator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.node import Node
from dicomnode.testing.cli import run_dicomnode as dicomnode

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "examples" / "dicomnode.yaml"


def test_the_example_rules_pass_check_with_the_example_config() -> None:
    result = dicomnode("rules", "check", "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stderr
    assert "OK (7 rules in 3 files" in result.stdout


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("- {name: a, match: {Modalty: CT}, forward_to: [pacs]}", 1, "a.match.Modalty",
         "did you mean Modality"),
        ("- name: a\n  match: {SeriesDescription: {regex: '(unclosed'}}\n  forward_to: pacs",
         2, "a.match.SeriesDescription.regex", "regex"),
        ("- {name: a, match: {}, forward_to: [pacz]}", 1, "a.forward_to[0]",
         "unknown destination 'pacz'"),
        ("- {name: a, match: {}, forward_to: pacs}\n- {name: a, match: {}, forward_to: pacs}",
         2, "a.name", "duplicate rule name"),
        ("- {name: a, match: {}, forward_to: pacs, priority: high}", 1, "a.priority", ""),
        ("- {name: a, match: {SliceThickness: {min: 5, max: 1}}, forward_to: pacs}", 1,
         "a.match.SliceThickness", ""),
    ],
)  # fmt: skip
def test_rules_check_names_file_line_and_key_of_each_mistake(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "broken.yaml").write_text(text + "\n")
    result = dicomnode("rules", "check", str(folder), "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 2
    expected = f"{folder / 'broken.yaml'}:{line}: {key}:"
    assert expected in result.stderr, result.stderr
    assert message in result.stderr


def test_rules_explain_on_the_real_ct_names_the_match_and_the_failing_condition(
    real_ct_dir: Path,
) -> None:
    result = dicomnode("rules", "explain", str(real_ct_dir), "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.stderr
    assert "MATCH     ct-brain-forward" in result.stdout
    assert "no match  ct-tissue-composition" in result.stdout
    assert "SeriesDescription is STD BRAIN 5MM: regex '(?i)abd|chest|body' fails" in result.stdout
    assert "forward to: pacs" in result.stdout


def test_rules_explain_a_stored_series(node_factory: object, tmp_path: Path) -> None:
    from dicomnode.dicom.address import parse_address
    from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
    from dicomnode.phantom import CTPhantomSpec, write_ct_phantom

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "- {name: thin, match: {SliceThickness: {max: 1}}, forward_to: pacs}\n"
        "- {name: from-modality, match: {CallingAETitle: MODALITY}, forward_to: pacs}\n"
    )
    node: Node = node_factory(  # type: ignore[operator]
        destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 1}}
    )
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=2, rows=16, columns=16))
    files = [f for f in map(inspect_file, series.paths) if isinstance(f, SendableFile)]
    address = parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}")
    from dicomnode.dicom.scu import ScuSettings

    send_files(files, address, ScuSettings(calling_ae="MODALITY"))
    config = tmp_path / "node.yaml"
    config.write_text(
        f"storage: {{path: {node.config.storage.path}}}\nrules_dir: {rules}\n"
        "destinations: {pacs: {ae_title: PACS, host: 127.0.0.1, port: 1}}\n"
    )
    result = dicomnode(
        "rules", "explain", "--series", series.series_instance_uid, "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    assert "MATCH     from-modality" in result.stdout
    assert "no match  thin" in result.stdout
    assert "SliceThickness is 2.5: max 1 fails" in result.stdout


def test_echo_by_destination_name(node: Node, tmp_path: Path) -> None:
    config = tmp_path / "echo.yaml"
    config.write_text(
        f"destinations:\n  self: {{ae_title: DICOMNODE, host: 127.0.0.1, port: {node.scp.port}}}\n"
    )
    ok = dicomnode("echo", "self", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "C-ECHO OK" in ok.stdout
    unknown = dicomnode("echo", "elsewhere", "--config", str(config))
    assert unknown.returncode == 2
    assert "known: self" in unknown.stderr
