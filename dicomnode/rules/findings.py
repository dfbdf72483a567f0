"""Routing on a pipeline's findings: ``on_findings`` entries, the values a done job gives
them, and their evaluation with the same conditions as ``match``.

A key in ``when`` names a finding and one of its measurements, ``Lesion.volume_ml``. It
is split at the last dot, since finding names may hold dots (``SUV 2.5 region.max``).
A segmentation's findings are its segments (by ``name``) with ``present``, ``volume_ml``,
``mean`` and ``max`` (in the pipeline's units); a classifier's are its findings (by code
meaning) with ``present`` (probability at or above the finding's threshold) and
``probability``. A finding that is absent has ``present: false`` and no measurements.

Values are the series attributes' kind of values (floats, and ``"true"``/``"false"``
for ``present``), so ``matching.check_clause`` decides every condition: one evaluation,
for series and findings alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomnode.rules.conditions import KeyPath, Report, parse_condition
from dicomnode.rules.keywords import Keyword, KeywordError, Kind
from dicomnode.rules.matching import check_clause
from dicomnode.rules.model import (
    AnyOf,
    Clause,
    Condition,
    Equals,
    Exists,
    FindingRoute,
    Not,
    Range,
    Regex,
    Scalar,
    Value,
    describe,
    format_value,
)

SEGMENT_MEASUREMENTS = {
    "present": Kind.BOOLEAN,
    "volume_ml": Kind.NUMBER,
    "mean": Kind.NUMBER,
    "max": Kind.NUMBER,
}
CLASSIFIER_MEASUREMENTS = {"present": Kind.BOOLEAN, "probability": Kind.NUMBER}
MEASUREMENTS = {**SEGMENT_MEASUREMENTS, **CLASSIFIER_MEASUREMENTS}
ENTRY_KEYS = ("name", "when", "send_results_to", "forward_to")

# Reads an entry's destination list: (the entry's path, its key, the raw value) -> names.
Destinations = Callable[[KeyPath, str, Any], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class PipelineFindings:
    """What a pipeline can find: its segments' names, its classifier findings' thresholds."""

    segments: tuple[str, ...] = ()
    classifier: tuple[tuple[str, float], ...] = ()  # (meaning, threshold of present)

    def measurements(self, finding: str) -> dict[str, Kind] | None:
        """The measurements ``finding`` has, None when the pipeline has no such finding."""
        if finding in self.segments:
            return SEGMENT_MEASUREMENTS
        if any(name == finding for name, _ in self.classifier):
            return CLASSIFIER_MEASUREMENTS
        return None

    def names(self) -> tuple[str, ...]:
        return (*self.segments, *(name for name, _ in self.classifier))


def resolve_finding(key: str, pipeline: str, findings: PipelineFindings | None) -> Keyword:
    """The keyword a ``when`` key names; KeywordError with suggestions when none.

    Without ``findings`` (the pipeline's outputs unknown), only the measurement is checked.
    """
    finding, dot, measurement = key.rpartition(".")
    if not dot or not finding:
        raise KeywordError(
            "a finding key is <finding>.<measurement>, e.g. Lesion.volume_ml "
            f"(measurements: {', '.join(MEASUREMENTS)})"
        )
    known: Mapping[str, Kind] = MEASUREMENTS
    if findings is not None:
        found = findings.measurements(finding)
        if found is None:
            names = findings.names()
            raise KeywordError(
                f"pipeline {pipeline} has no finding {finding!r}{_close(finding, names)} "
                f"(its findings: {', '.join(names) or 'none'})"
            )
        known = found
    if measurement not in known:
        raise KeywordError(
            f"unknown measurement {measurement!r}{_close(measurement, known)}; "
            f"{finding} has {', '.join(known)}"
        )
    return Keyword(key, known[measurement], "finding")


def parse_on_findings(
    raw: Any,
    path: KeyPath,
    report: Report,
    *,
    pipeline: str,
    findings: PipelineFindings | None,
    destinations: Destinations,
    line_of: Callable[[KeyPath], int | None],
) -> tuple[FindingRoute, ...]:
    """The entries of a rule's ``on_findings`` list, reporting every mistake in them."""
    if not isinstance(raw, list) or not raw:
        report(path, "on_findings is a list of entries, each with name, when and destinations")
        return ()
    routes: list[FindingRoute] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        here = (*path, index)
        if not isinstance(entry, dict):
            report(here, "an entry is a mapping with name, when, send_results_to/forward_to")
            continue
        for key in entry:
            if str(key) not in ENTRY_KEYS:
                report((*here, str(key)), f"unknown key{_close(str(key), ENTRY_KEYS, '()')}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            report((*here, "name") if "name" in entry else here, "every entry needs a name")
        elif name in names:
            report((*here, "name"), f"duplicate entry name {name!r} in this rule")
        names.add(str(name))
        when = _when(entry, here, report, pipeline, findings, line_of)
        send = destinations(here, "send_results_to", entry.get("send_results_to"))
        forward = destinations(here, "forward_to", entry.get("forward_to"))
        if not entry.get("send_results_to") and not entry.get("forward_to"):
            report(here, "no destination: give send_results_to and/or forward_to")
        if when is not None:
            routes.append(FindingRoute(str(name), when, send, forward, line_of(here)))
    return tuple(routes)


def _when(
    entry: dict[Any, Any],
    here: KeyPath,
    report: Report,
    pipeline: str,
    findings: PipelineFindings | None,
    line_of: Callable[[KeyPath], int | None],
) -> tuple[Clause, ...] | None:
    where = (*here, "when")
    raw = entry.get("when")
    if not isinstance(raw, dict):
        message = "when is a mapping of finding key to condition, e.g. Lesion.present: true"
        report(where if "when" in entry else here, message + " (when: {} fires always)")
        return None
    clauses: list[Clause] = []
    valid = True
    for key, value in raw.items():
        path = (*where, str(key))
        try:
            keyword = resolve_finding(str(key), pipeline, findings)
        except KeywordError as exc:
            report(path, str(exc))
            valid = False
            continue
        condition = parse_condition(value, keyword, path, report)
        if condition is None:
            valid = False
        else:
            clauses.append(Clause(keyword.name, keyword.kind, condition, line_of(path)))
    return tuple(clauses) if valid else None


# -- stored with a job, read back by the worker -------------------------------------------


def route_as_dict(route: FindingRoute) -> dict[str, Any]:
    """A JSON form that ``routes_from_dicts`` parses back to the same entry."""
    return {
        "name": route.name,
        "when": {c.keyword: _condition_yaml(c.condition, c.kind) for c in route.when},
        "send_results_to": list(route.send_results_to),
        "forward_to": list(route.forward_to),
    }


def routes_from_dicts(raw: Iterable[Any]) -> tuple[FindingRoute, ...]:
    """Entries stored by ``route_as_dict``, parsed by the loader's code; ValueError if not."""
    problems: list[str] = []

    def report(path: KeyPath, message: str) -> None:
        problems.append(f"{'.'.join(str(p) for p in path)}: {message}")

    def destinations(_here: KeyPath, _key: str, value: Any) -> tuple[str, ...]:
        return tuple(str(item) for item in value or ())

    routes = parse_on_findings(
        list(raw),
        ("on_findings",),
        report,
        pipeline="",
        findings=None,
        destinations=destinations,
        line_of=lambda _path: None,
    )
    if problems:
        raise ValueError("; ".join(problems))
    return routes


def _condition_yaml(condition: Condition, kind: Kind) -> Any:
    def scalar(value: Scalar) -> Any:
        return value == "true" if kind is Kind.BOOLEAN else value

    if isinstance(condition, Equals):
        return {"equals": scalar(condition.value)}
    if isinstance(condition, AnyOf):
        return {"any_of": [scalar(value) for value in condition.values]}
    if isinstance(condition, Regex):
        return {"regex": condition.pattern}
    if isinstance(condition, Range):
        bounds = {"min": condition.min, "max": condition.max}
        return {key: bound for key, bound in bounds.items() if bound is not None}
    if isinstance(condition, Exists):
        return {"exists": condition.present}
    assert isinstance(condition, Not)
    return {"not": _condition_yaml(condition.inner, kind)}


# -- what a done job found, and what its entries make of it ------------------------------


@dataclass(frozen=True, slots=True)
class FindingValues:
    """A done job's findings as values per key (``Lesion.volume_ml``), for the conditions."""

    values: Mapping[str, tuple[Value, ...]] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    units: str | None = None

    def get(self, keyword: str) -> tuple[Value, ...]:
        return self.values.get(keyword, ())

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], findings: PipelineFindings) -> FindingValues:
        """The values of a job's result summary (``RunResult.summary``).

        A segment the pipeline defines but the summary lacks found nothing: absent. A
        classifier finding is present at or above its threshold (the summary's own
        ``present`` where it carries one).
        """
        values: dict[str, tuple[Value, ...]] = {}
        absent: set[str] = set()
        regions = {str(r.get("name")): r for r in summary.get("regions", [])}
        for name in dict.fromkeys((*findings.segments, *regions)):
            region = regions.get(name)
            if region is None:
                values[f"{name}.present"] = ("false",)
                absent.add(name)
                continue
            values[f"{name}.present"] = ("true",)
            for measurement in ("volume_ml", "mean", "max"):
                if isinstance(region.get(measurement), int | float):
                    values[f"{name}.{measurement}"] = (float(region[measurement]),)
        thresholds = dict(findings.classifier)
        for item in summary.get("findings", []):
            name = str(item.get("finding"))
            probability = float(item.get("probability", 0.0))
            present = item.get("present")
            if not isinstance(present, bool):
                present = probability >= thresholds.get(name, 0.5)
            values[f"{name}.present"] = ("true" if present else "false",)
            values[f"{name}.probability"] = (probability,)
            if not present:
                absent.add(name)
        units = summary.get("units")
        return cls(values, frozenset(absent), str(units) if units else None)


