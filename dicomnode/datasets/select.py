"""Which series an export takes: typed conditions as in rules, a study list, or UIDs.

``--where`` speaks the rules' conditions in one line each (docs/datasets.md)::

    Modality=PT                  equals (a multi-valued element: has it as a member)
    Modality!=SR                 not equals
    SeriesDescription~(?i)brain  regex (re.search)
    SliceThickness>=1            minimum (numbers)
    SliceThickness<=5            maximum (numbers)

Keywords are checked against the DICOM dictionary with the rules' messages and
suggestions, and values against the keyword's kind, so a typo fails before anything is
read. Several ``--where`` must all hold; a ``--list`` or ``--series`` narrows further.

Series come from the node's index and spool (what PACS forwarded), or from a folder of
DICOM files (``--from``). Selection reads headers only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from dicomnode.datasets.spreadsheets import read_table
from dicomnode.errors import ConfigError
from dicomnode.rules.attributes import SeriesAttributes, attributes_from_datasets, files_below
from dicomnode.rules.conditions import parse_condition
from dicomnode.rules.keywords import KeywordError, resolve
from dicomnode.rules.matching import check_clause
from dicomnode.rules.model import Clause
from dicomnode.store.index_reads import IndexReads
from dicomnode.store.spool import Spool

# Longest operators first: ``>=`` before a bare ``=``.
_WHERE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(!=|>=|<=|=|~)(.*)$", re.DOTALL)
LIST_COLUMNS = ("SeriesInstanceUID", "StudyInstanceUID", "AccessionNumber")


@dataclass(frozen=True, slots=True)
class SeriesSource:
    """One series to export: where its files are, and a name for messages.

    ``label`` names the series without patient data: the index's series number, or the
    folder it was found in.
    """

    series_uid: str
    paths: tuple[Path, ...]
    label: str


@dataclass(frozen=True, slots=True)
class StudyList:
    """The identifiers of a spreadsheet's column: ``keyword`` is one of LIST_COLUMNS."""

    keyword: str
    values: frozenset[str]
    source: Path

    def __len__(self) -> int:
        return len(self.values)


def parse_where(texts: Iterable[str]) -> tuple[Clause, ...]:
    """The clauses of ``--where`` options; ConfigError lists every mistake."""
    clauses: list[Clause] = []
    problems: list[str] = []
    for text in texts:
        found = _WHERE.match(text)
        if found is None:
            problems.append(
                f"--where {text!r}: write KEYWORD=VALUE, KEYWORD!=VALUE, KEYWORD~REGEX, "
                "KEYWORD>=NUMBER or KEYWORD<=NUMBER"
            )
            continue
        name, operator, value = found.group(1), found.group(2), found.group(3).strip()
        try:
            keyword = resolve(name)
        except KeywordError as exc:
            problems.append(f"--where {text!r}: {exc}")
            continue
        raw: Any = {
            "=": value,
            "!=": {"not": value},
            "~": {"regex": value},
            ">=": {"min": value},
            "<=": {"max": value},
        }[operator]

        def report(_path: tuple[str | int, ...], message: str, text: str = text) -> None:
            problems.append(f"--where {text!r}: {message}")

        condition = parse_condition(raw, keyword, (keyword.name,), report)
        if condition is not None:
            clauses.append(Clause(keyword.name, keyword.kind, condition))
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(clauses)


