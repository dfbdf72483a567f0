"""Evaluate a RuleSet on one series: a verdict per rule and the resulting Decision.

Pure and deterministic: the same rules and attributes give the same Evaluation.

Semantics (docs/rules.md explains them for administrators):

- Rules run in RuleSet order (priority, highest first; then file name, then position).
  Every matching rule fires, until a matching rule with ``stop: true``: every rule after
  it is skipped.
- A rule matches when every clause of its ``match`` holds (``match: {}`` always does).
- A clause holds when its condition holds for *every* distinct value the series has for
  the keyword: a mixed series matches only what all of its instances match.
- A missing attribute fails every condition except ``exists: false`` (``not`` included).
- Equality on a multi-valued value is membership (``ImageType: AXIAL`` matches
  ``ORIGINAL\\PRIMARY\\AXIAL``); ``regex`` is ``re.search`` on any member; ``min``/``max``
  must hold for every member.
- Numbers compare as numbers, equal when they agree to about 6 significant digits (FL
  values are 32-bit floats); text compares exactly, case-sensitively, after stripping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from dicomnode.rules.attributes import SeriesAttributes
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
    Rule,
    RuleSet,
    Scalar,
    Value,
    describe,
    format_value,
)


class Values(Protocol):
    """What conditions read: a series' attributes, or a done job's findings."""

    def get(self, keyword: str) -> tuple[Value, ...]: ...


class Outcome(Enum):
    MATCHED = "matched"
    NOT_MATCHED = "not matched"
    DISABLED = "disabled"
    SKIPPED = "skipped"  # a rule before it matched and has stop: true


@dataclass(frozen=True, slots=True)
class Failure:
    """The first clause of a rule that does not hold, and why, in words."""

    clause: Clause
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one rule did with the series.

    ``failure`` is filled for disabled and skipped rules too (what would have failed), so
    an administrator testing a rule before enabling it sees whether it would match.
    """

    rule: Rule
    outcome: Outcome
    failure: Failure | None = None
    stopped_by: str | None = None

    @property
    def matched(self) -> bool:
        return self.outcome is Outcome.MATCHED


@dataclass(frozen=True, slots=True)
class PipelineRun:
    rule: str
    pipeline: str
    send_to: tuple[str, ...]
    on_findings: tuple[FindingRoute, ...] = ()  # evaluated when the job is done
    shadow: bool = False  # results kept, nothing sent (docs/shadow.md)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the series: the union of the matched rules' actions."""

    matched_rules: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    pipeline_runs: tuple[PipelineRun, ...] = ()

    @property
    def routed(self) -> bool:
        """False when no rule matched: the series is recorded as unrouted."""
        return bool(self.matched_rules)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, to store with the series."""
        return {
            "matched_rules": list(self.matched_rules),
            "forward_to": list(self.forward_to),
            "pipeline_runs": [
                {
                    "rule": run.rule,
                    "pipeline": run.pipeline,
                    "send_to": list(run.send_to),
                    **_entries(run),
                }
                for run in self.pipeline_runs
            ],
        }


def _entries(run: PipelineRun) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    if run.on_findings:
        entries["on_findings"] = [route.name for route in run.on_findings]
    if run.shadow:
        entries["shadow"] = True
    return entries


@dataclass(frozen=True, slots=True)
class Evaluation:
    version: str
    verdicts: tuple[Verdict, ...]
    decision: Decision


def evaluate(ruleset: RuleSet, attributes: SeriesAttributes) -> Evaluation:
    """Every rule's verdict on ``attributes`` and the Decision they add up to."""
    verdicts: list[Verdict] = []
    stopped_by: str | None = None
    for rule in ruleset:
        failure = first_failure(rule, attributes)
        if not rule.enabled:
            verdicts.append(Verdict(rule, Outcome.DISABLED, failure))
        elif stopped_by is not None:
            verdicts.append(Verdict(rule, Outcome.SKIPPED, failure, stopped_by))
        elif failure is not None:
            verdicts.append(Verdict(rule, Outcome.NOT_MATCHED, failure))
        else:
            verdicts.append(Verdict(rule, Outcome.MATCHED))
            if rule.stop:
                stopped_by = rule.name
    return Evaluation(ruleset.version, tuple(verdicts), _decide(verdicts))


def first_failure(rule: Rule, attributes: SeriesAttributes) -> Failure | None:
    """The first clause of ``rule`` (in file order) that ``attributes`` fail."""
    for clause in rule.match:
        reason = check_clause(clause, attributes)
        if reason is not None:
            return Failure(clause, reason)
    return None


def check_clause(clause: Clause, attributes: Values) -> str | None:
    """None when the clause holds; otherwise why not, naming the value that fails."""
    keyword, condition = clause.keyword, clause.condition
    values = attributes.get(keyword)
    if isinstance(condition, Exists):
        if condition.present and not values:
            return f"{keyword} is missing: exists fails"
        if not condition.present and values:
            return f"{keyword} is present ({_listed(values)}): exists: false fails"
        return None
    if not values:
        if isinstance(condition, Not):
            return (
                f"{keyword} is missing: {describe(condition)} fails "
                "(not never matches a missing attribute; use exists: false)"
            )
        return f"{keyword} is missing: {describe(condition)} fails"
    for value in values:
        if not holds(condition, value):
            if len(values) == 1:
                return f"{keyword} is {format_value(value)}: {describe(condition)} fails"
            return (
                f"{keyword} differs between instances ({_listed(values)}): "
                f"{describe(condition)} fails for {format_value(value)}"
            )
    return None


def holds(condition: Condition, value: Value) -> bool:
    """Whether one distinct value satisfies ``condition`` (Exists is decided per keyword)."""
    members: tuple[Scalar, ...] = value if isinstance(value, tuple) else (value,)
    if isinstance(condition, Equals):
        return any(_equal(member, condition.value) for member in members)
    if isinstance(condition, AnyOf):
        return any(_equal(m, wanted) for m in members for wanted in condition.values)
    if isinstance(condition, Regex):
        return any(condition.compiled.search(_text(m)) is not None for m in members)
    if isinstance(condition, Range):
        return all(_within(member, condition) for member in members)
    if isinstance(condition, Not):
        return not holds(condition.inner, value)
    return True  # Exists: the keyword has a value, or this would not be called


def _equal(member: Scalar, wanted: Scalar) -> bool:
    if isinstance(wanted, float):
        return isinstance(member, float) and math.isclose(member, wanted, rel_tol=1e-6)
    return _text(member) == wanted


def _within(member: Scalar, condition: Range) -> bool:
    if not isinstance(member, float):
        return False  # a malformed number in the data fails every numeric bound
    if condition.min is not None and member < condition.min:
        return False
    return condition.max is None or member <= condition.max


def _text(member: Scalar) -> str:
    return format_value(member)


def _listed(values: tuple[Value, ...]) -> str:
    return ", ".join(format_value(value) for value in values)


def _decide(verdicts: list[Verdict]) -> Decision:
    matched = [verdict.rule for verdict in verdicts if verdict.matched]
    forward: dict[str, None] = {}
    for rule in matched:
        forward.update(dict.fromkeys(rule.forward_to))
    runs = tuple(
        PipelineRun(rule.name, rule.pipeline, rule.send_to, rule.on_findings, rule.shadow)
        for rule in matched
        if rule.pipeline is not None
    )
    return Decision(tuple(rule.name for rule in matched), tuple(forward), runs)
