"""The rules in force, reloaded from their folder when an administrator edits them.

An edit that does not validate is refused with a log event and the rules in force stay.
Every version that comes into force is recorded (content hash, files, when, by whom where
known) so the rules that routed any series can be found again.
"""

from __future__ import annotations

import pwd
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from dicomnode.logs import get_logger
from dicomnode.rules.loading import load_rules, rule_files
from dicomnode.rules.model import RulesError, RuleSet
from dicomnode.store.database import Database
from dicomnode.store.tables import RulesVersionRow

log = get_logger(__name__)

Clock = Callable[[], datetime]
Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class RulesVersion:
    version: str
    loaded_at: datetime
    actor: str
    files: dict[str, str]


class LiveRules:
    """Holds the current RuleSet; ``refresh`` swaps it when the folder changed and is valid."""

    def __init__(
        self,
        folder: Path,
        database: Database,
        destinations: Collection[str],
        pipelines: Collection[str] | None,
        clock: Clock,
    ) -> None:
        self.folder = folder
        self._db = database
        self._destinations = destinations
        self._pipelines = pipelines
        self._clock = clock
        self._lock = threading.Lock()
        self._current = RuleSet((), version="none")
        self._signature: Signature | None = None
        self.last_rejection: str | None = None  # why the latest edit was refused, if it was

    @property
    def current(self) -> RuleSet:
        with self._lock:
            return self._current

    def load_initial(self) -> RuleSet:
        """Load at start-up; an invalid folder raises RulesError (the node does not start)."""
        if not self.folder.exists():
            log.warning("rules_folder_missing", rules_dir=str(self.folder))
            self._signature = ()
            return self.current
        self._signature = self._stat()
        ruleset = load_rules(
            self.folder, destinations=self._destinations, pipelines=self._pipelines
        )
        self._install(ruleset, actor=self._actor())
        return ruleset

    def refresh(self) -> bool:
        """Reload if the folder changed; True when new rules came into force."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            ruleset = load_rules(
                self.folder, destinations=self._destinations, pipelines=self._pipelines
            )
        except RulesError as exc:
            self.last_rejection = str(exc)
            log.error(
                "rules_rejected",
                rules_dir=str(self.folder),
                problems=[str(p) for p in exc.problems],
                in_force=self.current.version,
            )
            return False
        self.last_rejection = None
        if ruleset.version == self.current.version:
            return False
        self._install(ruleset, actor=self._actor())
        return True

    def _install(self, ruleset: RuleSet, actor: str) -> None:
        files = {path.name: path.read_text(encoding="utf-8") for path in ruleset.files}
        now = self._clock()
        with self._db.writing() as session:
            last = session.scalar(
                select(RulesVersionRow.version).order_by(RulesVersionRow.id.desc()).limit(1)
            )
            # A restart with unchanged rules is not a new version coming into force.
            if last != ruleset.version:
                session.add(
                    RulesVersionRow(
                        version=ruleset.version, loaded_at=now, actor=actor, files=files
                    )
                )
        with self._lock:
            previous, self._current = self._current.version, ruleset
        log.info(
            "rules_loaded",
            version=ruleset.version,
            previous=previous,
            rules=len(ruleset),
            files=sorted(files),
            actor=actor,
        )

    def history(self, limit: int = 50) -> list[RulesVersion]:
        with self._db.reading() as session:
            rows = session.scalars(
                select(RulesVersionRow).order_by(RulesVersionRow.id.desc()).limit(limit)
            )
            return [RulesVersion(r.version, r.loaded_at, r.actor, dict(r.files)) for r in rows]

    def _stat(self) -> Signature:
        try:
            paths = rule_files(self.folder) if self.folder.is_dir() else []
        except OSError:
            paths = []
        signature = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            signature.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(signature)

    def _actor(self) -> str:
        """The owner of the most recently changed rule file: the best 'who' a file gives."""
        newest: tuple[int, int] | None = None
        for path in rule_files(self.folder) if self.folder.is_dir() else []:
            st = path.stat()
            if newest is None or st.st_mtime_ns > newest[0]:
                newest = (st.st_mtime_ns, st.st_uid)
        if newest is None:
            return "file"
        try:
            return f"file owner {pwd.getpwuid(newest[1]).pw_name}"
        except KeyError:
            return f"file owner uid {newest[1]}"
