"""The rows of a ``.csv`` / ``.tsv`` (header row) or ``.jsonl`` (one object per line) text table,
read line by line with bounded lines and fields: ``(line number, text, label)`` per row, and the
columns seen. Shared by the text-csv dataset and text transfer sets (no dataset code here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kdlab.data.files import MAX_LINE_BYTES, TextLines, shorten
from kdlab.errors import DataError

Rows = list[tuple[int, str, str]]


def csv_rows(path: Path, lines: TextLines, text_column: str, label_column: str) -> tuple[list[str], Rows]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    old_limit = csv.field_size_limit(MAX_LINE_BYTES)  # whole reviews can exceed csv's 128 KB default
    reader = csv.reader(lines, delimiter=delimiter)
    rows: Rows = []
    try:
        columns = next(reader, [])
        if text_column not in columns or label_column not in columns:
            for _ in reader:  # only to tell an empty file from a missing column
                if lines.seen_text:
                    break
            return columns, rows
        ti, li = columns.index(text_column), columns.index(label_column)
        for row in reader:
            if not row:
                continue  # a blank line, as csv.DictReader skips it
            rows.append((reader.line_num, row[ti] if ti < len(row) else "", row[li] if li < len(row) else ""))
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(
                f"{path}:{reader.line_num}: a field longer than {MAX_LINE_BYTES // 2**20} Mi characters "
                "(an unbalanced quote?)"
            ) from None
        raise DataError(f"{path}:{reader.line_num}: not valid {path.suffix[1:].upper()} ({e})") from None
    finally:
        csv.field_size_limit(old_limit)
    return columns, rows


def cell(value: object, path: Path, line: int, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        kind = "an array" if isinstance(value, list) else "an object"
        raise DataError(
            f"{path}:{line}: '{shorten(key)}' is {kind}, not a string; JSONL rows need a string text and a string "
            "or number label"
        )
    return value if isinstance(value, str) else str(value)


def jsonl_rows(path: Path, lines: TextLines, text_column: str, label_column: str) -> tuple[list[str], Rows]:
    rows: Rows = []
    columns: dict[str, None] = {}
    for line in lines:
        if not line.strip():
            continue
        line_no = lines.line
        try:
            obj = json.loads(line)
        except RecursionError:
            raise DataError(
                f"{path}:{line_no}: JSON nested too deeply to read; JSONL needs one flat object per line"
            ) from None
        except ValueError as e:  # JSONDecodeError, or an integer of more than 4,300 digits
            msg = e.msg if isinstance(e, json.JSONDecodeError) else shorten(e, 80)
            raise DataError(f"{path}:{line_no}: not a JSON object ({msg}); JSONL needs one object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line_no}: a JSON {type(obj).__name__}, not an object; JSONL needs objects")
        if len(columns) < 10_000:  # the column names only serve the missing-column message
            columns.update(dict.fromkeys(obj))
        text = cell(obj.get(text_column), path, line_no, text_column)
        label = cell(obj.get(label_column), path, line_no, label_column)
        columns.update(dict.fromkeys(k for k in (text_column, label_column) if k in obj))
        rows.append((line_no, text, label))
    return list(columns), rows
