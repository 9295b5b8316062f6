"""Orders: idempotent upsert per (source, external id), lists, fulfilment moves, and the customer figures they drive."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from babel.numbers import get_currency_precision, list_currencies
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.batches import Done, apply_each
from app.core.errors import ValidationFailed
from app.core.ids import new_id
from app.core.jsonable import to_jsonable
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.core.wire import money_text
from app.models import Order, OrderFulfilmentChange, OrderLine, Workspace
from app.schemas.order import FulfilmentIn, OrderFilters, OrderIn, OrderLineOut
from app.services.customers.visibility import require_visible, through_customer
from app.services.events import audit, outbox
from app.services.events.event_catalogue import data_model
from app.services.events.payloads import Field, Payload, column, given, money, timestamp
from app.services.loyalty import points
from app.services.segments import lifecycle
from app.services.value import customer_values, fulfilment

_CURRENCIES = frozenset(list_currencies()) - {"XXX", "XTS"}


async def upsert(session: AsyncSession, ctx: Caller, data: OrderIn) -> tuple[Order, list[OrderLine], bool]:
    """Create the order, or bring the stored one with the same (source, external_id) in line.
    Returns (order, lines, created). Sending the same order again changes nothing."""
    await _check(session, ctx, data)
    existing = await _stored(session, ctx, data)
    now = clock.now()
    fields = {
        "customer_id": data.customer_id,
        "ordered_at": data.ordered_at,
        "status": data.status,
        "currency": data.currency,
        "total_amount": data.total_amount,
        "refunded_amount": data.refunded_amount,
        "channel": data.channel,
        "store": data.store,
    }
    if existing is None:
        order = Order(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            source=data.source,
            external_id=data.external_id,
            created_at=now,
            updated_at=now,
            version=1,
            **fields,
        )
        try:
            # A concurrent create of the same (source, external_id) waits on the unique index and
            # fails here once the other commits: the savepoint drops this one, and it becomes an
            # update of the row the other wrote (no change when both sent the same order).
            async with session.begin_nested():
                session.add(order)
                await session.flush()
        except IntegrityError:
            existing = await _stored(session, ctx, data)
            if existing is None:
                raise
    if existing is None:
        lines = await _replace_lines(session, ctx, order, data)
        first = data.fulfilment_status or fulfilment.first_status(data.status)
        await fulfilment.write(
            session, ctx, [fulfilment.Change(order.id, first, data.tracking_reference, created=True)]
        )
        outbox.emit(session, ctx, "order.created", event_data(order, lines))
        audit.record(session, ctx, entity_type="order", entity_id=order.id, action="created", changes={})
        await points.sync_orders(session, ctx, [order.id])
        await _refresh_figures(session, ctx, order.customer_id)
        return order, lines, True
    previous_customer = existing.customer_id
    # The stored order may be a customer's the caller cannot see: it is not the caller's to move or change.
    await require_visible(session, ctx, previous_customer)
    if data.fulfilment_status is not None or data.tracking_reference is not None:
        await fulfilment.write(
            session, ctx, [fulfilment.Change(existing.id, data.fulfilment_status, data.tracking_reference)]
        )
    changes = {
        name: {"before": to_jsonable(getattr(existing, name)), "after": to_jsonable(value)}
        for name, value in fields.items()
        if getattr(existing, name) != value
    }
    current_lines = await lines_of(session, ctx, [existing.id])
    lines_changed = [_line_key(line) for line in current_lines[existing.id]] != [
        (line.sku, line.product_name, line.category, line.quantity, line.unit_price) for line in data.lines
    ]
    if not changes and not lines_changed:
        return existing, current_lines[existing.id], False
    for name, value in fields.items():
        setattr(existing, name, value)
    existing.version += 1
    existing.updated_at = now
    lines = await _replace_lines(session, ctx, existing, data) if lines_changed else current_lines[existing.id]
    if lines_changed:
        changes["lines"] = {"before": None, "after": len(lines)}
    outbox.emit(session, ctx, "order.updated", event_data(existing, lines, changed_fields=sorted(changes)))
    audit.record(session, ctx, entity_type="order", entity_id=existing.id, action="updated", changes=changes)
    await session.flush()
    await points.sync_orders(session, ctx, [existing.id])
    await _refresh_figures(session, ctx, existing.customer_id)
    if previous_customer != existing.customer_id:
        await _refresh_figures(session, ctx, previous_customer)
    return existing, lines, False


async def _stored(session: AsyncSession, ctx: Caller, data: OrderIn) -> Order | None:
    return await session.scalar(
        select(Order)
        .where(
            Order.workspace_id == ctx.workspace_id, Order.source == data.source, Order.external_id == data.external_id
        )
        .with_for_update()
    )


async def _refresh_figures(session: AsyncSession, ctx: Caller, customer_id: uuid.UUID) -> None:
    """The order's consequences, in its transaction: value figures and tier, then lifecycle stage.
    Its points come first (`points.sync_orders`), as in the import: the member's account, then the
    figures' row, always in that order. Taken the other way round, an order holding the figures
    would wait on the account behind every redemption, and the orders behind it on the figures."""
    await customer_values.refresh_customer(session, ctx, customer_id)
    await lifecycle.apply_rules(session, ctx, customer_id=customer_id)


async def get(session: AsyncSession, ctx: Caller, order_id: uuid.UUID) -> tuple[Order, list[OrderLine]]:
    order = await scoped.one(
        session, through_customer(Order, ctx).where(Order.id == order_id), missing="No order with that id."
    )
    return order, (await lines_of(session, ctx, [order.id]))[order.id]


async def list_for_customer(
    session: AsyncSession,
    ctx: Caller,
    customer_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    ordered_from: datetime | None,
    ordered_to: datetime | None,
    status: str | None,
    category: str | None,
) -> tuple[list[tuple[Order, list[OrderLine]]], str | None]:
    """Newest first; two statements whatever the page size (orders, then their lines)."""
    await require_visible(session, ctx, customer_id)
    stmt = select(Order).where(Order.workspace_id == ctx.workspace_id, Order.customer_id == customer_id)
    if ordered_from:
        stmt = stmt.where(Order.ordered_at >= ordered_from)
    if ordered_to:
        stmt = stmt.where(Order.ordered_at < ordered_to)
    if status:
        stmt = stmt.where(Order.status == status)
    if category:
        stmt = stmt.where(
            Order.id.in_(
                select(OrderLine.order_id).where(
                    OrderLine.workspace_id == ctx.workspace_id, OrderLine.category == category
                )
            )
        )
    keys = [SortKey(Order.ordered_at, descending=True), SortKey(Order.id, descending=True)]
    page, next_cursor = await keyset_page(session, stmt, keys, list_name="orders", limit=limit, cursor=cursor)
    lines = await lines_of(session, ctx, [o.id for o in page])
    return [(o, lines[o.id]) for o in page], next_cursor


async def list_orders(
    session: AsyncSession,
    ctx: Caller,
    filters: OrderFilters,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
    loc: str,
) -> tuple[list[tuple[Order, list[OrderLine]]], str | None]:
    """The orders of the customers the caller may see, by `sort` (`-ordered_at`: newest first),
    narrowed by every filter given; two statements whatever the page size. `loc` ("query" or
    "body") is where a bad filter or cursor is reported."""
    if filters.ordered_from and filters.ordered_to and filters.ordered_from >= filters.ordered_to:
        raise ValidationFailed("ordered_to must be after ordered_from.", loc=[loc, "ordered_to"])
    if (
        filters.min_total_amount is not None
        and filters.max_total_amount is not None
        and filters.min_total_amount > filters.max_total_amount
    ):
        raise ValidationFailed("max_total_amount is less than min_total_amount.", loc=[loc, "max_total_amount"])
    stmt = through_customer(Order, ctx)
    any_of: dict[Any, Sequence[Any]] = {
        Order.customer_id: filters.customer_id,
        Order.status: filters.status,
        Order.fulfilment_status: filters.fulfilment_status,
        Order.source: filters.source,
        Order.channel: filters.channel,
        Order.store: filters.store,
    }
    for column_, values in any_of.items():
        if values:
            stmt = stmt.where(column_.in_(values))
    if filters.ordered_from:
        stmt = stmt.where(Order.ordered_at >= filters.ordered_from)
    if filters.ordered_to:
        stmt = stmt.where(Order.ordered_at < filters.ordered_to)
    if filters.min_total_amount is not None:
        stmt = stmt.where(Order.total_amount >= filters.min_total_amount)
    if filters.max_total_amount is not None:
        stmt = stmt.where(Order.total_amount <= filters.max_total_amount)
    if filters.category:
        stmt = stmt.where(
            Order.id.in_(
                select(OrderLine.order_id).where(
                    OrderLine.workspace_id == ctx.workspace_id, OrderLine.category.in_(filters.category)
                )
            )
        )
    descending = sort.startswith("-")
    keys = [SortKey(Order.ordered_at, descending=descending), SortKey(Order.id, descending=descending)]
    page, next_cursor = await keyset_page(
        session, stmt, keys, list_name=f"orders:{sort}", limit=limit, cursor=cursor, cursor_loc=loc
    )
    lines = await lines_of(session, ctx, [o.id for o in page])
    return [(o, lines[o.id]) for o in page], next_cursor


async def change_fulfilment(
    session: AsyncSession, ctx: Caller, order_id: uuid.UUID, data: FulfilmentIn, *, expected_version: int
) -> tuple[Order, list[OrderLine]]:
    """Move the order's fulfilment (409 with the allowed moves otherwise) or set its tracking reference."""
    order = await scoped.one(
        session, through_customer(Order, ctx).where(Order.id == order_id), missing="No order with that id.", lock=True
    )
    check_version(order.version, expected_version, what="order")
    await fulfilment.write(session, ctx, [fulfilment.Change(order.id, data.status, data.tracking_reference, data.note)])
    return order, (await lines_of(session, ctx, [order.id]))[order.id]


