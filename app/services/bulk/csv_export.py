"""CSV output for reports and exports, safe to open in a spreadsheet."""

import csv
import io
from collections.abc import Iterable

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """A leading quote keeps a spreadsheet from running a cell as a formula (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def render(rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()
