"""The one version check of every write that names the version it read (`If-Match`)."""

from typing import Final

from app.core.errors import PreconditionFailed

# `If-Match: *`: any current version matches (RFC 9110, 13.1.1).
ANY_VERSION: Final = -1


def check_version(current: int, expected: int, *, what: str) -> None:
    """412 unless `expected` is the row's `current` version, or any version."""
    if expected != ANY_VERSION and current != expected:
        raise PreconditionFailed(
            f"The {what} changed since you read it; read it again and retry.", current_version=current
        )
