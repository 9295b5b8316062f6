"""Demo data for a first look at the API: customers with Chinese and Latin names, their orders and
contacts, and a few tickets, all written through the same services as the API, so every example in
the README returns something."""

import random
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.access import Caller, system_caller
from app.core.errors import DomainError
from app.schemas.customer import Address, CustomerCreate
from app.schemas.interaction import Channel, InteractionIn
from app.schemas.order import OrderIn, OrderLineIn
from app.schemas.ticket import TicketIn, TicketPriority, TicketType
from app.services.customers import customers
from app.services.engagement import interactions
from app.services.identity import workspaces
from app.services.service_desk import tickets
from app.services.value import orders

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英"]
LATIN_GIVEN = ["Anna", "David", "Maria", "James", "Sophie", "Lucas", "Emma", "Daniel", "Olivia", "Ethan"]
LATIN_FAMILY = ["Müller", "Smith", "García", "Rossi", "Dubois", "Silva", "Johnson", "Novak", "Kowalski", "Brown"]
CITIES = [
    ("CN", "广东省", "深圳市"),
    ("CN", "广东省", "广州市"),
    ("CN", "上海市", "上海市"),
    ("CN", "北京市", "北京市"),
    ("CN", "浙江省", "杭州市"),
    ("CN", "四川省", "成都市"),
]
LATIN_CITIES = [("DE", "Berlin", "Berlin"), ("FR", "Île-de-France", "Paris"), ("US", "California", "San Francisco")]
SOURCES = ["website", "trade_show", "referral", "wechat", "partner"]
TAGS = ["vip", "wholesale", "retail", "new", "corporate", "华南", "重点"]
COMPANIES = ["深圳市华茂贸易有限公司", "杭州清风茶业", "上海启明科技", None, None, None]
PRODUCTS = [
    ("TEA-LJ-250", "龙井茶 250g", "tea", "168.00"),
    ("TEA-PE-357", "普洱茶饼 357g", "tea", "298.00"),
    ("TEA-TG-125", "铁观音 125g", "tea", "88.00"),
    ("SET-GIFT-01", "礼盒套装", "gift", "588.00"),
    ("CUP-CER-01", "青瓷茶杯", "teaware", "45.00"),
]
CONTACT_CHANNELS: list[Channel] = ["phone", "wechat", "email", "visit"]
SUBJECTS = ["新品试用回访", "节日问候", "订单发货确认", "Follow-up on the sample order", "报价跟进"]
TICKETS: list[tuple[TicketType, str, TicketPriority]] = [
    ("complaint", "收到的茶叶包装破损", "high"),
    ("inquiry", "礼盒套装可以开发票吗?", "normal"),
    ("fault_report", "Tracking number does not work", "normal"),
]


async def seed(session: AsyncSession, workspace_slug: str, count: int) -> int:
    """`count` customers, about two in three with one to four paid orders and a contact or two, and a
    ticket on a few of them; each customer in a savepoint, so a random phone that collides skips
    only that customer. Returns the customers added."""
    workspace = await workspaces.find_by_slug(session, workspace_slug)
    assert workspace is not None, "the workspace exists"
    ctx = system_caller(workspace.id)
    rng = random.Random(7)
    now = clock.now()
    added = 0
    for number in range(count):
        try:
            async with session.begin_nested():
                await _customer_with_history(session, ctx, rng, now, with_ticket=number % 40 == 0)
        except DomainError:
            continue
        added += 1
    return added


async def _customer_with_history(
    session: AsyncSession, ctx: Caller, rng: random.Random, now: datetime, *, with_ticket: bool
) -> None:
    latin = rng.random() < 0.2
    if latin:
        given, family = rng.choice(LATIN_GIVEN), rng.choice(LATIN_FAMILY)
        name = f"{given} {family}"
        country, province, city = rng.choice(LATIN_CITIES)
        phone = f"+49151{rng.randrange(10**8):08d}"
        email = f"{given.lower()}.{rng.randrange(10**5)}@example.com"
    else:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN)
        country, province, city = rng.choice(CITIES)
        phone = f"+86139{rng.randrange(10**8):08d}"
        email = f"user{rng.randrange(10**7)}@example.cn"
    customer = await customers.create(
        session,
        ctx,
        CustomerCreate(
            name=name,
            phones=[phone],
            emails=[email] if rng.random() < 0.7 else [],
            company=rng.choice(COMPANIES),
            address=Address(country=country, province=province, city=city),
            source=rng.choice(SOURCES),
            tags=rng.sample(TAGS, k=rng.randint(0, 2)),
        ),
    )
    await session.flush()
    if rng.random() < 0.66:
        for order_number in range(rng.randint(1, 4)):
            # Amounts go in as the API takes them, decimal strings.
            picked = [(product, rng.randint(1, 3)) for product in rng.sample(PRODUCTS, k=rng.randint(1, 3))]
            lines = [
                OrderLineIn.model_validate(
                    {"sku": sku, "product_name": title, "category": category, "quantity": str(n), "unit_price": price}
                )
                for (sku, title, category, price), n in picked
            ]
            total = sum((Decimal(price) * n for (_, _, _, price), n in picked), Decimal(0))
            await orders.upsert(
                session,
                ctx,
                OrderIn.model_validate(
                    {
                        "source": "demo",
                        "external_id": f"DEMO-{customer.code}-{order_number + 1}",
                        "customer_id": customer.id,
                        "ordered_at": now - timedelta(days=rng.randint(1, 540)),
                        "currency": "CNY",
                        "total_amount": f"{total:.2f}",
                        "channel": rng.choice(["online", "store"]),
                        "lines": lines,
                    }
                ),
            )
    for _ in range(rng.randint(0, 2)):
        await interactions.log(
            session,
            ctx,
            InteractionIn(
                customer_id=customer.id,
                channel=rng.choice(CONTACT_CHANNELS),
                direction="outbound",
                occurred_at=now - timedelta(days=rng.randint(0, 90), minutes=rng.randint(0, 600)),
                subject=rng.choice(SUBJECTS),
            ),
        )
    if with_ticket:
        kind, subject, priority = rng.choice(TICKETS)
        await tickets.open_ticket(
            session,
            ctx,
            TicketIn(customer_id=customer.id, type=kind, channel="phone", subject=subject, priority=priority),
        )
