"""How times and money are written wherever they leave the service (responses, exports, events):
times as RFC 3339 in UTC with `Z`, money as a decimal string in its currency's decimals."""

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
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
def currency_places(currency: str) -> int:
    """Its decimals: ISO 4217 minor units as CLDR has them (CNY 2, JPY 0, KWD 3)."""
    return int(get_currency_precision(currency))


def money_text(amount: Decimal, currency: str) -> str:
    """`"12900.00"` for CNY, `"12900"` for JPY: the amount in its currency's decimals. A computed
    figure (an average, a prediction) is rounded half away from zero, as PostgreSQL's `round` does."""
    quantum = Decimal(1).scaleb(-currency_places(currency))
    return format(Decimal(amount).quantize(quantum, rounding=ROUND_HALF_UP), "f")


def money_text_sql(expression: str, places: str) -> str:
    """SQL writing a numeric `expression` as `money_text` writes it, `places` being SQL for the
    currency's decimals (a bind parameter set from `currency_places`)."""
    return f"(round({expression}, {places})::text)"


def utc_text_sql(expression: str) -> str:
    """SQL writing a `timestamptz` expression as `utc_text` writes it, for JSON built in a statement
    (set-based imports write their events and audit entries without the rows reaching Python)."""
    at = f"(({expression}) AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN date_trunc('second', {at}) = {at} THEN to_char({at}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        f' ELSE to_char({at}, \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') END'
    )
