"""The repository's rules/ folder: documented examples that load without a problem."""

from __future__ import annotations

from pathlib import Path

import dicomnode.rules
from dicomnode.rules import Outcome, SeriesAttributes, evaluate, load_rules

REPO_RULES = Path(__file__).resolve().parents[2] / "rules" / "examples"
OPERATORS = (
    "equals:",
    "any_of:",
    "regex:",
    "min:",
    "max:",
    "exists: true",
    "exists: false",
    "not:",
)


def test_the_example_rules_load_clean() -> None:
    rules = load_rules(
        REPO_RULES,
        destinations=("pacs", "research"),
        pipelines=("ct-tissue-reference", "pet-suv-reference"),
    )
    names = {rule.name for rule in rules}
    assert {"ct-brain-forward", "ct-tissue-composition", "pet-suv"} <= names
    assert any(rule.stop for rule in rules)
    assert any(not rule.enabled for rule in rules)


def test_the_examples_show_every_operator() -> None:
    text = "\n".join(path.read_text() for path in sorted(REPO_RULES.glob("*.yaml")))
    for operator in OPERATORS:
        assert operator in text, operator


def test_a_pet_series_goes_through_suv() -> None:
    rules = load_rules(
        REPO_RULES,
        destinations=("pacs", "research"),
        pipelines=("ct-tissue-reference", "pet-suv-reference"),
    )
    pet = SeriesAttributes.from_values(
        {
            "Modality": "PT",
            "Units": "BQML",
            "CorrectedImage": [["ATTN", "DECY", "SCAT"]],
            "PatientWeight": [72.5],
            "SeriesDescription": "PET WB AC",
        },
        image_count=250,
        calling_ae="PETCT1",
    )
    evaluation = evaluate(rules, pet)
    assert evaluation.decision.matched_rules == ("pet-suv",)
    assert [run.pipeline for run in evaluation.decision.pipeline_runs] == ["pet-suv-reference"]
    qa = evaluate(rules, SeriesAttributes.from_values({"Modality": "PT"}, calling_ae="QA_CT"))
    assert qa.decision.matched_rules == ("quality-control-to-research",)
    assert {v.outcome for v in qa.verdicts[1:]} == {Outcome.SKIPPED, Outcome.DISABLED}


def test_the_public_api_is_exported() -> None:
    for name in dicomnode.rules.__all__:
        assert hasattr(dicomnode.rules, name), name
    assert sorted(dicomnode.rules.__all__) == sorted(set(dicomnode.rules.__all__))


def test_the_examples_route_on_findings_the_reference_pipelines_report() -> None:
    from dicomnode.pipeline.definition import reference_definitions
    from dicomnode.pipeline.findings import pipeline_findings

    _, pipelines = reference_definitions()
    rules = load_rules(
        REPO_RULES, destinations=("pacs", "research"), pipelines=pipeline_findings(pipelines)
    )
    (pet,) = [rule for rule in rules if rule.name == "pet-suv"]
    (entry,) = pet.on_findings
    assert entry.forward_to == ("research",)
    assert {clause.keyword for clause in entry.when} >= {"SUV 2.5 region.max"}
