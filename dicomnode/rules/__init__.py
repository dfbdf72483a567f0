"""The rules engine: which completed series go to which pipelines and destinations.

A pure library: rule files in, a RuleSet out (or RulesError listing every mistake); a
RuleSet and a series' attributes in, an Evaluation out. No database, no network.

::

    load_rules(folder, destinations=..., pipelines=...) -> RuleSet      (loading.py)
    SeriesAttributes.from_values(...) / read_series_attributes(...)    (attributes.py)
    evaluate(ruleset, attributes) -> Evaluation(verdicts, decision)    (matching.py)
    explain(ruleset, attributes) -> str                                (explain.py)
    route_findings(entries, FindingValues.from_summary(...))           (findings.py)

The rule format and the matching semantics are documented in ``docs/rules.md``.
"""

from __future__ import annotations

from dicomnode.rules.attributes import (
    SeriesAttributes,
    attributes_from_datasets,
    read_series_attributes,
)
from dicomnode.rules.explain import explain
from dicomnode.rules.findings import FindingValues, PipelineFindings, route_findings
from dicomnode.rules.keywords import DERIVED
from dicomnode.rules.loading import load_rules, parse_rules, rule_files
from dicomnode.rules.matching import (
    Decision,
    Evaluation,
    Failure,
    Outcome,
    PipelineRun,
    Verdict,
    evaluate,
)
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
    RuleProblem,
    RulesError,
    RuleSet,
)

DERIVED_ATTRIBUTES = tuple(DERIVED)

__all__ = [
    "DERIVED_ATTRIBUTES",
    "AnyOf",
    "Clause",
    "Condition",
    "Decision",
    "Equals",
    "Evaluation",
    "Exists",
    "Failure",
    "FindingRoute",
    "FindingValues",
    "Not",
    "Outcome",
    "PipelineFindings",
    "PipelineRun",
    "Range",
    "Regex",
    "Rule",
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "SeriesAttributes",
    "Verdict",
    "attributes_from_datasets",
    "evaluate",
    "explain",
    "load_rules",
    "parse_rules",
    "read_series_attributes",
    "route_findings",
    "rule_files",
]