@dataclass(frozen=True, slots=True)
class Check:
    """One condition of an entry on a job's findings: whether it holds, and the values."""

    clause: Clause
    holds: bool
    text: str  # e.g. "Lesion.volume_ml is 7.2: min 5 holds"


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    route: FindingRoute
    checks: tuple[Check, ...]

    @property
    def fired(self) -> bool:
        return all(check.holds for check in self.checks)


def route_findings(
    routes: Iterable[FindingRoute], values: FindingValues
) -> tuple[RouteVerdict, ...]:
    """Each entry's verdict: it fires when every condition in its ``when`` holds."""
    return tuple(
        RouteVerdict(route, tuple(_check(clause, values) for clause in route.when))
        for route in routes
    )


def _check(clause: Clause, values: FindingValues) -> Check:
    reason = check_clause(clause, values)
    finding, _, measurement = clause.keyword.rpartition(".")
    if finding in values.absent and measurement != "present":
        verdict = "fails" if reason is not None else "holds"
        text = f"{finding} is absent (no {measurement}): {describe(clause.condition)} {verdict}"
        return Check(clause, reason is None, text)
    if reason is not None:
        return Check(clause, False, reason + (" (absent)" if finding in values.absent else ""))
    shown = ", ".join(format_value(value) for value in values.get(clause.keyword))
    return Check(clause, True, f"{clause.keyword} is {shown}: {describe(clause.condition)} holds")


def _close(name: str, known: Iterable[str], style: str = ";") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {close[0]}?)" if style == "()" else f"; did you mean {close[0]}?"
