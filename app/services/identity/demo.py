"""Demo customers for a first look at the API: varied names, cities, tags and channels."""

import random

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import system_caller
from app.core.errors import DomainError
from app.schemas.customer import Address, CustomerCreate
from app.services.customers import customers
from app.services.identity import workspaces

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
]
CITIES = [
    ("广东省", "深圳市"),
    ("广东省", "广州市"),
    ("上海市", "上海市"),
    ("北京市", "北京市"),
    ("浙江省", "杭州市"),
]
SOURCES = ["website", "trade_show", "referral", "wechat", "partner"]
TAGS = ["vip", "wholesale", "retail", "new", "corporate"]


async def seed_customers(session: AsyncSession, workspace_slug: str, count: int) -> int:
    workspace = await workspaces.find_by_slug(session, workspace_slug)
    assert workspace is not None, "the workspace exists"
    ctx = system_caller(workspace.id)
    rng = random.Random(7)
    added = 0
    for _ in range(count):
        province, city = rng.choice(CITIES)
        phone = f"+86139{rng.randrange(10**8):08d}"
        data = CustomerCreate(
            name=rng.choice(SURNAMES) + rng.choice(GIVEN),
            phones=[phone],
            address=Address(country="CN", province=province, city=city),
            source=rng.choice(SOURCES),
            tags=rng.sample(TAGS, k=rng.randint(0, 2)),
        )
        try:
            async with session.begin_nested():
                await customers.create(session, ctx, data)
                await session.flush()
        except DomainError:
            continue  # a random phone collided with an earlier one
        added += 1
    return added