def read_study_list(path: Path) -> StudyList:
    """The identifiers in a .csv or .xlsx file's SeriesInstanceUID, StudyInstanceUID or
    AccessionNumber column (the first of those found, header names case-insensitive)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    header, rows = read_table(path)
    wanted = {name.lower(): name for name in LIST_COLUMNS}
    names = [str(cell or "").strip().replace(" ", "").lower() for cell in header]
    for name in (n.lower() for n in LIST_COLUMNS):
        if name in names:
            column = names.index(name)
            values = {
                str(row[column]).strip()
                for row in rows
                if column < len(row) and row[column] is not None and str(row[column]).strip()
            }
            return StudyList(wanted[name], frozenset(values), path)
    raise ConfigError(
        f"{path}: no column named {', '.join(LIST_COLUMNS[:-1])} or {LIST_COLUMNS[-1]} "
        f"in its first row (found: {', '.join(str(c) for c in header if c) or 'nothing'})"
    )


def select(
    candidates: Iterable[tuple[SeriesSource, SeriesAttributes]],
    clauses: Sequence[Clause],
    study_list: StudyList | None = None,
    series_uids: Sequence[str] = (),
) -> list[SeriesSource]:
    """The candidates every clause holds for, and that the list and the UIDs name."""
    wanted = set(series_uids)
    chosen = []
    for source, attributes in candidates:
        if wanted and source.series_uid not in wanted:
            continue
        if study_list is not None:
            values = {str(v).strip() for v in attributes.get(study_list.keyword)}
            if not values & study_list.values:
                continue
        if all(check_clause(clause, attributes) is None for clause in clauses):
            chosen.append(source)
    return chosen


def keywords_needed(clauses: Sequence[Clause], study_list: StudyList | None) -> list[str]:
    """The header keywords selection reads."""
    names = [clause.keyword for clause in clauses]
    if study_list is not None:
        names.append(study_list.keyword)
    return list(dict.fromkeys(names))


def folder_candidates(
    folders: Sequence[Path], keywords: Sequence[str]
) -> Iterator[tuple[SeriesSource, SeriesAttributes]]:
    """The series found in files and folders (recursive), in the order first met.

    Files that are not DICOM are skipped; so are files without a Series Instance UID.
    """
    from pydicom.datadict import tag_for_keyword

    tags = [
        tag
        for kw in (*keywords, "SeriesInstanceUID", "SOPInstanceUID")
        if (tag := tag_for_keyword(kw)) is not None
    ]
    series: dict[str, tuple[list[Path], list[pydicom.Dataset]]] = {}
    for path in files_below(folders):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
            series_uid = str(dataset.get("SeriesInstanceUID", "")).strip()
        except (InvalidDicomError, OSError, ValueError, TypeError, EOFError):
            continue
        if series_uid:
            paths, datasets = series.setdefault(series_uid, ([], []))
            paths.append(path)
            datasets.append(dataset)
    for series_uid, (paths, datasets) in series.items():
        folder = _common_folder(paths)
        attributes = SeriesAttributes.from_values(
            attributes_from_datasets(datasets, keywords),
            image_count=len({str(ds.get("SOPInstanceUID", id(ds))) for ds in datasets}),
            series_uid=series_uid,
        )
        yield SeriesSource(series_uid, tuple(sorted(paths)), str(folder)), attributes


def _common_folder(paths: Sequence[Path]) -> Path:
    parents = {path.parent for path in paths}
    if len(parents) == 1:
        return parents.pop()
    parts = [p.parts for p in parents]
    common = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path()


def index_candidates(
    index: IndexReads, spool: Spool, keywords: Sequence[str]
) -> Iterator[tuple[SeriesSource, SeriesAttributes]]:
    """The series the node holds, oldest first, with every instance of every version.

    Indexed attributes (the routing keywords) come from the index; other keywords are
    read from the series' spooled headers, as rules read them.
    """
    from pydicom.datadict import tag_for_keyword

    from dicomnode.rules.keywords import DERIVED
    from dicomnode.store.header import ROUTING_KEYWORDS

    unindexed = [kw for kw in keywords if kw not in DERIVED and kw not in ROUTING_KEYWORDS]
    tags = [tag for kw in unindexed if (tag := tag_for_keyword(kw)) is not None]
    for summary in reversed(index.list_series(limit=2**31 - 1)):
        paths = tuple(spool.path(row.spool_name) for row in index.instances_of(summary.id))
        if not paths:
            continue
        values: dict[str, Any] = dict(index.series_attributes(summary.id))
        if tags:
            headers = []
            for path in paths:
                try:
                    headers.append(
                        pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
                    )
                except (InvalidDicomError, OSError, ValueError, TypeError, EOFError):
                    continue  # the export of this series names the file
            values.update(attributes_from_datasets(headers, unindexed))
        attributes = SeriesAttributes.from_values(
            values, image_count=summary.instance_count, series_uid=summary.series_uid
        )
        yield SeriesSource(summary.series_uid, paths, f"stored series {summary.id}"), attributes
