"""Customer codes from a per-workspace pattern such as `KH-{yyyy}-{seq:06}`, gap-free.

The counter row is incremented inside the creating transaction: a rollback returns the number, and
concurrent creates queue on the row lock instead of racing."""

import re
from datetime import datetime

_SEQ = re.compile(r"\{seq(?::0(\d{1,2}))?\}")
_DATE_TOKENS = {"{yyyy}": "%Y", "{yy}": "%y", "{mm}": "%m"}
_ALLOWED = re.compile(r"^[A-Za-z0-9\-_/.]*$")


def check_pattern(pattern: str) -> None:
    """A pattern has exactly one `{seq}` or `{seq:0N}` and only date tokens besides."""
    if len(_SEQ.findall(pattern)) != 1:
        raise ValueError("the pattern needs exactly one {seq} or {seq:0N} token")
    rest = _SEQ.sub("", pattern)
    for token in _DATE_TOKENS:
        rest = rest.replace(token, "")
    if not _ALLOWED.match(rest):
        raise ValueError("only letters, digits, - _ / . and the tokens {yyyy} {yy} {mm} {seq:0N} are allowed")


def shape(pattern: str) -> str:
    """A POSIX regular expression matching every code the pattern can issue, at any date."""
    parts = re.split(r"(\{yyyy\}|\{yy\}|\{mm\}|\{seq(?::0\d{1,2})?\})", pattern)
    tokens = {"{yyyy}": "[0-9]{4}", "{yy}": "[0-9]{2}", "{mm}": "[0-9]{2}"}
    out = []
    for part in parts:
        seq = _SEQ.fullmatch(part)
        if part in tokens:
            out.append(tokens[part])
        elif seq:
            out.append(f"[0-9]{{{seq.group(1) or 1},}}")
        else:
            out.append(re.escape(part))
    return "^" + "".join(out) + "$"


def render(pattern: str, at: datetime, sequence: int | None = None) -> str:
    text = pattern
    for token, fmt in _DATE_TOKENS.items():
        text = text.replace(token, at.strftime(fmt))
    if sequence is None:
        return _SEQ.sub("{seq}", text)
    match = _SEQ.search(text)
    width = int(match.group(1)) if match and match.group(1) else 0
    return _SEQ.sub(str(sequence).zfill(width), text)


def sequence_width(pattern: str) -> int:
    match = _SEQ.search(pattern)
    return int(match.group(1)) if match and match.group(1) else 0


def scope_of(pattern: str, at: datetime) -> tuple[str, int]:
    """The counter scope for a code issued at `at` (the pattern with its dates filled in: a yearly
    pattern restarts every year) and the width its sequence number is padded to."""
    return render(pattern, at), sequence_width(pattern)
