"""What a response may send without declaring it: the transport's own headers, and the request id
every response carries (stated once, in the document's description)."""

from collections.abc import Iterable
from typing import Any

TRANSPORT = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "date", "server", "x-request-id"}
)


def undeclared(sent: Iterable[str], declared: Iterable[str]) -> list[str]:
    """The headers sent that the document's response does not declare."""
    known = TRANSPORT | {name.lower() for name in declared}
    return sorted(name.lower() for name in sent if name.lower() not in known)


def mismatches(document: dict[str, Any], method: str, path: str, status: int, sent: Iterable[str]) -> list[str]:
    """Undeclared headers, and declared required ones missing, for a response of a status the
    operation declares (an undeclared status is the contract run's `status_code_conformance`)."""
    response = document["paths"][path][method]["responses"].get(str(status))
    if response is None:
        return []
    sent = [name.lower() for name in sent]
    declared: dict[str, Any] = response.get("headers", {})
    missing = [
        f"missing {name}" for name, header in declared.items() if header.get("required") and name.lower() not in sent
    ]
    return [f"undeclared {name}" for name in undeclared(sent, declared)] + missing
