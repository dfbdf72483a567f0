"""The rule model: immutable values built by the loader, read by matching and explain.

Rules are data. A condition is one of six small frozen types (``Equals``, ``AnyOf``,
``Regex``, ``Range``, ``Exists``, ``Not``); matching interprets them, nothing evaluates
code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dicomnode.errors import ConfigError
from dicomnode.rules.keywords import Kind

Scalar = str | float
# One distinct value of an attribute across a series; a tuple for a multi-valued element.
Value = Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Equals:
    """The value is ``value``; a multi-valued attribute matches when it has it as a member."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class AnyOf:
    """The value is one of ``values`` (membership, as for ``Equals``)."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Regex:
    """``re.search`` finds ``pattern`` in the text (in any member of a multi-valued one)."""

    pattern: str
    compiled: re.Pattern[str] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Range:
    """``min <= value <= max`` as numbers (every member of a multi-valued one)."""

    min: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Exists:
    """The attribute is present (``True``) or missing (``False``)."""

    present: bool


@dataclass(frozen=True, slots=True)
class Not:
    """The inner condition fails; a missing attribute still fails (see ``Exists``)."""

    inner: Condition


Condition = Equals | AnyOf | Regex | Range | Exists | Not


@dataclass(frozen=True, slots=True)
class Clause:
    """One entry of a rule's ``match``: a keyword and the condition on its values."""

    keyword: str
    kind: Kind
    condition: Condition
    line: int | None = None


@dataclass(frozen=True, slots=True)
class FindingRoute:
    """One ``on_findings`` entry: where to send when a done job's findings meet ``when``.

    ``when`` holds clauses on finding keys (``Lesion.volume_ml``), every one must hold.
    """

    name: str
    when: tuple[Clause, ...]
    send_results_to: tuple[str, ...] = ()
    forward_to: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated rule and where it was written."""

    name: str
    match: tuple[Clause, ...]
    pipeline: str | None = None
    forward_to: tuple[str, ...] = ()
    send_to: tuple[str, ...] = ()
    enabled: bool = True
    priority: int = 0
    stop: bool = False
    description: str | None = None
    file: Path = Path("<memory>")
    line: int | None = None
    on_findings: tuple[FindingRoute, ...] = ()
    # Shadow mode (docs/shadow.md): the pipeline runs and its results are kept, but
    # nothing is sent; ``send_to`` says where the results would go.
    shadow: bool = False

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else str(self.file)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of one folder in evaluation order, and the version of their text.

    ``version`` is the sha256 of the files' names and contents: two loads of the same text
    have the same version, so a routing decision can name the rules that made it.
    """

    rules: tuple[Rule, ...]
    version: str
    files: tuple[Path, ...] = ()

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def keywords(self) -> tuple[str, ...]:
        """Every keyword a rule matches on (derived ones included), in order of first use."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            for clause in rule.match:
                seen.setdefault(clause.keyword, None)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One mistake in a rule file: where it is, which key, and what is wrong."""

    file: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class RulesError(ConfigError):
    """Rule files that cannot be used; ``problems`` lists every mistake found, in file order.

    A subclass of ConfigError: invalid rules are invalid configuration (exit code 2).
    """

    def __init__(self, problems: list[RuleProblem] | tuple[RuleProblem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


def format_number(number: float) -> str:
    """``5.0`` as ``5``, ``0.48828125`` in full: what an administrator wrote or would write."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


def format_scalar(value: Scalar) -> str:
    return format_number(value) if isinstance(value, float) else value


def format_value(value: Value) -> str:
    """A value as DICOM writes it: multi-valued members joined by backslashes."""
    if isinstance(value, tuple):
        return "\\".join(format_scalar(member) for member in value)
    return format_scalar(value)


def describe(condition: Condition) -> str:
    """The condition as a rule file would say it, e.g. ``max 5`` or ``any of CT, MR``."""
    if isinstance(condition, Equals):
        return f"equals {format_scalar(condition.value)}"
    if isinstance(condition, AnyOf):
        return "any of " + ", ".join(format_scalar(v) for v in condition.values)
    if isinstance(condition, Regex):
        return f"regex {condition.pattern!r}"
    if isinstance(condition, Range):
        parts = []
        if condition.min is not None:
            parts.append(f"min {format_number(condition.min)}")
        if condition.max is not None:
            parts.append(f"max {format_number(condition.max)}")
        return " ".join(parts)
    if isinstance(condition, Exists):
        return "exists" if condition.present else "missing (exists: false)"
    return f"not ({describe(condition.inner)})"
