"""Explain in plain text what the rules do with one series, and why.

The text ``dicomnode rules explain`` prints: the series' values of every keyword a rule
uses (missing and differing ones marked), each rule's verdict with the first failing
condition and where it is written, and the resulting decision. For a matching rule with
``on_findings``, each entry's conditions on the findings of the pipeline's latest done job
on the series (``findings``, by pipeline), when the caller has one.
"""

from __future__ import annotations

from collections.abc import Mapping

from dicomnode.rules.attributes import SeriesAttributes
from dicomnode.rules.findings import FindingValues, RouteVerdict, route_findings
from dicomnode.rules.keywords import DERIVED
from dicomnode.rules.matching import Evaluation, Outcome, Verdict, evaluate
from dicomnode.rules.model import Rule, RuleSet, format_value

_LABELS = {
    Outcome.MATCHED: "MATCH",
    Outcome.NOT_MATCHED: "no match",
    Outcome.DISABLED: "disabled",
    Outcome.SKIPPED: "skipped",
}


def explain(
    ruleset: RuleSet,
    attributes: SeriesAttributes,
    evaluation: Evaluation | None = None,
    findings: Mapping[str, FindingValues] | None = None,
) -> str:
    """The explanation of ``ruleset`` on ``attributes`` (evaluated here unless given).

    ``findings``: per pipeline, what its latest done job on the series found; None when
    the series is not a stored one (files), so no job can have run on it.
    """
    if evaluation is None:
        evaluation = evaluate(ruleset, attributes)
    lines = [_title(attributes), *_attribute_lines(ruleset, attributes), ""]
    count = f"{len(ruleset)} rule{'s' if len(ruleset) != 1 else ''}"
    lines.append(f"Rules (version {ruleset.version[:12]}, {count}, in evaluation order):")
    if not ruleset.rules:
        lines.append("  (no rules)")
    routed: list[tuple[str, RouteVerdict]] = []
    for verdict in evaluation.verdicts:
        lines.extend(_verdict_lines(verdict))
        if verdict.matched and verdict.rule.on_findings:
            lines.extend(_findings_lines(verdict.rule, findings, routed))
    lines.append("")
    lines.extend(_decision_lines(evaluation))
    for rule, route in routed:
        if route.fired:
            lines.append(f"  on findings: {route.route.name} (rule {rule}): {_targets(route)}")
    return "\n".join(lines) + "\n"


def _findings_lines(
    rule: Rule,
    findings: Mapping[str, FindingValues] | None,
    routed: list[tuple[str, RouteVerdict]],
) -> list[str]:
    """Each on_findings entry of a matching rule on its pipeline's findings, if known."""
    detail = "      "
    values = None if findings is None or rule.pipeline is None else findings.get(rule.pipeline)
    if values is None:
        why = (
            "no done job of this pipeline on the series yet"
            if findings is not None
            else "known only for a stored series with a done job (--series)"
        )
        names = ", ".join(route.name for route in rule.on_findings)
        return [f"{detail}on findings ({names}): {why}"]
    units = f" (values in {values.units})" if values.units else ""
    lines = [f"{detail}on findings of the latest done {rule.pipeline} job{units}:"]
    for verdict in route_findings(rule.on_findings, values):
        routed.append((rule.name, verdict))
        label = "FIRES" if verdict.fired else "no"
        lines.append(f"{detail}  {label:<5}  {verdict.route.name}: {_targets(verdict)}")
        for check in verdict.checks:
            mark = "holds" if check.holds else "FAILS"
            where = f" [{rule.file}:{check.clause.line}]" if check.clause.line else ""
            lines.append(f"{detail}      {mark}  {check.text}{where}")
        if not verdict.checks:
            lines.append(f"{detail}      (when: {{}}: fires for every done job)")
    return lines


def _targets(verdict: RouteVerdict) -> str:
    route = verdict.route
    parts = []
    if route.send_results_to:
        parts.append("results to " + ", ".join(route.send_results_to))
    if route.forward_to:
        parts.append("forward the series to " + ", ".join(route.forward_to))
    return "; ".join(parts)


def _title(attributes: SeriesAttributes) -> str:
    series = f"Series {attributes.series_uid}" if attributes.series_uid else "Series"
    return f"{series}: attributes the rules use"


def _attribute_lines(ruleset: RuleSet, attributes: SeriesAttributes) -> list[str]:
    keywords = ruleset.keywords()
    if not keywords:
        return ["  (no rule matches on an attribute)"]
    width = max(len(keyword) for keyword in keywords)
    lines = []
    for keyword in keywords:
        values = attributes.get(keyword)
        if not values and keyword in DERIVED and keyword != "ImageCount":
            shown = "(missing: known only for series the node receives)"
        elif not values:
            shown = "(missing)"
        elif len(values) > 1:
            listed = ", ".join(format_value(value) for value in values)
            shown = f"{listed}  (differs between instances: conditions must hold for each)"
        else:
            shown = format_value(values[0])
        lines.append(f"  {keyword + ':':<{width + 1}} {shown}")
    return lines


def _verdict_lines(verdict: Verdict) -> list[str]:
    rule = verdict.rule
    flags = f"priority {rule.priority}" + (", stop" if rule.stop else "")
    flags += ", shadow" if rule.shadow else ""
    lines = [f"  {_LABELS[verdict.outcome]:<8}  {rule.name}  ({rule.location}, {flags})"]
    detail = "      "
    failure = verdict.failure
    where = f" [{rule.file}:{failure.clause.line}]" if failure and failure.clause.line else ""
    if verdict.outcome is Outcome.MATCHED:
        lines.append(detail + _actions(rule))
    elif verdict.outcome is Outcome.NOT_MATCHED and failure is not None:
        lines.append(f"{detail}{failure.reason}{where}")
    elif verdict.outcome is Outcome.DISABLED:
        would = "would match" if failure is None else f"would not match: {failure.reason}"
        lines.append(f"{detail}enabled: false ({would})")
    elif verdict.outcome is Outcome.SKIPPED:
        would = "would match" if failure is None else f"would not match: {failure.reason}"
        lines.append(f"{detail}{verdict.stopped_by} matched first and has stop: true ({would})")
    return lines


def _actions(rule: Rule) -> str:
    parts = []
    if rule.forward_to:
        parts.append("forward to " + ", ".join(rule.forward_to))
    if rule.pipeline is not None and rule.shadow:
        sends = f"; results would go to {', '.join(rule.send_to)}" if rule.send_to else ""
        parts.append(f"run pipeline {rule.pipeline} in shadow mode (kept, nothing sent{sends})")
    elif rule.pipeline is not None:
        sends = f", results to {', '.join(rule.send_to)}" if rule.send_to else ""
        parts.append(f"run pipeline {rule.pipeline}{sends}")
    return "; ".join(parts)


def _decision_lines(evaluation: Evaluation) -> list[str]:
    decision = evaluation.decision
    if not decision.routed:
        return ["Decision: no rule matches; the series is unrouted (recorded, not sent)"]
    lines = ["Decision:", "  matched:    " + ", ".join(decision.matched_rules)]
    lines.append("  forward to: " + (", ".join(decision.forward_to) or "(nowhere)"))
    for run in decision.pipeline_runs:
        sends = ", ".join(run.send_to) or "(kept on the node)"
        if run.shadow:
            lines.append(
                f"  shadow:     {run.pipeline} (rule {run.rule}), results kept, nothing sent "
                f"(would go to {sends})"
            )
        else:
            lines.append(f"  pipeline:   {run.pipeline} (rule {run.rule}), results to {sends}")
    return lines
