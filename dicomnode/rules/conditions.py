"""Turn one ``match`` value from YAML into a Condition, reporting every mistake in it.

The forms (docs/rules.md has examples of each):

- a scalar ``CT`` means ``{equals: CT}``; a list ``[CT, MR]`` means ``{any_of: [CT, MR]}``;
- a mapping with exactly one of ``equals``, ``any_of``, ``regex``, ``exists``, ``not``,
  or with ``min`` and/or ``max``.

Values are checked against the keyword's kind when the file loads: numbers for numeric
VRs (``"5"`` is accepted as 5), quoted text for the rest (YAML reads ``yes``/``no``/``on``/
``off`` as booleans and ``0012`` as a number, which would silently change the rule).
A finding's ``present`` takes YAML's ``true``/``false`` and is compared as that text.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Any

from dicomnode.rules.keywords import Keyword, Kind
from dicomnode.rules.model import AnyOf, Condition, Equals, Exists, Not, Range, Regex, Scalar

KeyPath = tuple[str | int, ...]
Report = Callable[[KeyPath, str], None]

OPERATORS = ("equals", "any_of", "regex", "min", "max", "exists", "not")


class _InvalidValueError(ValueError):
    """A value that cannot be used; the message is for the administrator."""


def parse_condition(raw: Any, keyword: Keyword, path: KeyPath, report: Report) -> Condition | None:
    """The condition ``raw`` states on ``keyword``, or None after reporting why not."""
    if isinstance(raw, dict):
        return _parse_operator(raw, keyword, path, report)
    if isinstance(raw, list):
        return _parse_any_of(raw, keyword, path, report)
    try:
        return Equals(_scalar(raw, keyword))
    except _InvalidValueError as exc:
        report(path, str(exc))
        return None


def _parse_operator(
    raw: dict[Any, Any], keyword: Keyword, path: KeyPath, report: Report
) -> Condition | None:
    keys = [str(key) for key in raw]
    unknown = [key for key in keys if key not in OPERATORS]
    for key in unknown:
        close = difflib.get_close_matches(key, OPERATORS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        report((*path, key), f"unknown operator{hint}; operators: {', '.join(OPERATORS)}")
    if unknown:
        return None
    if not keys:
        report(path, "an empty condition; write a value, a list, or one operator")
        return None
    if set(keys) <= {"min", "max"}:
        return _parse_range(raw, keyword, path, report)
    if len(keys) > 1:
        report(path, f"one operator per condition, got {', '.join(keys)} (only min+max combine)")
        return None
    operator, value = keys[0], raw[keys[0]]
    where = (*path, operator)
    if operator == "any_of":
        if not isinstance(value, list):
            report(where, "any_of takes a list, e.g. any_of: [CT, MR]")
            return None
        return _parse_any_of(value, keyword, where, report)
    if operator == "not":
        return _parse_not(value, keyword, where, report)
    try:
        if operator == "equals":
            if isinstance(value, list | dict):
                raise _InvalidValueError("equals takes one value; use any_of for a list")
            return Equals(_scalar(value, keyword))
        if operator == "regex":
            return _regex(value, keyword)
        if not isinstance(value, bool):
            raise _InvalidValueError("exists takes true or false")
        return Exists(value)
    except _InvalidValueError as exc:
        report(where, str(exc))
        return None


def _parse_any_of(raw: list[Any], keyword: Keyword, path: KeyPath, report: Report) -> AnyOf | None:
    if not raw:
        report(path, "an empty list matches nothing; list at least one value")
        return None
    values: list[Scalar] = []
    valid = True
    for index, item in enumerate(raw):
        try:
            if isinstance(item, list | dict):
                raise _InvalidValueError(
                    "a list of values takes plain values, not lists or operators"
                )
            value = _scalar(item, keyword)
        except _InvalidValueError as exc:
            report((*path, index), str(exc))
            valid = False
            continue
        if value not in values:
            values.append(value)
    return AnyOf(tuple(values)) if valid else None


def _parse_range(
    raw: dict[Any, Any], keyword: Keyword, path: KeyPath, report: Report
) -> Range | None:
    if keyword.kind is Kind.BOOLEAN:
        report(path, f"min/max need a number; {keyword.name} is true or false")
        return None
    if not keyword.numeric:
        report(path, f"min/max need a numeric attribute; {keyword.name} is text ({keyword.source})")
        return None
    bounds: dict[str, float] = {}
    for name in ("min", "max"):
        if name in raw:
            try:
                bounds[name] = _number(raw[name], keyword)
            except _InvalidValueError as exc:
                report((*path, name), str(exc))
    if len(bounds) != len(raw):
        return None
    low, high = bounds.get("min"), bounds.get("max")
    if low is not None and high is not None and low > high:
        report(path, f"min {raw['min']} is greater than max {raw['max']}: nothing can match")
        return None
    return Range(low, high)


def _parse_not(raw: Any, keyword: Keyword, path: KeyPath, report: Report) -> Not | None:
    if isinstance(raw, dict) and "exists" in raw and len(raw) == 1:
        present = raw["exists"]
        hint = f"exists: {'false' if present else 'true'}" if isinstance(present, bool) else ""
        report(path, f"write {hint or 'exists: true|false'} instead of not: {{exists: ...}}")
        return None
    inner = parse_condition(raw, keyword, path, report)
    return None if inner is None else Not(inner)


def _regex(raw: Any, keyword: Keyword) -> Regex:
    if keyword.kind is Kind.BOOLEAN:
        raise _InvalidValueError(f"{keyword.name} is true or false: use equals")
    if keyword.numeric:
        raise _InvalidValueError(
            f"{keyword.name} is a number ({keyword.source}): use min/max or equals"
        )
    if not isinstance(raw, str) or not raw:
        raise _InvalidValueError('regex takes a non-empty quoted pattern, e.g. regex: "(?i)chest"')
    try:
        return Regex(raw, re.compile(raw))
    except re.error as exc:
        raise _InvalidValueError(f"bad regex {raw!r}: {exc}") from exc


def _scalar(raw: Any, keyword: Keyword) -> Scalar:
    if keyword.kind is Kind.BOOLEAN:
        return _boolean(raw, keyword)
    return _number(raw, keyword) if keyword.numeric else _text(raw, keyword)


def _boolean(raw: Any, keyword: Keyword) -> str:
    """``true``/``false`` as the text the values carry (matching compares text exactly)."""
    if not isinstance(raw, bool):
        raise _InvalidValueError(f"{keyword.name} is true or false, got {_yaml(raw)}")
    return "true" if raw else "false"


def _number(raw: Any, keyword: Keyword) -> float:
    if isinstance(raw, bool) or raw is None:
        raise _InvalidValueError(f"{keyword.name} is a number ({keyword.source}), got {_yaml(raw)}")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise _InvalidValueError(
                f"{keyword.name} is a number ({keyword.source}), got {raw!r}"
            ) from None
    else:
        raise _InvalidValueError(f"{keyword.name} is a number ({keyword.source}), got {_yaml(raw)}")
    if not math.isfinite(value):
        raise _InvalidValueError(f"{keyword.name} needs a finite number, got {raw!r}")
    return value


def _text(raw: Any, keyword: Keyword) -> str:
    if raw is None:
        raise _InvalidValueError("no value; write a value, or exists: true|false")
    if isinstance(raw, bool):
        raise _InvalidValueError(
            f"YAML read this as the boolean {str(raw).lower()}; quote the text, e.g. 'NO'"
        )
    if isinstance(raw, int | float):
        raise _InvalidValueError(
            f"{keyword.name} is text ({keyword.source}) but YAML read a number ({raw}); "
            "quote it, e.g. '0012', so leading zeros and dots are kept"
        )
    if not isinstance(raw, str):
        raise _InvalidValueError(f"expected text, got {_yaml(raw)}")
    text = raw.strip()
    if not text:
        raise _InvalidValueError(
            "empty text never matches; use exists: false for a missing attribute"
        )
    return text


def _yaml(raw: Any) -> str:
    if raw is None:
        return "nothing (null)"
    if isinstance(raw, bool):
        return f"the boolean {str(raw).lower()}"
    return f"{type(raw).__name__} {raw!r}"
