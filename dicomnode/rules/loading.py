"""Load a folder of rule files into a RuleSet, or report every mistake in them at once.

A folder holds ``*.yaml`` / ``*.yml`` files (not recursive; names starting with a dot,
such as editors' lock files, are ignored), read in name order. Each file is a YAML list
of rules. The loader checks everything an administrator can get wrong before a series
depends on it: YAML syntax, unknown keys and keywords, types, regexes, destination and
pipeline names, duplicate names across files. ``RulesError`` lists each problem as
``file:line: key: message``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from dicomnode.rules.model import Rule, RuleProblem, RulesError, RuleSet
from dicomnode.rules.rulefile import parse_rule_file

SUFFIXES = (".yaml", ".yml")


def rule_files(folder: Path) -> list[Path]:
    """The rule files of ``folder``, in the order their rules are read."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix in SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def load_rules(
    folder: Path,
    *,
    destinations: Collection[str] | None,
    pipelines: Collection[str] | None,
) -> RuleSet:
    """Read and validate every rule file in ``folder``; an empty folder is an empty RuleSet.

    ``destinations`` and ``pipelines`` are the names the rules may use; ``None`` skips that
    check (say so to the user). ``pipelines`` as a mapping of name to ``PipelineFindings``
    also checks the findings ``on_findings`` names. Raises RulesError listing every problem.
    """
    if not folder.is_dir():
        missing = "does not exist" if not folder.exists() else "is not a folder"
        raise RulesError([RuleProblem(folder, None, "", f"the rules folder {missing}")])
    texts: list[tuple[Path, str]] = []
    problems: list[RuleProblem] = []
    for path in rule_files(folder):
        try:
            texts.append((path, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            problems.append(RuleProblem(path, None, "", f"cannot read the file: {reason}"))
    try:
        ruleset = parse_rules(texts, destinations=destinations, pipelines=pipelines)
    except RulesError as exc:
        raise RulesError([*problems, *exc.problems]) from None
    if problems:
        raise RulesError(problems)
    return ruleset


def parse_rules(
    texts: Iterable[tuple[Path, str]],
    *,
    destinations: Collection[str] | None,
    pipelines: Collection[str] | None,
) -> RuleSet:
    """Validate rule files given as ``(path, text)`` (no file access: for editors, dry runs).

    Files are taken in name order, as ``load_rules`` reads them.
    """
    files = sorted(texts, key=lambda item: item[0].name)
    problems: list[RuleProblem] = []
    first_seen: dict[str, str] = {}
    rules: list[Rule] = []
    for path, text in files:
        found, wrong = parse_rule_file(
            path, text, destinations=destinations, pipelines=pipelines, first_seen=first_seen
        )
        rules.extend(found)
        problems.extend(wrong)
    if problems:
        raise RulesError(problems)
    # sorted() is stable: equal priorities keep file order, then their order in the file.
    ordered = sorted(rules, key=lambda rule: -rule.priority)
    return RuleSet(tuple(ordered), version_of(files), tuple(path for path, _ in files))


def version_of(files: Sequence[tuple[Path, str]]) -> str:
    """sha256 over each file's name and text, in name order (independent of the folder)."""
    digest = hashlib.sha256()
    for path, text in sorted(files, key=lambda item: item[0].name):
        for part in (path.name.encode(), text.encode()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()
