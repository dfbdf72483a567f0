"""on_findings: entries are checked when the rules load, evaluated with the series
conditions' code on a done job's summary, stored with a job and read back unchanged."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.findings import pipeline_findings
from dicomnode.rules import RuleProblem, RulesError, SeriesAttributes, explain, parse_rules
from dicomnode.rules.findings import (
    FindingValues,
    PipelineFindings,
    route_as_dict,
    route_findings,
    routes_from_dicts,
)
from dicomnode.rules.model import FindingRoute, RuleSet

DESTINATIONS = ("pacs", "board", "research")
CATALOG = {
    "pet-suv-reference": PipelineFindings(segments=("SUV 2.5 region",)),
    "ct-tissue-reference": PipelineFindings(segments=("Fat", "Soft tissue", "Bone")),
    "chest-classifier": PipelineFindings(classifier=(("Nodule", 0.7), ("Effusion", 0.5))),
}


def rule(on_findings: str, pipeline: str = "pet-suv-reference", extra: str = "") -> str:
    head = f"- name: pet\n  match: {{Modality: PT}}\n  pipeline: {pipeline}\n  send_to: [pacs]\n"
    return head + extra + "  on_findings:\n" + textwrap.indent(textwrap.dedent(on_findings), "    ")


def load(text: str) -> RuleSet:
    return parse_rules([(Path("r.yaml"), text)], destinations=DESTINATIONS, pipelines=CATALOG)


def problems(text: str) -> list[RuleProblem]:
    with pytest.raises(RulesError) as caught:
        load(text)
    return list(caught.value.problems)


LESION = """\
- name: large-lesion
  when:
    "SUV 2.5 region.present": true
    "SUV 2.5 region.volume_ml": {min: 5}
    "SUV 2.5 region.max": {min: 10}
  send_results_to: [board]
  forward_to: research
