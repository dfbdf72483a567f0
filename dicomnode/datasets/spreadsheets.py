"""Tables researchers keep: a .csv (UTF-8, Excel's byte order mark allowed) or an .xlsx.

One reader for study lists (export) and labelled sets (evaluate): every cell comes back as
text, a spreadsheet's ``1.0`` as ``1``, an empty cell as ``""``; only the first sheet of a
workbook is read. Errors name the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from dicomnode.errors import ConfigError

SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm")
# How people write a binary label in a spreadsheet (compared in lower case).
POSITIVE = frozenset({"1", "true", "yes", "positive", "pos", "y", "t"})
NEGATIVE = frozenset({"0", "false", "no", "negative", "neg", "n", "f"})


def read_table(path: Path, data: bytes | None = None) -> tuple[list[str], list[list[str]]]:
    """The header row (stripped) and the other rows; ``data``: the file's bytes if read."""
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        rows = list(_xlsx_rows(path))
    else:
        try:
            raw = path.read_bytes() if data is None else data
            text = raw.decode("utf-8-sig")  # Excel's CSV starts with a byte order mark
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from None
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
                text[:4096], delimiters=",;\t"
            )
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.reader(text.splitlines(), dialect))
    if not rows:
        raise ConfigError(f"{path}: the file is empty (it needs a header row)")
    return [h.strip() for h in rows[0]], rows[1:]


def _xlsx_rows(path: Path) -> Iterator[list[str]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the workbook: {exc}") from exc
    try:
        sheet = workbook.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [_cell(v) for v in values]
    finally:
        workbook.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
