"""Domain errors raised by services; `app.problems` turns each into RFC 9457 problem+json."""

import uuid
from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    slug: ClassVar[str] = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Unauthorized(DomainError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(DomainError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(DomainError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(DomainError):
    status, title, slug = 409, "Conflict", "conflict"


class DuplicateCustomer(Conflict):
    title, slug = "Duplicate customer", "duplicate-customer"

    def __init__(self, detail: str, *, existing_id: uuid.UUID, field: str) -> None:
        super().__init__(detail, existing_id=str(existing_id), field=field)


class NotEnoughPoints(Conflict):
    title, slug = "Not enough points", "not-enough-points"

    def __init__(self, detail: str, *, available: int) -> None:
        super().__init__(detail, available=available)


class OutOfStock(Conflict):
    title, slug = "Out of stock", "out-of-stock"


class NotEligible(Conflict):
    """A reward the customer may not redeem: another level, its limit reached, outside its dates."""

    title, slug = "Not eligible", "not-eligible"


class VoucherSpent(Conflict):
    """A voucher used on an order already, or voided."""

    title, slug = "Voucher spent", "voucher-spent"


class IdempotencyInProgress(Conflict):
    title, slug = "Request in progress", "idempotency-in-progress"


class Gone(DomainError):
    status, title, slug = 410, "Gone", "gone"


class VoucherExpired(Gone):
    title, slug = "Voucher expired", "voucher-expired"


class PreconditionFailed(DomainError):
    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(DomainError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class ValidationFailed(DomainError):
    """422 with field errors: `errors=[{"loc": [...], "msg": ..., "type": ...}]`."""

    status, title, slug = 422, "Validation failed", "validation-failed"

    def __init__(self, detail: str, *, loc: list[str | int], error_type: str = "value_error") -> None:
        super().__init__(detail, errors=[{"loc": loc, "msg": detail, "type": error_type}])

    @classmethod
    def listing(cls, detail: str, errors: list[dict[str, Any]]) -> "ValidationFailed":
        """One 422 naming several bad places at once (each `{"loc", "msg", "type", ...}`), so a
        caller fixes them in one round."""
        failure = cls(detail, loc=errors[0]["loc"], error_type=errors[0]["type"])
        failure.extra["errors"] = errors
        return failure


class IdempotencyKeyReused(DomainError):
    status, title, slug = 422, "Idempotency key reused", "idempotency-key-reused"


class PreconditionRequired(DomainError):
    status, title, slug = 428, "Precondition required", "precondition-required"


class ServiceUnavailable(DomainError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"
