"""Matching: each operator, numbers as numbers, membership, missing and differing values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.rules import Outcome, RuleSet, SeriesAttributes, evaluate, parse_rules

DESTINATIONS = ("pacs", "research", "viewer")
PIPELINES = ("ct-tissue-reference", "pet-suv-reference")


def ruleset(text: str) -> RuleSet:
    return parse_rules([(Path("r.yaml"), text)], destinations=DESTINATIONS, pipelines=PIPELINES)


def series(**values: Any) -> SeriesAttributes:
    derived = {k: values.pop(k) for k in ("image_count", "calling_ae") if k in values}
    return SeriesAttributes.from_values(values, **derived)


def outcome(match: str, attributes: SeriesAttributes) -> tuple[bool, str | None]:
    rules = ruleset(f"- name: r\n  match: {match}\n  forward_to: pacs\n")
    (verdict,) = evaluate(rules, attributes).verdicts
    return verdict.matched, verdict.failure.reason if verdict.failure else None


AXIAL = ("ORIGINAL", "PRIMARY", "AXIAL")
DERIVED_AXIAL = ("DERIVED", "SECONDARY", "AXIAL")

# (id, match, series values, expected)
CASES = [
    ("equals", "{Modality: CT}", series(Modality="CT"), True),
    ("equals-other", "{Modality: CT}", series(Modality="MR"), False),
    ("text-is-stripped", "{Modality: CT}", series(Modality=" CT "), True),
    ("code-strings-are-case-sensitive", "{Modality: CT}", series(Modality="ct"), False),
    ("number-equals-number", "{SliceThickness: 5}", series(SliceThickness=[5.0]), True),
    ("yaml-text-number", "{SliceThickness: '5'}", series(SliceThickness=[5.0]), True),
    ("ds-text-in-data", "{SliceThickness: 5}", series(SliceThickness=["5.000"]), True),
    ("is-number", "{SeriesNumber: 201}", series(SeriesNumber=["0201"]), True),
    (
        "fl-is-32-bit",
        "{SpacingBetweenSlices: 0.1}",
        series(SpacingBetweenSlices=[float(np.float32(0.1))]),
        True,
    ),
    ("number-differs", "{SliceThickness: 5}", series(SliceThickness=[5.5]), False),
    ("max-inclusive", "{SliceThickness: {max: 5}}", series(SliceThickness=[5.0]), True),
    ("max-above", "{SliceThickness: {max: 5}}", series(SliceThickness=[5.5]), False),
    ("min-below", "{SliceThickness: {min: 1}}", series(SliceThickness=[0.5]), False),
    ("range", "{SliceThickness: {min: 1, max: 5}}", series(SliceThickness=[1]), True),
    ("range-is-numeric-not-text", "{SeriesNumber: {max: 20}}", series(SeriesNumber=["100"]), False),
    (
        "malformed-number-fails-range",
        "{SliceThickness: {max: 5}}",
        series(SliceThickness=["thin"]),
        False,
    ),
    ("image-count", "{ImageCount: {min: 20}}", series(image_count=28), True),
    ("image-count-low", "{ImageCount: {min: 20}}", series(image_count=3), False),
    ("any-of", "{Modality: [CT, MR]}", series(Modality="MR"), True),
    ("any-of-none", "{Modality: {any_of: [CT, MR]}}", series(Modality="PT"), False),
    ("membership", "{ImageType: AXIAL}", series(ImageType=[AXIAL]), True),
    ("membership-absent", "{ImageType: LOCALIZER}", series(ImageType=[AXIAL]), False),
    ("membership-any-of", "{ImageType: [LOCALIZER, PRIMARY]}", series(ImageType=[AXIAL]), True),
    ("regex-on-members", "{ImageType: {regex: '^AX'}}", series(ImageType=[AXIAL]), True),
    (
        "range-on-every-member",
        "{PixelSpacing: {max: 0.5}}",
        series(PixelSpacing=[[0.45, 0.45]]),
        True,
    ),
    ("range-member-fails", "{PixelSpacing: {max: 0.5}}", series(PixelSpacing=[[0.45, 0.6]]), False),
    (
        "regex-is-search",
        "{SeriesDescription: {regex: '(?i)abd|chest|body'}}",
        series(SeriesDescription="CT Abdomen 3mm"),
        True,
    ),
    (
        "regex-no-match",
        "{SeriesDescription: {regex: '(?i)abd|chest|body'}}",
        series(SeriesDescription="STD BRAIN 5MM"),
        False,
    ),
    (
        "regex-anchored",
        "{SeriesDescription: {regex: '^BRAIN$'}}",
        series(SeriesDescription="STD BRAIN"),
        False,
    ),
    (
        "regex-case-sensitive",
        "{SeriesDescription: {regex: brain}}",
        series(SeriesDescription="BRAIN"),
        False,
    ),
    ("not", "{Modality: {not: CT}}", series(Modality="MR"), True),
    ("not-fails", "{Modality: {not: [CT, MR]}}", series(Modality="MR"), False),
    (
        "not-regex",
        "{SeriesDescription: {not: {regex: '(?i)scout'}}}",
        series(SeriesDescription="Scout"),
        False,
    ),
    ("not-range", "{SliceThickness: {not: {max: 1}}}", series(SliceThickness=[5]), True),
    ("exists", "{PatientWeight: {exists: true}}", series(PatientWeight=[70]), True),
    ("exists-false-present", "{PatientWeight: {exists: false}}", series(PatientWeight=[70]), False),
    ("missing-never-equals", "{Modality: CT}", series(), False),
    ("missing-never-in-range", "{SliceThickness: {max: 5}}", series(), False),
    ("missing-never-regex", "{SeriesDescription: {regex: '.*'}}", series(), False),
    ("missing-never-not", "{Modality: {not: CT}}", series(), False),
    ("missing-exists", "{Modality: {exists: true}}", series(), False),
    ("missing-exists-false", "{Modality: {exists: false}}", series(), True),
    ("empty-value-is-missing", "{Modality: {exists: false}}", series(Modality=["", None]), True),
    ("differing-all-hold", "{SliceThickness: {max: 5}}", series(SliceThickness=[1, 5]), True),
    ("differing-one-fails", "{SliceThickness: {max: 5}}", series(SliceThickness=[1, 5.5]), False),
    ("differing-not", "{Modality: {not: CT}}", series(Modality=["MR", "CT"]), False),
    ("differing-membership", "{ImageType: AXIAL}", series(ImageType=[AXIAL, DERIVED_AXIAL]), True),
    (
        "differing-membership-fails",
        "{ImageType: ORIGINAL}",
        series(ImageType=[AXIAL, DERIVED_AXIAL]),
        False,
    ),
    ("derived-ae", "{CallingAETitle: SCANNER1}", series(calling_ae="SCANNER1 "), True),
    ("match-all", "{}", series(), True),
]


@pytest.mark.parametrize(
    ("match", "attributes", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_conditions(match: str, attributes: SeriesAttributes, expected: bool) -> None:
    matched, reason = outcome(match, attributes)
    assert matched is expected, reason
    assert (reason is None) is expected


@pytest.mark.parametrize(
    ("match", "attributes", "reason"),
    [
        ("{Modality: CT}", series(Modality="MR"), "Modality is MR: equals CT fails"),
        (
            "{SliceThickness: {max: 5}}",
            series(SliceThickness=[1.0, 5.5]),
            "SliceThickness differs between instances (1, 5.5): max 5 fails for 5.5",
        ),
        ("{Modality: CT}", series(), "Modality is missing: equals CT fails"),
        (
            "{Modality: {not: CT}}",
            series(),
            "Modality is missing: not (equals CT) fails "
            "(not never matches a missing attribute; use exists: false)",
        ),
        ("{Units: {exists: true}}", series(), "Units is missing: exists fails"),
        (
            "{Units: {exists: false}}",
            series(Units="BQML"),
            "Units is present (BQML): exists: false fails",
        ),
        (
            "{ImageType: ORIGINAL}",
            series(ImageType=[AXIAL, DERIVED_AXIAL]),
            "ImageType differs between instances (ORIGINAL\\PRIMARY\\AXIAL, "
            "DERIVED\\SECONDARY\\AXIAL): equals ORIGINAL fails for DERIVED\\SECONDARY\\AXIAL",
        ),
        (
            "{SliceThickness: {min: 1, max: 2}}",
            series(SliceThickness=[0.5]),
            "SliceThickness is 0.5: min 1 max 2 fails",
        ),
    ],
)
def test_reasons_name_the_value_that_fails(
    match: str, attributes: SeriesAttributes, reason: str
) -> None:
    assert outcome(match, attributes) == (False, reason)


def test_the_first_failing_condition_is_reported_in_file_order() -> None:
    rules = ruleset(
        "- name: r\n"
        "  match:\n"
        "    Modality: CT\n"
        "    SliceThickness: {max: 1}\n"
        "    BodyPartExamined: CHEST\n"
        "  forward_to: pacs\n"
    )
    (verdict,) = evaluate(rules, series(Modality="CT", SliceThickness=[5])).verdicts
    assert verdict.failure is not None
    assert (verdict.failure.clause.keyword, verdict.failure.clause.line) == ("SliceThickness", 4)


def test_every_matching_rule_fires_and_actions_add_up() -> None:
    rules = ruleset(
        "- {name: a, match: {Modality: CT}, forward_to: [research, pacs]}\n"
        "- {name: b, match: {Modality: MR}, forward_to: [viewer]}\n"
        "- {name: c, match: {}, forward_to: [pacs, viewer],"
        " pipeline: ct-tissue-reference, send_to: [pacs]}\n"
        "- {name: d, match: {}, pipeline: pet-suv-reference}\n"
    )
    evaluation = evaluate(rules, series(Modality="CT"))
    decision = evaluation.decision
    assert decision.matched_rules == ("a", "c", "d")
    assert decision.forward_to == ("research", "pacs", "viewer")
    runs = [(r.rule, r.pipeline, r.send_to) for r in decision.pipeline_runs]
    assert runs == [("c", "ct-tissue-reference", ("pacs",)), ("d", "pet-suv-reference", ())]
    assert decision.routed
    assert evaluation.version == rules.version
    assert json.loads(json.dumps(decision.as_dict())) == {
        "matched_rules": ["a", "c", "d"],
        "forward_to": ["research", "pacs", "viewer"],
        "pipeline_runs": [
            {"rule": "c", "pipeline": "ct-tissue-reference", "send_to": ["pacs"]},
            {"rule": "d", "pipeline": "pet-suv-reference", "send_to": []},
        ],
    }


def test_stop_skips_every_rule_after_it() -> None:
    rules = ruleset(
        "- {name: low, match: {}, forward_to: [pacs], priority: -5}\n"
        "- {name: qa, match: {CallingAETitle: QA}, forward_to: [research],"
        " priority: 10, stop: true}\n"
        "- {name: same-later, match: {}, forward_to: [viewer], priority: 10}\n"
        "- {name: top, match: {}, forward_to: [pacs], priority: 20}\n"
    )
    assert [r.name for r in rules] == ["top", "qa", "same-later", "low"]
    evaluation = evaluate(rules, series(calling_ae="QA"))
    outcomes = [(v.rule.name, v.outcome, v.stopped_by) for v in evaluation.verdicts]
    assert outcomes == [
        ("top", Outcome.MATCHED, None),
        ("qa", Outcome.MATCHED, None),
        ("same-later", Outcome.SKIPPED, "qa"),
        ("low", Outcome.SKIPPED, "qa"),
    ]
    assert evaluation.decision.forward_to == ("pacs", "research")


def test_stop_on_a_rule_that_does_not_match_stops_nothing() -> None:
    rules = ruleset(
        "- {name: qa, match: {CallingAETitle: QA}, forward_to: [research], stop: true}\n"
        "- {name: all, match: {}, forward_to: [pacs]}\n"
    )
    evaluation = evaluate(rules, series(calling_ae="CT1"))
    assert evaluation.decision.matched_rules == ("all",)


def test_disabled_rules_never_fire_but_say_whether_they_would() -> None:
    rules = ruleset(
        "- {name: off-match, enabled: false, match: {}, forward_to: [pacs]}\n"
        "- {name: off-stop, enabled: false, stop: true, match: {}, forward_to: [pacs]}\n"
        "- {name: off-miss, enabled: false, match: {Modality: MR}, forward_to: [pacs]}\n"
        "- {name: live, match: {}, forward_to: [research]}\n"
    )
    evaluation = evaluate(rules, series(Modality="CT"))
    verdicts = {v.rule.name: v for v in evaluation.verdicts}
    assert verdicts["off-match"].outcome is Outcome.DISABLED
    assert verdicts["off-match"].failure is None
    assert verdicts["off-miss"].failure is not None
    assert verdicts["live"].outcome is Outcome.MATCHED  # a disabled stop rule stops nothing
    assert evaluation.decision.matched_rules == ("live",)


def test_no_match_is_unrouted() -> None:
    rules = ruleset("- {name: mr, match: {Modality: MR}, forward_to: [pacs]}\n")
    decision = evaluate(rules, series(Modality="CT")).decision
    assert not decision.routed
    assert decision.as_dict() == {"matched_rules": [], "forward_to": [], "pipeline_runs": []}


def test_evaluation_is_deterministic() -> None:
    rules = ruleset(
        "- {name: a, match: {SliceThickness: {max: 5}}, forward_to: [pacs]}\n"
        "- {name: b, match: {Modality: [CT]}, forward_to: [research]}\n"
    )
    attributes = series(Modality="CT", SliceThickness=[1, 5])
    assert evaluate(rules, attributes) == evaluate(rules, attributes)