async def fulfilment_history(
    session: AsyncSession, ctx: Caller, order_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[OrderFulfilmentChange], str | None]:
    """Oldest first: the order's first status, then every change."""
    await scoped.one(
        session, through_customer(Order, ctx).where(Order.id == order_id), missing="No order with that id."
    )
    stmt = select(OrderFulfilmentChange).where(
        OrderFulfilmentChange.workspace_id == ctx.workspace_id, OrderFulfilmentChange.order_id == order_id
    )
    keys = [SortKey(OrderFulfilmentChange.at), SortKey(OrderFulfilmentChange.id)]
    return await keyset_page(session, stmt, keys, list_name=f"order-fulfilment:{order_id}", limit=limit, cursor=cursor)


def present_change(change: OrderFulfilmentChange) -> dict[str, Any]:
    return {
        "from_status": change.from_status,
        "to_status": change.to_status,
        "tracking_reference": change.tracking_reference,
        "note": change.note,
        "actor": change.actor,
        "at": change.at,
    }


async def lines_of(session: AsyncSession, ctx: Caller, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[OrderLine]]:
    result: dict[uuid.UUID, list[OrderLine]] = {order_id: [] for order_id in order_ids}
    if order_ids:
        rows = await session.scalars(
            select(OrderLine)
            .where(OrderLine.workspace_id == ctx.workspace_id, OrderLine.order_id.in_(order_ids))
            .order_by(OrderLine.order_id, OrderLine.line_no)
        )
        for line in rows:
            result[line.order_id].append(line)
    return result


