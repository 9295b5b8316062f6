"""How times and money are written wherever they leave the service (responses, exports, events):
times as RFC 3339 in UTC with `Z`, money as a decimal string in its currency's decimals."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from babel.numbers import get_currency_precision


def utc_text(moment: datetime) -> str:
    """`2026-11-22T00:30:00Z`, microseconds when there are any. A time without an offset is taken
    as UTC: the database's `timestamptz` always has one, so only a computed value can lack it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    else:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"


@lru_cache(maxsize=512)
def _quantum(currency: str) -> Decimal:
    # ISO 4217 minor units as CLDR has them: CNY 2, JPY 0, KWD 3.
    return Decimal(1).scaleb(-get_currency_precision(currency))


def money_text(amount: Decimal, currency: str) -> str:
    """`"12900.00"` for CNY, `"12900"` for JPY: the amount in its currency's decimals."""
    return format(Decimal(amount).quantize(_quantum(currency)), "f")
