"""/api/rules: the rules in force, saving a file as `rules check` validates it, dry runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dicomnode.node import Node

CT_TO_PACS = "- name: ct-to-pacs\n  match: {Modality: CT}\n  forward_to: [pacs]\n"
# Three mistakes, on lines 3, 5 and 6: an unknown keyword, a bad regex, an unknown destination.
BROKEN = textwrap.dedent(
    """\
    - name: chest
      match:
        Modality_: CT
        SeriesDescription:
          regex: "(chest"
      forward_to: [nowhere]
    """
)


@pytest.fixture
def rules_node(
    node_factory: Callable[..., Node],
    write_rules: Callable[..., Path],
    make_destination: Callable[..., dict[str, Any]],
) -> Node:
    write_rules(CT_TO_PACS, name="ct.yaml")
    return node_factory(destinations={"pacs": make_destination("PACS", 1)})


def test_get_shows_the_rules_in_force_with_their_files_version_and_history(
    rules_node: Node, client_for: Callable[..., TestClient]
) -> None:
    body = client_for(rules_node).get("/api/rules").json()
    assert body["version"] == rules_node.rules.current.version
    (rule,) = body["rules"]
    assert rule["name"] == "ct-to-pacs"
    assert rule["file"] == "ct.yaml"
    assert rule["line"] == 1
    assert rule["match"] == [{"keyword": "Modality", "condition": "equals CT", "line": 2}]
    assert rule["forward_to"] == ["pacs"]
    assert body["files"] == [{"name": "ct.yaml", "content": CT_TO_PACS}]
    assert body["last_rejection"] is None
    (loaded,) = body["history"]
    assert loaded["version"] == body["version"]
    assert loaded["files"] == ["ct.yaml"]
    assert loaded["actor"].startswith("file owner")


def test_a_valid_file_is_written_loaded_and_audited_with_its_actor(
    rules_node: Node, client_for: Callable[..., TestClient], rules_dir: Path
) -> None:
    client = client_for(rules_node)
    before = rules_node.rules.current.version
    mr = "- {name: mr-research, match: {Modality: MR}, forward_to: [pacs]}\n"
    response = client.put(
        "/api/rules",
        json={"name": "mr.yaml", "content": mr, "base_version": before},
        headers={"X-Actor": "dr.jones"},
    )
    assert response.status_code == 200, response.text
    saved = response.json()
    assert saved["name"] == "mr.yaml"
    assert saved["in_force"] is True
    assert saved["version"] == rules_node.rules.current.version != before
    assert (rules_dir / "mr.yaml").read_text() == mr
    assert not [p for p in rules_dir.iterdir() if p.name.startswith(".")]  # no temporary left

    rules = client.get("/api/rules").json()
    assert [r["name"] for r in rules["rules"]] == ["ct-to-pacs", "mr-research"]
    assert rules["history"][0] == {
        "version": saved["version"],
        "loaded_at": rules["history"][0]["loaded_at"],
        "actor": "dr.jones (API)",
        "files": ["ct.yaml", "mr.yaml"],
    }
    (entry,) = client.get("/api/audit", params={"action": "rules.save"}).json()
    assert entry["id"] == saved["audit_id"]
    assert entry["actor"] == "dr.jones"
    assert entry["target"] == "mr.yaml"
    assert entry["detail"]["version"] == saved["version"]
    assert entry["detail"]["previous_version"] == before
    assert entry["detail"]["content"] == mr
    assert entry["detail"]["previous_content"] is None  # a new file

    changed = CT_TO_PACS.replace("Modality: CT", "Modality: CT, BodyPartExamined: CHEST")
    replaced = client.put("/api/rules", json={"name": "ct.yaml", "content": changed})
    assert replaced.status_code == 200, replaced.text
    latest = client.get("/api/audit", params={"target": "ct.yaml"}).json()[0]
    assert (latest["detail"]["previous_content"], latest["detail"]["content"]) == (
        CT_TO_PACS,
        changed,
    )
    assert latest["actor"] == "api"


def test_an_invalid_file_is_refused_with_the_problems_rules_check_reports(
    rules_node: Node, client_for: Callable[..., TestClient], rules_dir: Path, tmp_path: Path
) -> None:
    client = client_for(rules_node)
    before = rules_node.rules.current.version
    response = client.put("/api/rules", json={"name": "chest.yaml", "content": BROKEN})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "3 problems: the rules are not valid"
    problems = body["problems"]
    assert [(p["file"], p["line"], p["key"]) for p in problems] == [
        ("chest.yaml", 3, "chest.match.Modality_"),
        ("chest.yaml", 5, "chest.match.SeriesDescription.regex"),
        ("chest.yaml", 6, "chest.forward_to[0]"),
    ]
    assert "Modality" in problems[0]["message"]  # the close match is suggested
    assert not (rules_dir / "chest.yaml").exists()
    assert rules_node.rules.current.version == before
    assert client.get("/api/audit").json() == []

    # `dicomnode rules check` on the same folder prints the same problems, line for line.
    folder = tmp_path / "check"
    folder.mkdir()
    (folder / "ct.yaml").write_text(CT_TO_PACS)
    (folder / "chest.yaml").write_text(BROKEN)
    config = tmp_path / "node.yaml"
    config.write_text("destinations: {pacs: {ae_title: PACS, host: 127.0.0.1, port: 1}}\n")
    checked = subprocess.run(
        [sys.executable, "-m", "dicomnode", "rules", "check", str(folder), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    printed = [line for line in checked.stderr.splitlines() if line.startswith(str(folder))]
    assert printed == [
        f"{folder}/{p['file']}:{p['line']}: {p['key']}: {p['message']}" for p in problems
    ]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("- name: a\n  match: {Modality: CT\n", 3, "not valid YAML"),
        ("name: a\n", None, "a rule file is a list of rules"),
        ("- {name: ct-to-pacs, match: {}, forward_to: [pacs]}\n", 1, "ct.yaml"),
        ("- {name: a, match: {}, pipeline: no-such-pipeline}\n", 1, "no-such-pipeline"),
    ],
)
def test_each_kind_of_mistake_is_refused_with_where_it_is(
    rules_node: Node,
    client_for: Callable[..., TestClient],
    content: str,
    line: int | None,
    message: str,
) -> None:
    response = client_for(rules_node).put("/api/rules", json={"name": "x.yaml", "content": content})
    assert response.status_code == 422, response.text
    (problem, *_) = response.json()["problems"]
    assert problem["file"] == "x.yaml"  # read after ct.yaml: the duplicate is here
    if line is not None:
        assert problem["line"] == line
    assert message in problem["message"]


@pytest.mark.parametrize(
    "name", ["../escape.yaml", "sub/dir.yaml", ".hidden.yaml", "rules.txt", "a b.yaml", ""]
)
def test_a_file_name_outside_the_rules_folder_or_not_yaml_is_422(
    rules_node: Node, client_for: Callable[..., TestClient], rules_dir: Path, name: str
) -> None:
    response = client_for(rules_node).put("/api/rules", json={"name": name, "content": "[]\n"})
    assert response.status_code == 422
    assert sorted(p.name for p in rules_dir.iterdir()) == ["ct.yaml"]
    assert not (rules_dir.parent / "escape.yaml").exists()


def test_an_edit_from_an_older_version_is_a_conflict(
    rules_node: Node, client_for: Callable[..., TestClient], rules_dir: Path
) -> None:
    response = client_for(rules_node).put(
        "/api/rules", json={"name": "ct.yaml", "content": "[]\n", "base_version": "0" * 64}
    )
    assert response.status_code == 409
    assert "changed since version 000000000000" in response.json()["detail"]
    assert (rules_dir / "ct.yaml").read_text() == CT_TO_PACS


def test_a_dry_run_says_which_rules_match_a_stored_series_and_what_would_happen(
    rules_node: Node,
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    routed: Callable[[Node, str], None],
    rules_dir: Path,
) -> None:
    client = client_for(rules_node)
    series = send_phantom(rules_node, "CT CHEST")
    routed(rules_node, series.series_instance_uid)
    candidate = textwrap.dedent(
        """\
        - name: chest-only
          match:
            SeriesDescription: {regex: "(?i)chest"}
            SliceThickness: {max: 0.5}
          forward_to: [pacs]
        - name: scanner1
          match: {CallingAETitle: SCANNER1}
          forward_to: [pacs]
        """
    )
    response = client.post(
        "/api/rules/dry-run",
        json={"content": candidate, "series_uid": series.series_instance_uid},
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["series_uid"] == series.series_instance_uid
    verdicts = {v["rule"]: v for v in run["verdicts"]}
    assert verdicts["scanner1"]["outcome"] == "matched"
    assert verdicts["chest-only"]["outcome"] == "not matched"
    assert "SliceThickness" in verdicts["chest-only"]["reason"]
    assert verdicts["chest-only"]["file"] == "dry-run.yaml"
    assert run["decision"] == {
        "routed": True,
        "matched_rules": ["scanner1"],
        "forward_to": ["pacs"],
        "pipeline_runs": [],
    }
    assert "MATCH     scanner1" in run["explain"]
    assert "SliceThickness" in run["explain"]

    # With a name, the file is tried in place among the folder's files, and nothing is saved.
    replacing = client.post(
        "/api/rules/dry-run",
        json={
            "content": "- {name: ct-to-pacs, match: {Modality: MR}, forward_to: [pacs]}\n",
            "name": "ct.yaml",
            "series_uid": series.series_instance_uid,
        },
    ).json()
    assert replacing["decision"]["routed"] is False
    assert [v["outcome"] for v in replacing["verdicts"]] == ["not matched"]
    assert (rules_dir / "ct.yaml").read_text() == CT_TO_PACS
    beside = client.post(
        "/api/rules/dry-run",
        json={"content": candidate, "name": "new.yaml", "series_uid": series.series_instance_uid},
    ).json()
    assert beside["decision"]["matched_rules"] == ["ct-to-pacs", "scanner1"]
    assert beside["version"] != rules_node.rules.current.version
    assert client.get("/api/audit").json() == []


def test_a_dry_run_of_invalid_rules_or_an_unknown_series_is_refused(
    rules_node: Node,
    client_for: Callable[..., TestClient],
    send_phantom: Callable[..., Any],
    routed: Callable[[Node, str], None],
) -> None:
    client = client_for(rules_node)
    series = send_phantom(rules_node)
    routed(rules_node, series.series_instance_uid)
    invalid = client.post(
        "/api/rules/dry-run",
        json={"content": BROKEN, "name": "x.yaml", "series_uid": series.series_instance_uid},
    )
    assert invalid.status_code == 422
    assert [p["line"] for p in invalid.json()["problems"]] == [3, 5, 6]
    unknown = client.post("/api/rules/dry-run", json={"content": "[]", "series_uid": "1.2.3"})
    assert unknown.status_code == 404
    assert client.post("/api/rules/dry-run", json={"content": "[]"}).status_code == 422


def test_check_validates_a_file_as_a_save_would_without_writing_it(
    rules_node: Node, client_for: Callable[..., TestClient], rules_dir: Path
) -> None:
    client = client_for(rules_node)
    before = rules_node.rules.current.version

    refused = client.post("/api/rules/check", json={"name": "chest.yaml", "content": BROKEN})
    assert refused.status_code == 422
    assert [(p["file"], p["line"], p["key"]) for p in refused.json()["problems"]] == [
        ("chest.yaml", 3, "chest.match.Modality_"),
        ("chest.yaml", 5, "chest.match.SeriesDescription.regex"),
        ("chest.yaml", 6, "chest.forward_to[0]"),
    ]

    fixed = "- name: chest\n  match: {Modality: CT}\n  forward_to: [pacs]\n"
    checked = client.post("/api/rules/check", json={"name": "chest.yaml", "content": fixed})
    assert checked.status_code == 200
    body = checked.json()
    assert body["name"] == "chest.yaml"
    assert body["rules"] == 2  # checked together with ct.yaml, as a save would be
    assert body["version"] != before

    # A duplicate of a rule in another file is found too: the folder is checked as a whole.
    duplicate = client.post("/api/rules/check", json={"name": "b.yaml", "content": CT_TO_PACS})
    assert duplicate.status_code == 422
    (problem,) = duplicate.json()["problems"]
    assert (problem["file"], problem["key"]) == ("ct.yaml", "ct-to-pacs.name")
    assert "duplicate rule name" in problem["message"] and "b.yaml:1" in problem["message"]

    # Nothing was written, loaded or audited.
    assert sorted(p.name for p in rules_dir.iterdir()) == ["ct.yaml"]
    assert rules_node.rules.current.version == before
    assert client.get("/api/audit").json() == []


def test_check_refuses_a_file_name_outside_the_folder_and_needs_the_token(
    rules_node: Node, client_for: Callable[..., TestClient]
) -> None:
    client = client_for(rules_node)
    outside = client.post("/api/rules/check", json={"name": "../x.yaml", "content": CT_TO_PACS})
    assert outside.status_code == 422
    anonymous = client.post(
        "/api/rules/check",
        json={"name": "ct.yaml", "content": CT_TO_PACS},
        headers={"Authorization": ""},
    )
    assert anonymous.status_code == 401
