"""Labels as they arrive: a spreadsheet of series (or studies, or accessions) and a verdict.

A CSV or XLSX file with a header row: one identifying column (``SeriesInstanceUID``,
``StudyInstanceUID`` or ``AccessionNumber``, the first found in that order, any case)
and a label column (``label`` unless told). A label is positive or negative
(``1``/``0``, ``true``/``false``, ``yes``/``no``, ``positive``/``negative``); an empty
cell is not labelled yet. The identifiers are patient data: they are compared, never
logged nor put into a message.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicomnode.datasets.spreadsheets import NEGATIVE, POSITIVE, read_table
from dicomnode.errors import ConfigError

KeyKind = Literal["series", "study", "accession"]
_KEY_COLUMNS: tuple[tuple[str, KeyKind], ...] = (
    ("seriesinstanceuid", "series"),
    ("studyinstanceuid", "study"),
    ("accessionnumber", "accession"),
)


@dataclass(frozen=True, slots=True)
class Labels:
    """Identifier -> positive (True) or negative (False), keyed by one kind of identifier."""

    key: KeyKind
    column: str
    values: dict[str, bool]

    def get(self, identifier: str | None) -> bool | None:
        return None if identifier is None else self.values.get(identifier.strip())


def read_labels(path: Path, label_column: str = "label") -> Labels:
    """The labels of ``path``; ConfigError naming the file, row and column otherwise."""
    header, rows = read_table(path)
    return labels_from_rows([list(header), *rows], path, label_column)


def labels_from_csv(text: str, name: str, label_column: str = "label") -> Labels:
    """Labels from CSV text (sent to the admin API); ``name`` names it in messages."""
    rows: list[list[str]] = [list(row) for row in csv.reader(text.splitlines())]
    return labels_from_rows(rows, Path(name), label_column)


def labels_from_rows(rows: list[list[str]], path: Path, label_column: str) -> Labels:
    """Labels from a header row and data rows; ``path`` names their file in messages."""
    if not rows:
        raise ConfigError(f"{path}: no header row: the labels file is empty")
    header = [str(cell or "").strip() for cell in rows[0]]
    lowered = [name.lower() for name in header]
    found = next(((name, kind) for name, kind in _KEY_COLUMNS if name in lowered), None)
    if found is None:
        raise ConfigError(
            f"{path}: no identifying column: give one of SeriesInstanceUID, "
            f"StudyInstanceUID, AccessionNumber (columns: {', '.join(header)})"
        )
    key_at = lowered.index(found[0])
    if label_column.lower() not in lowered:
        raise ConfigError(
            f"{path}: no column {label_column!r} (columns: {', '.join(header)}); "
            "name the label column with --label-column"
        )
    label_at = lowered.index(label_column.lower())
    values: dict[str, bool] = {}
    for number, row in enumerate(rows[1:], start=2):
        identifier = _cell(row, key_at)
        text = _cell(row, label_at).lower()
        if not identifier or not text:
            continue  # not labelled yet
        if text in POSITIVE:
            values[identifier] = True
        elif text in NEGATIVE:
            values[identifier] = False
        else:
            # The label's value, not the identifier: a label is not patient data.
            raise ConfigError(
                f"{path}:{number}: {header[label_at]}: {text[:20]!r} is neither positive "
                "(1, true, yes, positive) nor negative (0, false, no, negative)"
            )
    return Labels(found[1], header[key_at], values)


def _cell(row: list[str], at: int) -> str:
    return row[at].strip() if at < len(row) else ""
