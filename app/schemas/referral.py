"""Referrals and the loyalty report."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from app.schemas.common import OutputModel, Timestamp

ReferralStatus = Literal["created", "qualified", "rewarded", "refused"]
RefusalReason = Literal["self_referral", "already_buying", "unknown_code", "window_passed"]


class ReferralOut(OutputModel):
    id: uuid.UUID
    referrer_id: uuid.UUID | None = Field(description="Null only when refused for `unknown_code` (an import row).")
    referee_id: uuid.UUID
    code: str = Field(examples=["9F3A61C2D4E5B708"], description="The referral code the referee came with.")
    status: ReferralStatus
    reason: RefusalReason | None = Field(description="Why it was refused.")
    order_id: uuid.UUID | None = Field(description="The referee's order that qualified it.")
    referrer_points: int = Field(examples=[500], description="Points credited to the referrer by the reward.")
    referee_points: int = Field(examples=[200], description="Points credited to the referee by the reward.")
    created_at: Timestamp
    qualified_at: Timestamp | None
    rewarded_at: Timestamp | None
    refused_at: Timestamp | None
    version: int


class Liability(OutputModel):
    members: int
    balance: int = Field(description="Every member's balance: what the program owes.", examples=[1250000])
    available: int = Field(description="Points members can spend now.")
    pending: int = Field(description="Points still in their pending period (the returns window).")
    expired_unwritten: int = Field(description="Points past their expiry that the next expiry run writes off.")


class LoyaltyMonth(OutputModel):
    month: str = Field(examples=["2026-11"], description="A month of the workspace's time zone.")
    earned: int = Field(description="Points credited by orders and referral rewards.")
    reversed: int = Field(description="Points taken back for refunds and cancellations.")
    redeemed: int = Field(description="Points redeemed, net of cancelled redemptions.")
    expired: int
    adjusted: int = Field(description="Net points added (or taken, negative) by hand.")
    level_ups: int
    level_downs: int


class LevelCount(OutputModel):
    level: str | None = Field(examples=["gold"], description="Null: members without a level.")
    members: int


class ReferralFunnel(OutputModel):
    referred: int = Field(description="Referrals made in the period, refused ones included.")
    qualified: int = Field(description="Qualified (rewarded ones included).")
    rewarded: int
    refused: dict[RefusalReason, int]
    referrer_points: int
    referee_points: int


class LoyaltyReportOut(OutputModel):
    since: datetime
    until: datetime
    timezone: str = Field(examples=["Asia/Shanghai"])
    liability: Liability = Field(description="Now, whatever the period.")
    months: list[LoyaltyMonth] = Field(description="Each month of the period with a movement or a level move.")
    levels: list[LevelCount] = Field(description="Members per level now, in the levels' order (no level last).")
    referrals: ReferralFunnel = Field(description="Of the referrals made in the period.")
