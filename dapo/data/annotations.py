"""Annotation files of the benchmark layouts (VisA's CSVs, Real-IAD's JSONs), read as checked data.

A file whose header or entries lack a column the loader needs is refused with
:class:`AnnotationFormatError`, naming the file, what is missing and the columns (keys) the
layout expects, instead of a bare ``KeyError`` deep in a loader. CSVs are read as UTF-8 with
an optional byte-order mark (spreadsheet programs write one), and header names are compared
after stripping spaces.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class AnnotationFormatError(ValueError):
    """An annotation file (CSV or JSON) lacks a column or key its layout requires, or is malformed."""


def read_csv_rows(path: Path, required: Sequence[str], layout: str) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of stripped strings; the header must hold ``required``.

    ``layout`` names the layout in messages (e.g. ``"the VisA 1-class split"``).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or []) if name is not None]
            missing = [name for name in required if name not in header]
            if missing:
                found = ",".join(header) if header else "nothing (an empty file)"
                raise AnnotationFormatError(
                    f"{path}: the header lacks the column(s) {', '.join(missing)} of {layout}; expected the "
                    f"columns {','.join(required)}, found {found}")
            rows = []
            for number, row in enumerate(reader, start=2):
                if None in row:
                    raise AnnotationFormatError(f"{path}, line {number}: more fields than the header's "
                                                f"{len(header)} columns ({','.join(header)})")
                rows.append({key.strip(): (value or "").strip() for key, value in row.items()})
            return rows
    except UnicodeDecodeError as error:
        raise AnnotationFormatError(f"{path} is not a UTF-8 text file ({error}); expected {layout} as CSV "
                                    f"with the columns {','.join(required)}") from None


def check_values(path: Path, rows: Iterable[dict[str, str]], column: str, allowed: Sequence[str]) -> None:
    """Refuse a row whose ``column`` holds a value outside ``allowed`` (naming the line, 2 = first row)."""
    for number, row in enumerate(rows, start=2):
        if row[column] not in allowed:
            raise AnnotationFormatError(f"{path}, line {number}: {column}={row[column]!r}; expected one of "
                                        f"{', '.join(map(repr, allowed))}")


def check_unique(path: Path, values: Sequence[str], what: str, *, json_list: str | None = None) -> None:
    """Refuse a file that lists the same ``what`` twice (it would be evaluated twice), naming both places:
    CSV lines (2 = first row) or, with ``json_list``, the indices of that JSON list."""
    seen: dict[str, int] = {}
    first = 2 if json_list is None else 0
    for number, value in enumerate(values, start=first):
        if value in seen:
            where = f"lines {seen[value]} and {number}" if json_list is None else \
                f"{json_list}[{seen[value]}] and {json_list}[{number}]"
            raise AnnotationFormatError(f"{path}: {what} {value!r} is listed twice ({where}); each must appear once")
        seen[value] = number


def read_json(path: Path, layout: str) -> Any:
    """A JSON document, or :class:`AnnotationFormatError` naming the file and the decoding problem."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationFormatError(f"cannot read {layout} file {path}: {error}") from error


def check_entry(path: Path, where: str, entry: Any, required: Sequence[str]) -> None:
    """Refuse a JSON entry that is not an object holding every key of ``required``."""
    if not isinstance(entry, dict):
        raise AnnotationFormatError(f"{path}: {where} is a {type(entry).__name__}, expected an object with the "
                                    f"keys {', '.join(required)}")
    missing = [key for key in required if key not in entry]
    if missing:
        raise AnnotationFormatError(f"{path}: {where} lacks the key(s) {', '.join(missing)}; expected the keys "
                                    f"{', '.join(required)}, found {', '.join(map(str, entry)) or 'none'}")
