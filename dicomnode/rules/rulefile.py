"""Validate one rule file: its rules, and a problem for every mistake, with line and key.

Keys in problems read ``<rule name>.match.SliceThickness`` or ``<rule>.forward_to[1]``;
a rule without a usable name is ``#<position in the file>``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dicomnode.rules.conditions import KeyPath, parse_condition
from dicomnode.rules.findings import PipelineFindings, parse_on_findings
from dicomnode.rules.keywords import KeywordError, resolve
from dicomnode.rules.model import Clause, FindingRoute, Rule, RuleProblem
from dicomnode.sourcemap import SourceMap, build_source_map

RULE_KEYS = (
    "name",
    "description",
    "enabled",
    "priority",
    "stop",
    "match",
    "pipeline",
    "forward_to",
    "send_to",
    "on_findings",
    "shadow",
)
RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_rule_file(
    path: Path,
    text: str,
    *,
    destinations: Collection[str] | None,
    pipelines: Collection[str] | None,
    first_seen: dict[str, str],
) -> tuple[list[Rule], list[RuleProblem]]:
    """The valid rules of one file and the problems of the others.

    ``first_seen`` maps rule names to where they were first defined, across files.
    """
    parser = _FileParser(path, text, destinations, pipelines, first_seen)
    rules = parser.rules()
    # Stable: problems on one line keep the order they were found in.
    problems = sorted(parser.problems, key=lambda p: p.line if p.line is not None else 0)
    return rules, problems


class _FileParser:
    """Collects the rules and the problems of one file."""

    def __init__(
        self,
        path: Path,
        text: str,
        destinations: Collection[str] | None,
        pipelines: Collection[str] | None,
        first_seen: dict[str, str],
    ) -> None:
        self.path = path
        self.text = text
        self.destinations = destinations
        self.pipelines = pipelines
        self.first_seen = first_seen
        self.source: SourceMap = build_source_map(text)
        self.problems: list[RuleProblem] = []
        self._label = ""

    def rules(self) -> list[Rule]:
        try:
            data = yaml.safe_load(self.text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            context = getattr(exc, "context", None)
            detail = f"{problem} ({context})" if context else problem
            self.problems.append(RuleProblem(self.path, line, "", f"not valid YAML: {detail}"))
            return []
        if data is None:
            return []  # an empty file, or only comments
        if not isinstance(data, list):
            self._report((), "a rule file is a list of rules, each starting with '- name: ...'")
            return []
        self._report_duplicate_keys(data)
        rules = []
        for index, raw in enumerate(data):
            rule = self._rule(index, raw)
            if rule is not None:
                rules.append(rule)
        return rules

    def _report(self, path: KeyPath, message: str, *, key: str | None = None) -> None:
        line = self.source.line_of(path)
        if key is None:
            key = _key(self._label, path[1:]) if path else ""
        self.problems.append(RuleProblem(self.path, line, key, message))

    def _rule(self, index: int, raw: Any) -> Rule | None:
        here: KeyPath = (index,)
        name = raw.get("name") if isinstance(raw, dict) else None
        usable = isinstance(name, str) and RULE_NAME.fullmatch(name) is not None
        self._label = str(name) if usable else f"#{index + 1}"
        if not isinstance(raw, dict):
            self._report(here, "a rule is a mapping with name, match and actions")
            return None
        before = len(self.problems)
        for key in raw:
            if str(key) not in RULE_KEYS:
                self._report((*here, str(key)), f"unknown key{_close(str(key), RULE_KEYS)}")
        self._check_name(here, name, usable)
        rule = Rule(
            name=str(name),
            match=self._match(here, raw),
            pipeline=self._pipeline(here, raw.get("pipeline")),
            forward_to=self._destinations(here, "forward_to", raw.get("forward_to")),
            send_to=self._destinations(here, "send_to", raw.get("send_to")),
            enabled=self._typed(here, "enabled", raw.get("enabled", True), bool, "true or false"),
            priority=self._typed(here, "priority", raw.get("priority", 0), int, "a whole number"),
            stop=self._typed(here, "stop", raw.get("stop", False), bool, "true or false"),
            description=self._description(here, raw.get("description")),
            file=self.path,
            line=self.source.line_of(here),
            on_findings=self._on_findings(here, raw),
            shadow=self._typed(here, "shadow", raw.get("shadow", False), bool, "true or false"),
        )
        if rule.shadow:
            self._check_shadow(here, raw)
        has_pipeline = raw.get("pipeline") is not None
        if raw.get("send_to") is not None and not has_pipeline:
            self._report((*here, "send_to"), "send_to is where pipeline results go: add pipeline")
        if not has_pipeline and not raw.get("forward_to"):
            self._report(here, "no action: give pipeline and/or forward_to", key=self._label)
        return rule if len(self.problems) == before else None

    def _check_shadow(self, here: KeyPath, raw: dict[Any, Any]) -> None:
        """A shadow rule watches: it may neither send nor change what live rules do."""
        if raw.get("forward_to"):
            self._report(
                (*here, "forward_to"),
                "a shadow rule sends nothing: remove forward_to (send_to is kept as where "
                "results would go), or set shadow: false",
            )
        if raw.get("pipeline") is None:
            self._report((*here, "shadow"), "shadow runs a pipeline on live traffic: add pipeline")
        if raw.get("stop") is True:
            self._report(
                (*here, "stop"),
                "a shadow rule may not stop the rules after it: live routing must not "
                "change while a model is tried in shadow",
            )

    def _check_name(self, here: KeyPath, name: Any, valid: bool) -> None:
        if name is None:
            self._report(here, "every rule needs a name", key=f"{self._label}.name")
        elif isinstance(name, bool | int | float):
            self._report((*here, "name"), f"YAML read this name as {name!r}; quote it")
        elif not valid:
            self._report(
                (*here, "name"),
                "a name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
            )
        elif name in self.first_seen:
            self._report(
                (*here, "name"), f"duplicate rule name: first defined at {self.first_seen[name]}"
            )
        else:
            self.first_seen[name] = f"{self.path.name}:{self.source.line_of((*here, 'name'))}"

    def _match(self, here: KeyPath, raw: dict[Any, Any]) -> tuple[Clause, ...]:
        if "match" not in raw:
            self._report(here, "no match; write match: {} to match every series", key=self._label)
            return ()
        match = raw["match"]
        where = (*here, "match")
        if match is None:
            self._report(where, "match is empty; write match: {} to match every series")
            return ()
        if not isinstance(match, dict):
            self._report(where, "match is a mapping of DICOM keyword to condition")
            return ()
        clauses = []
        for key, value in match.items():
            path = (*where, str(key))
            try:
                keyword = resolve(str(key))
            except KeywordError as exc:
                self._report(path, str(exc))
                continue
            condition = parse_condition(value, keyword, path, self._report)
            if condition is not None:
                line = self.source.line_of(path)
                clauses.append(Clause(keyword.name, keyword.kind, condition, line))
        return tuple(clauses)

    def _on_findings(self, here: KeyPath, raw: dict[Any, Any]) -> tuple[FindingRoute, ...]:
        if raw.get("on_findings") is None:
            return ()
        pipeline = raw.get("pipeline")
        if not isinstance(pipeline, str) or not pipeline.strip():
            self._report(
                (*here, "on_findings"), "on_findings routes on a pipeline's findings: add pipeline"
            )
            return ()
        pipeline = pipeline.strip()
        # Finding names are checked where the pipelines' outputs are known (a mapping of
        # name to PipelineFindings); with names only, just the measurements are.
        findings = None
        if isinstance(self.pipelines, Mapping):
            known = self.pipelines.get(pipeline)
            findings = known if isinstance(known, PipelineFindings) else None
        return parse_on_findings(
            raw["on_findings"],
            (*here, "on_findings"),
            self._report,
            pipeline=pipeline,
            findings=findings,
            destinations=self._destinations,
            line_of=self.source.line_of,
        )

    def _pipeline(self, here: KeyPath, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self._report((*here, "pipeline"), "pipeline is the name of one pipeline")
            return None
        self._check_known(
            (*here, "pipeline"), value.strip(), self.pipelines, "pipeline", "no pipelines are known"
        )
        return value.strip()

    def _destinations(self, here: KeyPath, key: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self._report((*here, key), f"{key} is a destination name or a list of them")
            return ()
        names: list[str] = []
        for index, item in enumerate(items):
            path = (*here, key, index) if not isinstance(value, str) else (*here, key)
            if not isinstance(item, str) or not item.strip():
                self._report(path, "a destination name is text")
                continue
            self._check_known(
                path,
                item.strip(),
                self.destinations,
                "destination",
                "no destinations are configured",
            )
            if item.strip() not in names:
                names.append(item.strip())
        return tuple(names)

    def _check_known(
        self, path: KeyPath, name: str, known: Collection[str] | None, what: str, none: str
    ) -> None:
        if known is None or name in known:
            return
        listed = f"known: {', '.join(sorted(known))}" if known else none
        self._report(path, f"unknown {what} {name!r}{_close(name, known, ';')} ({listed})")

    def _typed(self, here: KeyPath, key: str, value: Any, kind: type[Any], wanted: str) -> Any:
        # bool is an int in Python; YAML's `priority: yes` must not become priority 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self._report((*here, key), f"{key} must be {wanted}, got {value!r}")
            return kind()
        return value

    def _description(self, here: KeyPath, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        self._report((*here, "description"), "description is text")
        return None

    def _report_duplicate_keys(self, data: list[Any]) -> None:
        """YAML keeps only the last of two equal keys; an administrator means both."""
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return
        for path, line in _duplicate_keys(root, ()):
            index = path[0] if path and isinstance(path[0], int) else None
            raw = data[index] if index is not None and index < len(data) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            label = name if isinstance(name, str) else f"#{(index or 0) + 1}"
            message = "this key appears twice in one mapping; YAML would keep only the last"
            self.problems.append(RuleProblem(self.path, line, _key(label, path[1:]), message))


def _duplicate_keys(node: yaml.Node | None, path: KeyPath) -> list[tuple[KeyPath, int]]:
    found: list[tuple[KeyPath, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen and key != "<<":
                found.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            found.extend(_duplicate_keys(value_node, (*path, key)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, (*path, index)))
    return found


def _key(label: str, path: Sequence[str | int]) -> str:
    """``ct-brain.match.SliceThickness`` or ``ct-brain.forward_to[1]``."""
    text = label
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _close(name: str, known: Iterable[str], style: str = "()") -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]}?" if style == ";" else f" (did you mean {close[0]}?)"
