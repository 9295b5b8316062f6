"""RFC 9457 problem bodies of domain and validation errors: the error handler sends them, and a
batch's per-item results carry them."""

from typing import Any

from app.core.errors import DomainError

PROBLEM_TYPE_BASE = "https://guanxi.dev/problems/"


def problem_body(*, status: int, title: str, slug: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}


def domain_problem(exc: DomainError) -> dict[str, Any]:
    return problem_body(status=exc.status, title=exc.title, slug=exc.slug, detail=exc.detail, **exc.extra)


# pydantic prefixes the message of a validator's ValueError with this; the caller needs only the message.
_VALUE_ERROR_PREFIX = "Value error, "


def _message(error: dict[str, Any]) -> str:
    message = str(error["msg"])
    return message.removeprefix(_VALUE_ERROR_PREFIX) if error["type"] == "value_error" else message


def validation_problem(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """422 body from pydantic-style errors: `detail` names the first bad field."""
    cleaned = [
        {"loc": [p if isinstance(p, int) else str(p) for p in e["loc"]], "msg": _message(e), "type": e["type"]}
        for e in errors
    ]
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return problem_body(status=422, title="Validation failed", slug="validation-failed", detail=detail, errors=cleaned)