def present(order: Order, lines: list[OrderLine]) -> dict[str, Any]:
    return {
        "id": order.id,
        "source": order.source,
        "external_id": order.external_id,
        "customer_id": order.customer_id,
        "ordered_at": order.ordered_at,
        "status": order.status,
        "currency": order.currency,
        "total_amount": money_text(order.total_amount, order.currency),
        "refunded_amount": money_text(order.refunded_amount, order.currency),
        "channel": order.channel,
        "store": order.store,
        "lines": [
            {
                "sku": line.sku,
                "product_name": line.product_name,
                "category": line.category,
                "quantity": _quantity(line.quantity),
                "unit_price": money_text(line.unit_price, order.currency),
            }
            for line in lines
        ],
        "fulfilment_status": order.fulfilment_status,
        "tracking_reference": order.tracking_reference,
        "fulfilment_updated_at": order.fulfilment_updated_at,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "version": order.version,
    }


class PricedLine(NamedTuple):
    """An order line with its order's currency, the one its price is in."""

    line: OrderLine
    currency: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.line, name)


# SQL for the workspace currency's decimals: set-based statements set `money_places` from `currency_places`.
MONEY_PLACES = "CAST(:money_places AS integer)"
LINE_EVENT: Payload[PricedLine] = Payload(
    (
        column("sku"),
        column("product_name"),
        column("category"),
        Field("quantity", lambda line: _quantity(line.quantity), lambda alias: f"trim_scale({alias}.quantity)::text"),
        money("unit_price", places=MONEY_PLACES),
    ),
    model=OrderLineOut,
)
# `o` an orders row; its lines are read from order_lines.
ORDER_EVENT: Payload[Order] = Payload(
    (
        column("id"),
        column("source"),
        column("external_id"),
        column("customer_id"),
        timestamp("ordered_at"),
        column("status"),
        column("currency"),
        money("total_amount", places=MONEY_PLACES),
        money("refunded_amount", places=MONEY_PLACES),
        column("channel"),
        column("store"),
        given(
            "lines",
            sql=lambda o: (
                f"""(SELECT coalesce(jsonb_agg({LINE_EVENT.sql("l")} ORDER BY l.line_no), '[]'::jsonb)
              FROM order_lines l WHERE l.workspace_id = {o}.workspace_id AND l.order_id = {o}.id)"""
            ),
        ),
        column("fulfilment_status"),
        column("tracking_reference"),
        timestamp("fulfilment_updated_at"),
        timestamp("created_at"),
        timestamp("updated_at"),
        column("version"),
    ),
    model=data_model("order.created"),
)
ORDER_CHANGED_EVENT = ORDER_EVENT.extended(given("changed_fields"), model=data_model("order.updated"))


