"""Ending shadow mode: a rule goes live only on an evaluation report of the model it runs.

The report (``report.json`` of ``dicomnode evaluate``) must be of this kind and version,
of the rule's pipeline, and of the model that pipeline runs now (its SHA-256): a report
that validated another model is refused, and nothing is written. Then the rule's file is
rewritten with ``shadow: false`` on that rule (its other lines as written), validated
with the folder's other files and written atomically (:class:`RuleFiles`), and the
change is audited as ``shadow.end`` with the report's hash and headline metrics. The
live node's hot reload picks the file up. Starting shadow mode needs no report: it is
an ordinary rule edit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from dicomnode.admin.audit import AuditLog
from dicomnode.admin.rulefiles import RuleFiles
from dicomnode.datasets.evaluation_report import parse_report
from dicomnode.errors import ConfigError, DicomNodeError
from dicomnode.results.provenance import Provenance
from dicomnode.rules import Rule
from dicomnode.sourcemap import build_source_map

_SHADOW_TRUE = re.compile(r"(\bshadow\s*:\s*)(true|True|TRUE)\b")
_HEADLINES = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "auc",
    "roc_auc",
    "accuracy",
    "dice",
    "mean_dice",
    "n",
    "items",
)


class ShadowEndRefused(DicomNodeError):  # noqa: N818 - a refusal, like VersionConflict
    """The rule cannot leave shadow mode on this report; nothing was written."""


class RuleNotFound(DicomNodeError):  # noqa: N818 - answered as 404
    """No rule of that name in the rules folder."""


@dataclass(frozen=True, slots=True)
class ShadowEnded:
    rule: str
    file: str
    version: str  # the rules version the rewritten file makes
    audit_id: int
    detail: dict[str, Any]


def report_sha256(content: bytes) -> str:
    """A report is named by the SHA-256 of its ``report.json`` bytes."""
    return hashlib.sha256(content).hexdigest()


def end_shadow(
    rule_files: RuleFiles,
    audit: AuditLog,
    rule_name: str,
    report: bytes,
    report_path: str | None,
    provenance: Callable[[str], Provenance],
    *,
    actor: str,
    at: datetime,
    extra: dict[str, str] | None = None,
) -> ShadowEnded:
    """Take ``rule_name`` out of shadow mode on ``report``; see the module docstring.

    Raises RuleNotFound, ShadowEndRefused (a report that does not fit, a rule not in
    shadow), RulesError (the rewritten rules do not validate) or VersionConflict.
    """
    parsed = _parse_report(report)
    rule, text, version = _rule_and_text(rule_files, rule_name)
    if not rule.shadow:
        raise ShadowEndRefused(f"rule {rule_name} is not in shadow mode ({rule.location})")
    if rule.pipeline is None:  # rules check refuses this; kept for the type checker
        raise ShadowEndRefused(f"rule {rule_name} runs no pipeline")
    if parsed.get("pipeline") != rule.pipeline:
        raise ShadowEndRefused(
            f"the report evaluates pipeline {parsed.get('pipeline')!r}, rule {rule_name} "
            f"runs {rule.pipeline!r}: it validated another pipeline"
        )
    now = provenance(rule.pipeline)
    if parsed.get("model_sha256") != now.model_sha256:
        raise ShadowEndRefused(
            f"the report validated another model: its model_sha256 is "
            f"{str(parsed.get('model_sha256'))[:12]}, pipeline {rule.pipeline} runs model "
            f"{now.model_sha256[:12]} now; evaluate this model and try again"
        )
    content = _without_shadow(text, rule_name, rule)
    # Saved on the version read: an edit made meanwhile is refused, not overwritten.
    saved = rule_files.save(rule.file.name, content, version)
    detail = {
        "rule_file": rule.file.name,
        "pipeline": rule.pipeline,
        "report": report_path,
        "report_sha256": report_sha256(report),
        "model_sha256": now.model_sha256,
        "pipeline_sha256": now.pipeline_sha256,
        "report_pipeline_sha256": parsed.get("pipeline_sha256"),
        "report_created": parsed.get("created"),
        "metrics": headline_metrics(parsed),
        "version": saved.ruleset.version,
        "content": content,
        "previous_content": saved.previous,
        **(extra or {}),
    }
    audit_id = audit.record(at, actor, "shadow.end", rule_name, detail)
    return ShadowEnded(rule_name, rule.file.name, saved.ruleset.version, audit_id, detail)


def headline_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The report's headline numbers (classification, segmentation, dataset size)."""
    metrics: dict[str, Any] = {}
    dataset = report.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("items"), int):
        metrics["items"] = dataset["items"]
    for section in ("classification", "segmentation"):
        values = report.get(section)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key in _HEADLINES and isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{section}.{key}"] = value
    return metrics


def _parse_report(report: bytes) -> dict[str, Any]:
    try:
        return parse_report(report, "the evaluation report")
    except ConfigError as exc:
        raise ShadowEndRefused(str(exc)) from None


def _rule_and_text(rule_files: RuleFiles, name: str) -> tuple[Rule, str, str]:
    """The rule, its file's text, and the folder's rules version they were read at."""
    ruleset, texts = rule_files.current()
    rule = next((r for r in ruleset if r.name == name), None)
    if rule is None:
        raise RuleNotFound(f"no rule named {name!r} in {rule_files.folder}")
    text = next(text for path, text in texts if path.name == rule.file.name)
    return rule, text, ruleset.version


def _without_shadow(text: str, name: str, rule: Rule) -> str:
    """``text`` with the rule's ``shadow: true`` turned to false, every other line kept."""
    data = yaml.safe_load(text)
    index = next(
        i for i, raw in enumerate(data) if isinstance(raw, dict) and raw.get("name") == name
    )
    line = build_source_map(text).line_of((index, "shadow"))
    lines = text.splitlines(keepends=True)
    if line is None or not _SHADOW_TRUE.search(lines[line - 1]):
        raise ShadowEndRefused(
            f"cannot find rule {name}'s 'shadow: true' in {rule.file.name}; "
            "set shadow: false there by hand"
        )
    lines[line - 1] = _SHADOW_TRUE.sub(r"\g<1>false", lines[line - 1], count=1)
    content = "".join(lines)
    after = yaml.safe_load(content)
    if not isinstance(after, list) or after[index].get("shadow") is not False:
        raise ShadowEndRefused(f"rewriting {rule.file.name} did not end shadow mode; edit it")
    return content
