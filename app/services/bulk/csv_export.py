"""Cells of the files the service writes (reports, exports) and reads back (imports): safe to open
in a spreadsheet, and read back as they were written.

An export's file is a valid import file: a list is written joined with the separator an import
splits on, and an import undoes the export's own formula escape, so export then import is lossless."""

import csv
import io
import re
from collections.abc import Iterable

# A cell starting with one of these runs as a formula in a spreadsheet (CSV injection).
_FORMULA_START = "=+-@\t\r"
# Escaped: a formula start after any quotes. The quotes count, so that a value that itself starts
# with a quote and a formula start ("'=x") is escaped too and reads back as it was.
_NEEDS_QUOTE = re.compile(f"'*[{re.escape(_FORMULA_START)}]")
_QUOTED = re.compile(f"''*[{re.escape(_FORMULA_START)}]")
_RISKY = frozenset(_FORMULA_START + "'")
LIST_SEPARATOR = ";"


def safe_cell(value: str) -> str:
    """A leading quote keeps a spreadsheet from running a cell as a formula."""
    return "'" + value if value[:1] in _RISKY and _NEEDS_QUOTE.match(value) else value


def read_cell(value: str) -> str:
    """A cell as it was before `safe_cell`; a cell safe_cell did not write comes back unchanged."""
    return value[1:] if value[:1] == "'" and _QUOTED.match(value) else value


def join_list(items: Iterable[str]) -> str:
    return LIST_SEPARATOR.join(items)


def split_list(cell: str) -> list[str]:
    """The items of a list cell: separated by `;` (what exports write) or `,`, trimmed, blanks dropped."""
    return [part.strip() for part in cell.replace(",", LIST_SEPARATOR).split(LIST_SEPARATOR) if part.strip()]


def render(rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()