def event_data(order: Order, lines: list[OrderLine], *, changed_fields: list[str] | None = None) -> dict[str, Any]:
    """`order.created`, or with the fields that changed `order.updated`."""
    line_data = [LINE_EVENT.data(PricedLine(line, order.currency)) for line in lines]
    if changed_fields is None:
        return ORDER_EVENT.data(order, lines=line_data)
    return ORDER_CHANGED_EVENT.data(order, lines=line_data, changed_fields=changed_fields)


def _line_loc(index: int) -> list[str | int]:
    return ["body", "lines", index, "unit_price"]


def _quantity(value: Decimal) -> str:
    # A count, not money: as many decimals as it has.
    return format(value.normalize(), "f")


def _line_key(line: OrderLine) -> tuple[Any, ...]:
    return (line.sku, line.product_name, line.category, line.quantity, line.unit_price)


async def _replace_lines(session: AsyncSession, ctx: Caller, order: Order, data: OrderIn) -> list[OrderLine]:
    await session.execute(
        delete(OrderLine).where(OrderLine.workspace_id == ctx.workspace_id, OrderLine.order_id == order.id)
    )
    lines = [
        OrderLine(
            workspace_id=ctx.workspace_id,
            id=new_id(),
            order_id=order.id,
            line_no=i,
            sku=item.sku,
            product_name=item.product_name,
            category=item.category,
            quantity=item.quantity,
            unit_price=item.unit_price,
        )
        for i, item in enumerate(data.lines, start=1)
    ]
    session.add_all(lines)
    await session.flush()
    return lines


async def _check(session: AsyncSession, ctx: Caller, data: OrderIn) -> None:
    """The rules a schema cannot see: currency, its decimals, totals, and the customer."""
    workspace_currency = await session.scalar(select(Workspace.currency).where(Workspace.id == ctx.workspace_id))
    assert workspace_currency is not None
    check_amounts(data, workspace_currency)
    await require_visible(session, ctx, data.customer_id)


def check_amounts(data: OrderIn, workspace_currency: str) -> None:
    """Currency, its decimals, the lines adding up to the total, and refunds fitting the status."""
    if data.currency not in _CURRENCIES:
        raise ValidationFailed(f"Unknown currency {data.currency}.", loc=["body", "currency"])
    if data.currency != workspace_currency:
        raise ValidationFailed(
            f"This workspace records orders in {workspace_currency}.", loc=["body", "currency"], error_type="currency"
        )
    places = get_currency_precision(data.currency)
    amounts: list[tuple[list[str | int], Decimal]] = [
        (["body", "total_amount"], data.total_amount),
        (["body", "refunded_amount"], data.refunded_amount),
        *((_line_loc(i), line.unit_price) for i, line in enumerate(data.lines)),
    ]
    for loc, amount in amounts:
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            raise ValidationFailed(f"{data.currency} amounts have at most {places} decimals.", loc=loc)
    lines_total = sum((line.quantity * line.unit_price for line in data.lines), Decimal(0))
    if lines_total.quantize(Decimal(1).scaleb(-places)) != data.total_amount:
        raise ValidationFailed(
            f"The lines add up to {lines_total}, not {data.total_amount}.", loc=["body", "total_amount"]
        )
    if data.refunded_amount > data.total_amount:
        raise ValidationFailed("refunded_amount exceeds total_amount.", loc=["body", "refunded_amount"])
    expected = {
        "paid": data.refunded_amount == 0,
        "refunded": data.refunded_amount == data.total_amount,
        "partially_refunded": 0 < data.refunded_amount < data.total_amount,
        "cancelled": True,
    }
    if not expected[data.status]:
        raise ValidationFailed(f"refunded_amount does not fit status {data.status}.", loc=["body", "status"])


async def upsert_many(session: AsyncSession, ctx: Caller, items: list[dict[str, object]]) -> dict[str, Any]:
    """Up to 100 orders, each in its own savepoint: a result per item, 201 (new), 200 (updated) or the
    item's problem."""

    async def write(data: OrderIn) -> Done:
        order, _, created = await upsert(session, ctx, data)
        return Done(201 if created else 200, order.id, order.version)

    return await apply_each(session, items, lambda _, raw: OrderIn.model_validate(raw), write)
