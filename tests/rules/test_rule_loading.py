"""Loading rule files: every kind of mistake is reported with file, line and key, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.errors import ConfigError, DicomNodeError
from dicomnode.rules import (
    AnyOf,
    Equals,
    Exists,
    Not,
    Range,
    Regex,
    RuleProblem,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
)

DESTINATIONS = ("pacs", "research")
PIPELINES = ("ct-tissue-reference", "pet-suv-reference")


def load(folder: Path) -> RuleSet:
    return load_rules(folder, destinations=DESTINATIONS, pipelines=PIPELINES)


def problems_of(text: str, tmp_path: Path, name: str = "rules.yaml") -> list[RuleProblem]:
    (tmp_path / name).write_text(text)
    with pytest.raises(RulesError) as caught:
        load(tmp_path)
    return list(caught.value.problems)


GOOD = "- name: ok\n  match: {Modality: CT}\n  forward_to: pacs\n"

# (id, rule file text, line, key, words the message must contain)
MISTAKES = [
    ("yaml-syntax", "- name: a\n  match: {}\n forward_to: pacs\n", 3, "", "not valid YAML"),
    ("top-level-mapping", "name: a\nmatch: {}\n", 1, "", "a rule file is a list of rules"),
    ("rule-not-mapping", GOOD + "- just-a-name\n", 4, "#2", "a rule is a mapping"),
    (
        "unknown-rule-key",
        GOOD + "  foward_to: [research]\n",
        4,
        "ok.foward_to",
        "did you mean forward_to",
    ),
    (
        "unknown-keyword",
        "- name: a\n  match:\n    SliceThicknes: 5\n  forward_to: pacs\n",
        3,
        "a.match.SliceThicknes",
        "unknown DICOM keyword (did you mean SliceThickness",
    ),
    (
        "keyword-case",
        "- name: a\n  match: {modality: CT}\n  forward_to: pacs\n",
        2,
        "a.match.modality",
        "case-sensitive: did you mean Modality",
    ),
    (
        "sequence-keyword",
        "- name: a\n  match:\n    ReferencedImageSequence: {exists: true}\n  forward_to: pacs\n",
        3,
        "a.match.ReferencedImageSequence",
        "sequence",
    ),
    (
        "pixel-data",
        "- name: a\n  match:\n    PixelData: {exists: true}\n  forward_to: pacs\n",
        3,
        "a.match.PixelData",
        "binary data",
    ),
    (
        "bad-regex",
        "- name: a\n  match:\n    SeriesDescription: {regex: '(abd'}\n  forward_to: pacs\n",
        3,
        "a.match.SeriesDescription.regex",
        "bad regex '(abd'",
    ),
    (
        "unknown-destination",
        "- name: a\n  match: {}\n  forward_to:\n    - pacs\n    - pacz\n",
        5,
        "a.forward_to[1]",
        "unknown destination 'pacz'; did you mean pacs? (known: pacs, research)",
    ),
    (
        "unknown-destination-string",
        "- name: a\n  match: {}\n  forward_to: archive\n",
        3,
        "a.forward_to",
        "unknown destination 'archive'",
    ),
    (
        "unknown-send-to",
        "- name: a\n  match: {}\n  pipeline: ct-tissue-reference\n  send_to: [viewer]\n",
        4,
        "a.send_to[0]",
        "unknown destination 'viewer'",
    ),
    (
        "unknown-pipeline",
        "- name: a\n  match: {}\n  pipeline: ct-tisue-reference\n",
        3,
        "a.pipeline",
        "unknown pipeline 'ct-tisue-reference'; did you mean ct-tissue-reference?",
    ),
    ("duplicate-name", GOOD + GOOD, 4, "ok.name", "duplicate rule name: first defined at"),
    (
        "priority-type",
        GOOD + "  priority: high\n",
        4,
        "ok.priority",
        "priority must be a whole number",
    ),
    ("priority-bool", GOOD + "  priority: yes\n", 4, "ok.priority", "whole number, got True"),
    ("enabled-type", GOOD + "  enabled: maybe\n", 4, "ok.enabled", "enabled must be true or false"),
    ("stop-type", GOOD + "  stop: 1\n", 4, "ok.stop", "stop must be true or false"),
    ("description-type", GOOD + "  description: [a]\n", 4, "ok.description", "description is text"),
    (
        "forward-to-mapping",
        "- name: a\n  match: {}\n  forward_to: {pacs: 1}\n",
        3,
        "a.forward_to",
        "a destination name or a list",
    ),
    ("no-action", "- name: a\n  match: {Modality: CT}\n", 1, "a", "no action"),
    ("send-to-without-pipeline", GOOD + "  send_to: [pacs]\n", 4, "ok.send_to", "add pipeline"),
    ("no-match", "- name: a\n  forward_to: pacs\n", 1, "a", "write match: {} to match every"),
    ("null-match", "- name: a\n  match:\n  forward_to: pacs\n", 2, "a.match", "match is empty"),
    (
        "list-match",
        "- name: a\n  match: [Modality]\n  forward_to: pacs\n",
        2,
        "a.match",
        "a mapping of DICOM keyword to condition",
    ),
    ("no-name", "- match: {}\n  forward_to: pacs\n", 1, "#1.name", "every rule needs a name"),
    (
        "bad-name",
        "- name: 'my rule!'\n  match: {}\n  forward_to: pacs\n",
        1,
        "#1.name",
        "letters, digits",
    ),
    (
        "yaml-bool-name",
        "- name: off\n  match: {}\n  forward_to: pacs\n",
        1,
        "#1.name",
        "YAML read this name as False",
    ),
    (
        "min-greater-than-max",
        "- name: a\n  match:\n    SliceThickness: {min: 5, max: 1}\n  forward_to: pacs\n",
        3,
        "a.match.SliceThickness",
        "min 5 is greater than max 1",
    ),
    (
        "min-on-text",
        "- name: a\n  match:\n    BodyPartExamined: {min: 3}\n  forward_to: pacs\n",
        3,
        "a.match.BodyPartExamined",
        "min/max need a numeric attribute",
    ),
    (
        "max-not-a-number",
        "- name: a\n  match:\n    SliceThickness: {max: thin}\n  forward_to: pacs\n",
        3,
        "a.match.SliceThickness.max",
        "is a number (VR DS), got 'thin'",
    ),
    (
        "value-not-a-number",
        "- name: a\n  match:\n    SliceThickness: five\n  forward_to: pacs\n",
        3,
        "a.match.SliceThickness",
        "is a number (VR DS), got 'five'",
    ),
    (
        "nan",
        "- name: a\n  match:\n    SliceThickness: {max: .nan}\n  forward_to: pacs\n",
        3,
        "a.match.SliceThickness.max",
        "finite number",
    ),
    (
        "image-count-text",
        "- name: a\n  match:\n    ImageCount: {min: many}\n  forward_to: pacs\n",
        3,
        "a.match.ImageCount.min",
        "is a number (VR derived)",
    ),
    (
        "regex-on-number",
        "- name: a\n  match:\n    SeriesNumber: {regex: '^2'}\n  forward_to: pacs\n",
        3,
        "a.match.SeriesNumber.regex",
        "use min/max or equals",
    ),
    (
        "unknown-operator",
        "- name: a\n  match:\n    SeriesDescription: {regexp: x}\n  forward_to: pacs\n",
        3,
        "a.match.SeriesDescription.regexp",
        "did you mean regex",
    ),
    (
        "two-operators",
        "- name: a\n  match:\n    Modality: {equals: CT, regex: C}\n  forward_to: pacs\n",
        3,
        "a.match.Modality",
        "one operator per condition",
    ),
    (
        "empty-condition",
        "- name: a\n  match:\n    Modality: {}\n  forward_to: pacs\n",
        3,
        "a.match.Modality",
        "an empty condition",
    ),
    (
        "empty-list",
        "- name: a\n  match:\n    Modality: []\n  forward_to: pacs\n",
        3,
        "a.match.Modality",
        "an empty list matches nothing",
    ),
    (
        "any-of-not-a-list",
        "- name: a\n  match:\n    Modality: {any_of: CT}\n  forward_to: pacs\n",
        3,
        "a.match.Modality.any_of",
        "any_of takes a list",
    ),
    (
        "list-item-type",
        "- name: a\n  match:\n    Modality:\n      - CT\n      - {regex: M}\n  forward_to: pacs\n",
        5,
        "a.match.Modality[1]",
        "plain values",
    ),
    (
        "equals-list",
        "- name: a\n  match:\n    Modality: {equals: [CT]}\n  forward_to: pacs\n",
        3,
        "a.match.Modality.equals",
        "use any_of for a list",
    ),
    (
        "exists-type",
        "- name: a\n  match:\n    Modality: {exists: sometimes}\n  forward_to: pacs\n",
        3,
        "a.match.Modality.exists",
        "exists takes true or false",
    ),
    (
        "not-exists",
        "- name: a\n  match:\n    Modality: {not: {exists: true}}\n  forward_to: pacs\n",
        3,
        "a.match.Modality.not",
        "write exists: false instead",
    ),
    (
        "yaml-number-for-text",
        "- name: a\n  match:\n    StationName: 0012\n  forward_to: pacs\n",
        3,
        "a.match.StationName",
        "quote it",
    ),
    (
        "yaml-bool-for-text",
        "- name: a\n  match:\n    PatientSex: NO\n  forward_to: pacs\n",
        3,
        "a.match.PatientSex",
        "YAML read this as the boolean false",
    ),
    (
        "null-value",
        "- name: a\n  match:\n    Modality:\n  forward_to: pacs\n",
        3,
        "a.match.Modality",
        "no value",
    ),
    (
        "empty-text",
        "- name: a\n  match:\n    Modality: ''\n  forward_to: pacs\n",
        3,
        "a.match.Modality",
        "use exists: false",
    ),
    (
        "duplicate-key",
        "- name: a\n  match:\n    Modality: CT\n    Modality: MR\n  forward_to: pacs\n",
        4,
        "a.match.Modality",
        "appears twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in MISTAKES],
)
def test_each_mistake_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, words: str
) -> None:
    problems = problems_of(text, tmp_path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert problem.file == tmp_path / "rules.yaml"
    assert (problem.line, problem.key) == (line, key)
    assert words in problem.message
    where = f"{tmp_path / 'rules.yaml'}:{line}: "
    assert str(problem) == where + (f"{key}: " if key else "") + problem.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "- name: first\n"  # 1
        "  match:\n"  # 2
        "    Modalty: CT\n"  # 3
        "    SliceThickness: {max: thick}\n"  # 4
        "  forward_to: [pacs, nowhere]\n"  # 5
        "- name: second\n"  # 6
        "  match: {SeriesDescription: {regex: '['}}\n"  # 7
        "  pipeline: unknown\n"  # 8
    )
    (tmp_path / "b.yml").write_text("- name: first\n  match: {}\n  forward_to: research\n")
    (tmp_path / "c.yaml").write_text("- name: c\n  match: {\n")
    with pytest.raises(RulesError) as caught:
        load(tmp_path)
    found = [(p.file.name, p.line, p.key) for p in caught.value.problems]
    assert found == [
        ("a.yaml", 3, "first.match.Modalty"),
        ("a.yaml", 4, "first.match.SliceThickness.max"),
        ("a.yaml", 5, "first.forward_to[1]"),
        ("a.yaml", 7, "second.match.SeriesDescription.regex"),
        ("a.yaml", 8, "second.pipeline"),
        ("b.yml", 1, "first.name"),
        ("c.yaml", 3, ""),
    ]
    text = str(caught.value)
    assert len(text.splitlines()) == 7
    assert "first defined at a.yaml:1" in text  # the folder's own files: no path
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, DicomNodeError)


def test_a_missing_folder_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="the rules folder does not exist"):
        load(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(RulesError, match="is not a folder"):
        load(tmp_path / "file")


def test_an_empty_folder_is_an_empty_ruleset(tmp_path: Path) -> None:
    ruleset = load(tmp_path)
    assert ruleset.rules == ()
    assert ruleset.files == ()
    assert len(ruleset.version) == 64


def test_comment_only_files_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing here yet\n")
    (tmp_path / "notes.txt").write_text("not rules")
    (tmp_path / ".#lock.yaml").write_text("an editor's lock file: {")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("not: [read")
    (tmp_path / "b.yml").write_text(GOOD)
    ruleset = load(tmp_path)
    assert [path.name for path in ruleset.files] == ["b.yml", "empty.yaml"]
    assert [rule.name for rule in ruleset] == ["ok"]


def test_unreadable_text_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("- name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RulesError, match=r"latin1\.yaml: cannot read the file: not UTF-8"):
        load(tmp_path)


def test_conditions_are_parsed_into_types(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "- name: all-forms\n"
        "  match:\n"
        "    Modality: CT\n"
        "    BodyPartExamined: [HEAD, BRAIN]\n"
        "    SeriesDescription: {regex: '(?i)brain'}\n"
        "    SliceThickness: {min: '0.5', max: 5}\n"
        "    ImageCount: {min: 20}\n"
        "    PatientWeight: {exists: true}\n"
        "    Units: {exists: false}\n"
        "    StationName: {not: {any_of: [CT9]}}\n"
        "    SeriesNumber: {equals: '201'}\n"
        "    ProtocolName: {any_of: [' HEAD ']}\n"
        "  forward_to: pacs\n"
    )
    (rule,) = load(tmp_path).rules
    conditions = {clause.keyword: clause.condition for clause in rule.match}
    assert conditions["Modality"] == Equals("CT")
    assert conditions["BodyPartExamined"] == AnyOf(("HEAD", "BRAIN"))
    regex = conditions["SeriesDescription"]
    assert isinstance(regex, Regex)
    assert regex.pattern == "(?i)brain"
    assert conditions["SliceThickness"] == Range(0.5, 5.0)
    assert conditions["ImageCount"] == Range(20.0, None)
    assert conditions["PatientWeight"] == Exists(True)
    assert conditions["Units"] == Exists(False)
    assert conditions["StationName"] == Not(AnyOf(("CT9",)))
    assert conditions["SeriesNumber"] == Equals(201.0)  # IS: a number, "201" accepted
    assert conditions["ProtocolName"] == AnyOf(("HEAD",))  # text is stripped
    assert [clause.line for clause in rule.match] == list(range(3, 13))
    assert rule.forward_to == ("pacs",)  # a single string is a one-item list
    assert (rule.enabled, rule.priority, rule.stop, rule.pipeline) == (True, 0, False, None)
    assert (rule.file, rule.line) == (tmp_path / "r.yaml", 1)


def test_match_all_must_be_explicit(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("- name: everything\n  match: {}\n  forward_to: pacs\n")
    (rule,) = load(tmp_path).rules
    assert rule.match == ()


def test_destination_lists_are_deduplicated_in_order(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "- name: a\n  match: {}\n  forward_to: [research, pacs, research]\n"
        "  pipeline: ct-tissue-reference\n  send_to: pacs\n"
    )
    (rule,) = load(tmp_path).rules
    assert rule.forward_to == ("research", "pacs")
    assert (rule.pipeline, rule.send_to) == ("ct-tissue-reference", ("pacs",))


def test_unknown_names_are_not_checked_when_not_given(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("- name: a\n  match: {}\n  pipeline: any\n  forward_to: x\n")
    ruleset = load_rules(tmp_path, destinations=None, pipelines=None)
    assert ruleset.rules[0].forward_to == ("x",)
    assert ruleset.rules[0].pipeline == "any"


def test_no_destinations_configured_is_said(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD)
    with pytest.raises(RulesError, match="no destinations are configured"):
        load_rules(tmp_path, destinations=(), pipelines=())


def test_evaluation_order_is_priority_then_file_then_position(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "- {name: b1, match: {}, forward_to: pacs}\n"
        "- {name: b2, match: {}, forward_to: pacs, priority: 10}\n"
        "- {name: b3, match: {}, forward_to: pacs, priority: -1}\n"
    )
    (tmp_path / "a.yaml").write_text(
        "- {name: a1, match: {}, forward_to: pacs}\n"
        "- {name: a2, match: {}, forward_to: pacs, priority: 10}\n"
    )
    ruleset = load(tmp_path)
    assert [rule.name for rule in ruleset] == ["a2", "b2", "a1", "b1", "b3"]


def test_version_follows_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    first = load(tmp_path).version
    assert load(tmp_path).version == first
    (tmp_path / "a.yaml").write_text(GOOD + "  priority: 1\n")
    changed = load(tmp_path).version
    assert changed != first
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    assert load(tmp_path).version not in (first, changed)
    other = tmp_path / "copy"
    other.mkdir()
    (other / "b.yaml").write_text((tmp_path / "b.yaml").read_text())
    assert load(other).version == load(tmp_path).version  # the folder's place is not content


def test_parse_rules_needs_no_files() -> None:
    ruleset = parse_rules(
        [(Path("z.yaml"), GOOD.replace("ok", "z")), (Path("a.yaml"), GOOD)],
        destinations=DESTINATIONS,
        pipelines=PIPELINES,
    )
    assert [rule.name for rule in ruleset] == ["ok", "z"]
    assert ruleset.files == (Path("a.yaml"), Path("z.yaml"))


def test_keywords_lists_every_keyword_once_in_order(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "- {name: a, match: {Modality: CT, ImageCount: {min: 2}}, forward_to: pacs}\n"
        "- {name: b, match: {CallingAETitle: X, Modality: MR}, forward_to: pacs, priority: 1}\n"
    )
    assert load(tmp_path).keywords() == ("CallingAETitle", "Modality", "ImageCount")