"""


def test_an_entry_loads_with_typed_clauses_and_its_lines() -> None:
    (pet,) = load(rule(LESION)).rules
    (entry,) = pet.on_findings
    assert entry.name == "large-lesion"
    assert entry.send_results_to == ("board",)
    assert entry.forward_to == ("research",)
    assert [c.keyword for c in entry.when] == [
        "SUV 2.5 region.present",
        "SUV 2.5 region.volume_ml",
        "SUV 2.5 region.max",
    ]
    assert [c.line for c in entry.when] == [8, 9, 10]
    assert entry.line == 6


@pytest.mark.parametrize(
    ("when", "line", "key", "words"),
    [
        (
            '"SUV 2.5 regio.max": {min: 10}',
            8,
            "pet.on_findings[0].when.SUV 2.5 regio.max",
            "no finding 'SUV 2.5 regio'; did you mean SUV 2.5 region?",
        ),
        (
            '"SUV 2.5 region.maximum": {min: 10}',
            8,
            "pet.on_findings[0].when.SUV 2.5 region.maximum",
            "unknown measurement 'maximum'; did you mean max?",
        ),
        (
            '"SUV 2.5 region.present": {min: 1}',
            8,
            "pet.on_findings[0].when.SUV 2.5 region.present",
            "min/max need a number; SUV 2.5 region.present is true or false",
        ),
        (
            '"SUV 2.5 region.present": "yes"',
            8,
            "pet.on_findings[0].when.SUV 2.5 region.present",
            "is true or false, got str 'yes'",
        ),
        (
            '"SUV 2.5 region.max": true',
            8,
            "pet.on_findings[0].when.SUV 2.5 region.max",
            "is a number (a pipeline finding), got the boolean true",
        ),
        ("Lesion: {min: 1}", 8, "pet.on_findings[0].when.Lesion", "<finding>.<measurement>"),
    ],
)
def test_wrong_finding_keys_and_values_are_reported_with_line_and_key(
    when: str, line: int, key: str, words: str
) -> None:
    text = rule(f"- name: e\n  when:\n    {when}\n  send_results_to: [board]\n")
    (problem,) = problems(text)
    assert (problem.line, problem.key) == (line, key)
    assert words in problem.message


def test_classifier_findings_have_probability_not_volume() -> None:
    good = "- name: e\n  when: {Nodule.probability: {min: 0.9}}\n  forward_to: [research]\n"
    assert load(rule(good, "chest-classifier")).rules[0].on_findings[0].name == "e"
    wrong = "- name: e\n  when: {Nodule.volume_ml: {min: 1}}\n  forward_to: [research]\n"
    (problem,) = problems(rule(wrong, "chest-classifier"))
    assert "unknown measurement 'volume_ml'; Nodule has present, probability" in problem.message


def test_entry_shape_mistakes_and_a_missing_pipeline_are_reported() -> None:
    found = problems(
        rule(
            """\
            - name: e
              when: {"SUV 2.5 region.present": true}
              send_results_to: [bord]
              sent_to: [pacs]
            - when: {}
            """
        )
    )
    said = [(p.key, p.message.split(" (")[0].split(";")[0]) for p in found]
    assert said == [
        ("pet.on_findings[0].send_results_to[0]", "unknown destination 'bord'"),
        ("pet.on_findings[0].sent_to", "unknown key"),
        ("pet.on_findings[1]", "every entry needs a name"),
        ("pet.on_findings[1]", "no destination: give send_results_to and/or forward_to"),
    ]
    assert "did you mean board?" in found[0].message
    assert "did you mean send_results_to?" in found[1].message

    no_pipeline = "- name: p\n  match: {}\n  forward_to: [pacs]\n  on_findings:\n" + (
        "    - {name: e, when: {}, forward_to: [research]}\n"
    )
    (problem,) = problems(no_pipeline)
    assert problem.key == "p.on_findings"
    assert "add pipeline" in problem.message


def test_without_the_pipelines_outputs_only_the_measurement_is_checked() -> None:
    text = rule("- name: e\n  when: {Anything.max: {min: 1}}\n  forward_to: [research]\n")
    ruleset = parse_rules([(Path("r.yaml"), text)], destinations=None, pipelines=None)
    assert ruleset.rules[0].on_findings[0].when[0].keyword == "Anything.max"


def test_the_reference_pipelines_findings_are_their_segment_names() -> None:
    _, pipelines = reference_definitions()
    catalog = pipeline_findings(pipelines)
    assert catalog["ct-tissue-reference"].segments == ("Fat", "Soft tissue", "Bone")
    assert catalog["pet-suv-reference"].segments == ("SUV 2.5 region",)


# -- evaluation ----------------------------------------------------------------------------

SEGMENTS = PipelineFindings(segments=("SUV 2.5 region", "Other"))


def lesion_summary(volume: float, maximum: float) -> dict[str, object]:
    region = {"label": 1, "name": "SUV 2.5 region", "volume_ml": volume, "mean": 4.0}
    return {"units": "SUVbw", "regions": [{**region, "max": maximum}]}


def entry() -> FindingRoute:
    return load(rule(LESION)).rules[0].on_findings[0]


def test_an_entry_fires_when_every_bound_holds_and_says_which_failed() -> None:
    values = FindingValues.from_summary(lesion_summary(7.5, 12.0), SEGMENTS)
    (verdict,) = route_findings([entry()], values)
    assert verdict.fired
    assert [c.text for c in verdict.checks] == [
        "SUV 2.5 region.present is true: equals true holds",
        "SUV 2.5 region.volume_ml is 7.5: min 5 holds",
        "SUV 2.5 region.max is 12: min 10 holds",
    ]
    small = FindingValues.from_summary(lesion_summary(7.5, 9.5), SEGMENTS)
    (verdict,) = route_findings([entry()], small)
    assert not verdict.fired
    assert [c.holds for c in verdict.checks] == [True, True, False]
    assert verdict.checks[2].text == "SUV 2.5 region.max is 9.5: min 10 fails"


def test_an_absent_finding_is_present_false_with_no_measurements() -> None:
    values = FindingValues.from_summary({"units": "SUVbw", "regions": []}, SEGMENTS)
    assert values.get("SUV 2.5 region.present") == ("false",)
    assert values.get("SUV 2.5 region.max") == ()
    (verdict,) = route_findings([entry()], values)
    assert not verdict.fired
    assert not any(c.holds for c in verdict.checks)
    assert verdict.checks[0].text.endswith("equals true fails (absent)")
    assert verdict.checks[1].text == "SUV 2.5 region is absent (no volume_ml): min 5 fails"
    absent = load(
        rule("- name: none\n  when: {'SUV 2.5 region.present': false}\n  forward_to: [research]\n")
    ).rules[0]
    (verdict,) = route_findings(absent.on_findings, values)
    assert verdict.fired


def test_a_classifier_finding_is_present_at_its_threshold() -> None:
    summary = {
        "findings": [
            {"finding": "Nodule", "probability": 0.69},
            {"finding": "Effusion", "probability": 0.5},
        ]
    }
    values = FindingValues.from_summary(summary, CATALOG["chest-classifier"])
    assert values.get("Nodule.present") == ("false",)  # its threshold is 0.7
    assert values.get("Effusion.present") == ("true",)
    assert values.get("Nodule.probability") == (0.69,)
    text = rule(
        """\
        - name: nodule
          when: {Nodule.probability: {min: 0.6}, Nodule.present: {not: true}}
          forward_to: [research]
        """,
        "chest-classifier",
    )
    (verdict,) = route_findings(load(text).rules[0].on_findings, values)
    assert verdict.fired


def test_a_stored_entry_reads_back_to_the_same_entry() -> None:
    text = rule(
        """\
        - name: all-forms
          when:
            "SUV 2.5 region.present": {not: false}
            "SUV 2.5 region.max": {min: 2.5, max: 40}
            "SUV 2.5 region.mean": [4, 5]
            "SUV 2.5 region.volume_ml": {exists: true}
          send_results_to: board
        """
    )
    original = load(text).rules[0].on_findings
    stored = [route_as_dict(route) for route in original]
    again = routes_from_dicts(stored)
    assert [(r.name, r.send_results_to, r.forward_to) for r in again] == [
        (r.name, r.send_results_to, r.forward_to) for r in original
    ]
    assert [(c.keyword, c.kind, c.condition) for c in again[0].when] == [
        (c.keyword, c.kind, c.condition) for c in original[0].when
    ]
    with pytest.raises(ValueError, match="unknown measurement"):
        routes_from_dicts([{**stored[0], "when": {"X.size": 1}}])


# -- explain -------------------------------------------------------------------------------


def test_explain_shows_each_entry_with_its_values_or_why_they_are_unknown() -> None:
    ruleset = load(rule(LESION))
    pet = SeriesAttributes.from_values({"Modality": "PT"}, series_uid="1.2.3")
    from_files = explain(ruleset, pet)
    assert "on findings (large-lesion): known only for a stored series with a done job" in (
        from_files
    )
    no_job = explain(ruleset, pet, findings={})
    assert "no done job of this pipeline on the series yet" in no_job

    values = FindingValues.from_summary(lesion_summary(7.5, 12.0), SEGMENTS)
    text = explain(ruleset, pet, findings={"pet-suv-reference": values})
    assert "on findings of the latest done pet-suv-reference job (values in SUVbw):" in text
    assert "FIRES  large-lesion: results to board; forward the series to research" in text
    assert "holds  SUV 2.5 region.max is 12: min 10 holds [r.yaml:10]" in text
    assert "  on findings: large-lesion (rule pet): results to board" in text

    absent = FindingValues.from_summary({"regions": []}, SEGMENTS)
    text = explain(ruleset, pet, findings={"pet-suv-reference": absent})
    assert "no     large-lesion" in text
    assert "FAILS  SUV 2.5 region is absent (no max): min 10 fails" in text
    assert "  on findings:" not in text.split("Decision:")[1]
