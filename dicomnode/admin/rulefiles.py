"""Rule files edited through the API: validated as ``rules check`` does, then written
atomically into the rules folder, where the live reload picks them up.

An edit is validated together with the folder's other files (duplicate names across
files, and the rules version, depend on all of them). The write goes to a hidden
temporary file, is fsync'ed and renamed over the old one, so the reload never sees half
a file.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from dicomnode.errors import DicomNodeError
from dicomnode.rules import RuleProblem, RulesError, RuleSet, parse_rules, rule_files
from dicomnode.rules.loading import version_of


@dataclass(frozen=True, slots=True)
class Saved:
    ruleset: RuleSet
    previous: str | None  # the file's text before, None when it is new


class RuleFiles:
    """The rules folder as an editor sees it."""

    def __init__(
        self, folder: Path, destinations: Collection[str], pipelines: Collection[str]
    ) -> None:
        self.folder = folder
        self._destinations = destinations
        self._pipelines = pipelines
        self._lock = threading.Lock()  # one save at a time: validate and write together

    def texts(self) -> list[tuple[Path, str]]:
        """The folder's rule files and their text, in the order the loader reads them.

        Raises RulesError when one cannot be read, as ``rules check`` would report it.
        """
        if not self.folder.is_dir():
            return []
        texts, problems = [], []
        for path in rule_files(self.folder):
            try:
                texts.append((path, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                problems.append(RuleProblem(path, None, "", f"cannot read the file: {reason}"))
        if problems:
            raise RulesError(problems)
        return texts

    def current(self) -> tuple[RuleSet, list[tuple[Path, str]]]:
        """The folder's rules as on disk now, and the texts they come from."""
        texts = self.texts()
        return self._parse(texts), texts

    def with_file(self, name: str, content: str) -> RuleSet:
        """The rules as they would be with ``name`` holding ``content``; RulesError if invalid."""
        _check_text(name, content)
        texts = [(path, text) for path, text in self.texts() if path.name != name]
        texts.append((self.folder / name, content))
        return self._parse(texts)

    def alone(self, content: str, name: str = "dry-run.yaml") -> RuleSet:
        """``content`` as the only rule file; RulesError if invalid."""
        _check_text(name, content)
        return self._parse([(Path(name), content)])

    def save(self, name: str, content: str, base_version: str | None) -> Saved:
        """Validate, then write ``name`` atomically; returns the rules it makes.

        Raises RulesError when invalid, and VersionConflict when ``base_version`` is given
        and the folder no longer holds that version (someone saved in between).
        """
        with self._lock:
            texts = self.texts()
            if base_version is not None and base_version != version_of(texts):
                raise VersionConflict(base_version, version_of(texts))
            ruleset = self.with_file(name, content)
            previous = next((text for path, text in texts if path.name == name), None)
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.folder / name, content)
            return Saved(ruleset, previous)

    def _parse(self, texts: list[tuple[Path, str]]) -> RuleSet:
        return parse_rules(texts, destinations=self._destinations, pipelines=self._pipelines)


class VersionConflict(DicomNodeError):  # noqa: N818 - named like the HTTP status it becomes
    """The rules changed since the editor loaded them."""

    def __init__(self, base: str, current: str) -> None:
        super().__init__(
            f"the rules changed since version {base[:12]}: the folder now holds version "
            f"{current[:12]}; reload them and edit again"
        )


def _check_text(name: str, content: str) -> None:
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RulesError(
            [RuleProblem(Path(name), None, "", "the text is not valid Unicode")]
        ) from exc


def _write_atomically(path: Path, content: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # ignored by the loader
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
