"""Explain: the attributes rules use, every rule's verdict and why, and the decision."""

from __future__ import annotations

from pathlib import Path

from dicomnode.rules import (
    RuleSet,
    SeriesAttributes,
    evaluate,
    explain,
    load_rules,
    parse_rules,
    read_series_attributes,
)

REPO_RULES = Path(__file__).resolve().parents[2] / "rules" / "examples"
DESTINATIONS = ("pacs", "research")
PIPELINES = ("ct-tissue-reference", "pet-suv-reference")


def ruleset(text: str) -> RuleSet:
    return parse_rules([(Path("r.yaml"), text)], destinations=DESTINATIONS, pipelines=PIPELINES)


RULES = ruleset(
    "- name: qa\n"  # 1
    "  priority: 10\n"
    "  stop: true\n"
    "  match: {ImageCount: {min: 3}}\n"  # 4
    "  forward_to: research\n"
    "- name: thin\n"  # 6
    "  match:\n"
    "    Modality: CT\n"
    "    SliceThickness: {max: 5}\n"  # 9
    "  forward_to: pacs\n"
    "- name: absent\n"  # 11
    "  priority: 20\n"
    "  match:\n"
    "    BodyPartExamined: {not: HEAD}\n"  # 14
    "  forward_to: pacs\n"
    "- name: parked\n"  # 16
    "  enabled: false\n"
    "  match: {}\n"
    "  pipeline: ct-tissue-reference\n"
    "  send_to: [pacs]\n"
)


def test_explain_shows_values_verdicts_and_decision() -> None:
    attributes = SeriesAttributes.from_values(
        {"Modality": "CT", "SliceThickness": [1.0, 5.5]}, image_count=2, series_uid="1.2.3"
    )
    text = explain(RULES, attributes)
    lines = text.splitlines()
    assert lines[0] == "Series 1.2.3: attributes the rules use"
    assert "  BodyPartExamined: (missing)" in lines
    assert any(
        line.startswith("  SliceThickness:") and "1, 5.5  (differs between instances" in line
        for line in lines
    )
    assert any(line.startswith("  ImageCount:") and line.endswith(" 2") for line in lines)
    assert "  no match  absent  (r.yaml:11, priority 20)" in lines
    assert (
        "      BodyPartExamined is missing: not (equals HEAD) fails "
        "(not never matches a missing attribute; use exists: false) [r.yaml:14]"
    ) in lines
    assert "  no match  qa  (r.yaml:1, priority 10, stop)" in lines
    assert (
        "      SliceThickness differs between instances (1, 5.5): max 5 fails for 5.5 [r.yaml:9]"
        in lines
    )
    assert "  disabled  parked  (r.yaml:16, priority 0)" in lines
    assert "      enabled: false (would match)" in lines
    assert lines[-1] == "Decision: no rule matches; the series is unrouted (recorded, not sent)"


def test_explain_says_which_rule_stopped_the_others() -> None:
    attributes = SeriesAttributes.from_values(
        {"Modality": "CT", "SliceThickness": 1}, image_count=30
    )
    text = explain(RULES, attributes)
    assert "  MATCH     qa  (r.yaml:1, priority 10, stop)\n      forward to research\n" in text
    assert "  skipped   thin  (r.yaml:6, priority 0)\n" in text
    assert "      qa matched first and has stop: true (would match)\n" in text
    assert text.endswith("Decision:\n  matched:    qa\n  forward to: research\n")


def test_explain_lists_pipeline_runs() -> None:
    rules = ruleset(
        "- {name: tissue, match: {}, pipeline: ct-tissue-reference, send_to: [pacs, research]}\n"
    )
    text = explain(rules, SeriesAttributes())
    assert "  (no rule matches on an attribute)" in text
    assert "      run pipeline ct-tissue-reference, results to pacs, research" in text
    assert "  pipeline:   ct-tissue-reference (rule tissue), results to pacs, research" in text
    assert "  forward to: (nowhere)" in text


def test_explain_marks_derived_attributes_files_do_not_carry() -> None:
    rules = ruleset("- {name: mr, match: {CallingAETitle: SCANNER1}, forward_to: research}\n")
    text = explain(rules, SeriesAttributes())
    assert "CallingAETitle: (missing: known only for series the node receives)" in text


def test_explain_with_no_rules() -> None:
    text = explain(ruleset(""), SeriesAttributes())
    assert "  (no rules)" in text
    assert "unrouted" in text


def test_explain_the_real_ct_with_the_example_rules(real_ct_dir: Path) -> None:
    rules = load_rules(REPO_RULES, destinations=DESTINATIONS, pipelines=PIPELINES)
    (attributes,) = read_series_attributes([real_ct_dir], rules.keywords())
    evaluation = evaluate(rules, attributes)
    assert evaluation.decision.matched_rules == ("ct-brain-forward",)
    assert evaluation.decision.forward_to == ("pacs",)

    text = explain(rules, attributes, evaluation)
    lines = text.splitlines()
    assert any(line.startswith("  MATCH     ct-brain-forward  (") for line in lines)
    tissue = next(i for i, line in enumerate(lines) if "  ct-tissue-composition  (" in line)
    assert lines[tissue].startswith("  no match  ")
    assert lines[tissue + 1].startswith(
        "      SeriesDescription is STD BRAIN 5MM: regex '(?i)abd|chest|body' fails ["
    )
    assert any(line.startswith("  SliceThickness:") and line.endswith(" 5") for line in lines)
    assert any(line.startswith("  ImageCount:") and line.endswith(" 28") for line in lines)
    assert "  forward to: pacs" in lines
