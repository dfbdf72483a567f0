"""A labelled set: the rows of a manifest (CSV or XLSX) that an evaluation runs over.

By default the columns are those ``dicomnode export`` writes: ``dicom`` (the folder of a
series' DICOM files, relative to the manifest's folder), ``label`` (filled in by the
user) and ``item`` (the row's id). A label is 0/1, true/false, yes/no or
positive/negative in any case; a row with an empty label is skipped and counted, so a
half-labelled export can be evaluated as it stands. Problems name the file, row and column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dicomnode.datasets.spreadsheets import NEGATIVE, POSITIVE, read_table
from dicomnode.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Columns:
    """Which manifest columns hold what; ``label`` or ``reference_seg`` None: not read."""

    path: str = "dicom"
    label: str | None = "label"
    reference_seg: str | None = None
    item: str = "item"


@dataclass(frozen=True, slots=True)
class Row:
    """One series to evaluate."""

    item: str  # the manifest's item id, else the row number
    series_dir: Path
    label: int | None
    reference_seg: Path | None


@dataclass(frozen=True, slots=True)
class LabelledSet:
    manifest: Path
    sha256: str  # of the manifest's bytes: names the labels the figures were computed on
    rows: tuple[Row, ...]
    skipped: int  # rows without a label (or reference SEG) to evaluate against


def read_labelled_set(manifest: Path, columns: Columns) -> LabelledSet:
    """The rows of ``manifest`` that carry what ``columns`` asks for.

    ConfigError (a usage error) when the file is missing or unreadable, a named column is
    absent, or a label is not a recognised value.
    """
    try:
        data = manifest.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{manifest}: cannot read the manifest: {exc.strerror}") from exc
    header, records = read_table(manifest, data)
    wanted = [columns.path, columns.label, columns.reference_seg]
    for name in (c for c in wanted if c is not None):
        if name not in header:
            shown = ", ".join(h for h in header if h) or "none"
            raise ConfigError(f"{manifest}: no column {name!r} (columns: {shown})")
    base = manifest.parent
    rows: list[Row] = []
    skipped = 0
    for number, record in enumerate(records, start=2):  # row 1 is the header
        values = dict(zip(header, record, strict=False))
        if not any(v.strip() for v in values.values()):
            continue  # a blank line, as spreadsheets leave at the end
        item = values.get(columns.item, "").strip() or f"row {number}"
        label = None
        if columns.label is not None:
            label = _label(values.get(columns.label, ""), manifest, number, columns.label)
            if label is None:
                skipped += 1
                continue
        reference = None
        if columns.reference_seg is not None:
            text = values.get(columns.reference_seg, "").strip()
            if not text:
                skipped += 1
                continue
            reference = base / text
        folder = values.get(columns.path, "").strip()
        if not folder:
            raise ConfigError(f"{manifest}: row {number}: column {columns.path!r} is empty")
        rows.append(Row(item, base / folder, label, reference))
    return LabelledSet(manifest, hashlib.sha256(data).hexdigest(), tuple(rows), skipped)


def _label(text: str, manifest: Path, number: int, column: str) -> int | None:
    value = text.strip().lower()
    if not value:
        return None
    if value.endswith(".0"):  # a spreadsheet's 1.0
        value = value[:-2]
    if value in POSITIVE:
        return 1
    if value in NEGATIVE:
        return 0
    raise ConfigError(
        f"{manifest}: row {number}: column {column!r}: {text.strip()[:40]!r} is not a label "
        "(use 0/1, true/false, yes/no or positive/negative; leave empty to skip the row)"
    )


def row_files(folder: Path) -> Sequence[Path]:
    """The files of a series' folder (and below it), hidden ones left out, in name order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
