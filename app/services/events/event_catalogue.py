"""Every domain event type the service emits, with the schema of its `data`.

The catalogue is published in the OpenAPI document (its `webhooks` section) and served at
`GET /api/v1/events/types`; a resource that adds events adds them here."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas.auth import TeamOut, UserOut
from app.schemas.common import Actor
from app.schemas.customer import CustomerOut
from app.schemas.interaction import InteractionOut, TaskOut
from app.schemas.order import FulfilmentStatus, OrderOut
from app.schemas.outreach import ConsentChanged, MessageEvent, MessageReplied
from app.schemas.relation import RelationKind
from app.schemas.sales import OpportunityChanged, OpportunityMoved, OpportunityOut, OpportunityRef
from app.schemas.ticket import TicketOut


class CustomerChanged(CustomerOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["name", "tags"]])


class InteractionChanged(InteractionOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["checked_out_at", "outcome"]])


class InteractionRemoved(BaseModel):
    """A soft-deleted contact: the tombstone a syncing app removes its copy by."""

    id: str
    customer_id: str
    version: int = Field(description="The contact's version at its deletion.")


class TaskChanged(TaskOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["due_at", "assignee_id"]])


class OrderChanged(OrderOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["status", "lines"]])


class FulfilmentChanged(BaseModel):
    order_id: str
    customer_id: str
    source: str = Field(examples=["shopify"])
    external_id: str = Field(examples=["SO-2026-0042"])
    from_status: FulfilmentStatus
    to_status: FulfilmentStatus = Field(description="Equal to `from_status` when only the tracking reference changed.")
    tracking_reference: str | None = Field(examples=["SF1234567890"])
    note: str | None
    at: datetime


class LoyaltyPointsMoved(BaseModel):
    customer_id: str
    kind: str = Field(
        description="The ledger entry: earn, reverse, redeem, redeem_cancel, adjust, expire, referral, action or "
        "merge; forfeit when a member leaves (the ledger goes with the account).",
        examples=["earn"],
    )
    points: int = Field(description="Signed: what the member's balance moved by.", examples=[120])
    order_id: str | None = Field(description="earn and reverse: the order.")
    redemption_id: str | None = Field(description="redeem and redeem_cancel: the redemption.")
    reason: str | None = Field(
        description="adjust: the reason given; action: the action and reference; merge: the other customer."
    )
    balance: int = Field(description="The member's balance after the move.", examples=[1320])
    at: datetime


class ReferralChanged(BaseModel):
    id: str
    referrer_id: str | None = Field(description="Null only for a refused referral whose code matched no customer.")
    referee_id: str
    code: str = Field(examples=["9F3A61C2D4E5B708"], description="The referral code the referee came with.")
    status: str = Field(description="created, qualified, rewarded or refused.", examples=["created"])
    reason: str | None = Field(
        description="refused: self_referral, already_buying, unknown_code or window_passed.", examples=[None]
    )
    order_id: str | None = Field(description="The referee's order that qualified the referral.")
    referrer_points: int = Field(description="Points credited to the referrer.", examples=[500])
    referee_points: int = Field(description="Points credited to the referee.", examples=[200])
    created_at: datetime
    qualified_at: datetime | None
    rewarded_at: datetime | None


class LoyaltyLevelChanged(BaseModel):
    customer_id: str
    from_level: str | None = Field(examples=["silver"])
    to_level: str | None = Field(examples=["gold"])
    at: datetime


class VoucherChanged(BaseModel):
    """A voucher as it stands after the change; never its code."""

    id: str
    customer_id: str
    reward_id: str | None
    redemption_id: str | None = Field(description="The points redemption that paid for it.")
    code_prefix: str = Field(examples=["7KQ2"])
    name: str = Field(examples=["10 元代金券"])
    kind: str = Field(description="gift, discount_amount or discount_percent.", examples=["discount_amount"])
    value: str | None = Field(description="An amount in the currency's decimals, or a percentage.", examples=["10.00"])
    currency: str = Field(examples=["CNY"])
    points: int = Field(description="Points paid for it.", examples=[500])
    source: str = Field(description="reward (bought with points) or admin (issued by hand).", examples=["reward"])
    status: str = Field(description="issued, redeemed or voided.", examples=["issued"])
    order_id: str | None = Field(description="redeemed: the order it was spent on.")
    expires_at: datetime | None
    at: datetime


class TicketMoved(TicketOut):
    from_status: str = Field(description="The status the ticket left.", examples=["in_progress"])


class CustomerRef(BaseModel):
    id: str
    code: str


class CustomerMerged(BaseModel):
    survivor_id: str
    absorbed_ids: list[str]
    merge_id: str


class MergeUndone(BaseModel):
    merge_id: str


class CustomerRelation(BaseModel):
    id: uuid.UUID
    kind: RelationKind
    from_customer_id: uuid.UUID = Field(description="The customer that is `kind` of the other.")
    to_customer_id: uuid.UUID
    note: str | None
    created_at: datetime
    created_by: Actor
    removed_at: datetime | None = Field(description="Set on `customer.relation_removed`.")


class EndpointDisabled(BaseModel):
    endpoint_id: str
    url: str
    reason: str = Field(examples=["every attempt failed for 48 hours"])
    failing_since: datetime | None = Field(
        description="The first of the failed attempts in a row that led to the disabling."
    )


class TierChanged(BaseModel):
    customer_id: str
    from_tier: str | None = Field(examples=["B"])
    to_tier: str | None = Field(examples=["A"])
    reason: str = Field(examples=["order"], description="`order` (an order changed) or `recompute`")


class StageChanged(BaseModel):
    customer_id: str
    from_stage: str | None = Field(examples=["new_customer"])
    to_stage: str = Field(examples=["loyal"])
    by: str = Field(examples=["rules"], description="`rules` or `hand`")
    reason: str | None = Field(examples=["回访确认续约"], description="Given with a move by hand; null for rules.")


class SegmentMembership(BaseModel):
    segment_id: str
    customer_id: str


class TicketRef(BaseModel):
    ticket_id: str
    assignee_id: str | None = None
    team_id: str | None = None


class SlaBreach(BaseModel):
    ticket_id: str
    number: int
    deadline: str = Field(examples=["first_response"], description="`first_response` or `resolution`")


class CsatReceived(BaseModel):
    ticket_id: str
    score: int = Field(ge=1, le=5)


class UserChanged(UserOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["is_active"]])


class PasswordChanged(BaseModel):
    user_id: str
    by: str = Field(examples=["admin"], description="`self` (the user, with the old password) or `admin` (a reset)")


class TeamChanged(TeamOut):
    changed_fields: list[str] = Field(description="The fields that changed.", examples=[["name"]])


class TeamRef(BaseModel):
    id: str


class AutomationRunFailed(BaseModel):
    rule_id: str
    run_id: str
    customer_id: str
    trigger_key: str = Field(examples=["2027"], description="The occasion's year, the firing time or the event id.")
    outcome: str = Field(examples=["failed"], description="`failed` (an action failed) or `skipped`")
    reason: str | None = Field(examples=["chain_depth_exceeded"])
    depth: int = Field(description="The run's place in a chain of automation runs.")


class AutomationWebhookRequested(BaseModel):
    rule_id: str
    run_id: str
    action_index: int
    customer_id: str
    trigger_key: str
    endpoint_id: str = Field(description="The endpoint the rule's `call_webhook` action names.")


class Ping(BaseModel):
    message: str = Field(examples=["ping"])


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    data: type[BaseModel]


CATALOGUE: tuple[EventType, ...] = (
    EventType("customer.created", "A customer was created.", CustomerOut),
    EventType("customer.updated", "Fields of a customer changed.", CustomerChanged),
    EventType("customer.deleted", "A customer was soft-deleted.", CustomerRef),
    EventType("customer.restored", "A soft-deleted customer was restored.", CustomerOut),
    EventType("customer.merged", "Customers were merged into one.", CustomerMerged),
    EventType("customer.merge_undone", "A merge was undone.", MergeUndone),
    EventType(
        "customer.relation_added",
        "Two customers were related (contact, subsidiary, referral, family).",
        CustomerRelation,
    ),
    EventType("customer.relation_removed", "A relation between two customers was removed.", CustomerRelation),
    EventType("interaction.created", "A contact with a customer was logged.", InteractionOut),
    EventType(
        "interaction.updated", "A logged contact changed (a visit checked out, an outcome set...).", InteractionChanged
    ),
    EventType("interaction.deleted", "A logged contact was deleted.", InteractionRemoved),
    EventType("task.created", "A task was added by hand.", TaskOut),
    EventType("task.completed", "A task was completed.", TaskOut),
    EventType("task.updated", "An open task changed (rescheduled, reassigned...).", TaskChanged),
    EventType("task.cancelled", "A task was cancelled.", TaskOut),
    EventType("ticket.created", "A ticket was opened.", TicketOut),
    EventType("ticket.status_changed", "A ticket moved in its workflow.", TicketMoved),
    EventType("ticket.resolved", "A ticket was resolved.", TicketMoved),
    EventType("ticket.closed", "A ticket was closed.", TicketMoved),
    EventType("ticket.reopened", "A resolved ticket was reopened.", TicketMoved),
    EventType("ticket.escalated", "A ticket was escalated.", TicketOut),
    EventType("ticket.assigned", "A ticket was assigned or reassigned.", TicketRef),
    EventType("ticket.sla_breached", "A ticket passed a first-response or resolution deadline.", SlaBreach),
    EventType("ticket.csat_received", "A customer rated a resolved ticket.", CsatReceived),
    EventType("order.created", "An order was recorded.", OrderOut),
    EventType("order.updated", "A recorded order changed (status, refund, lines...).", OrderChanged),
    EventType(
        "order.fulfilment_changed",
        "An order's fulfilment status or tracking reference changed.",
        FulfilmentChanged,
    ),
    EventType("opportunity.created", "An opportunity (a sales deal) was opened.", OpportunityOut),
    EventType(
        "opportunity.updated",
        "An opportunity's title, amount, close date, owner or source changed.",
        OpportunityChanged,
    ),
    EventType("opportunity.stage_changed", "An opportunity moved to another stage of its pipeline.", OpportunityMoved),
    EventType("opportunity.won", "An opportunity moved to a won stage.", OpportunityMoved),
    EventType("opportunity.lost", "An opportunity moved to a lost stage.", OpportunityMoved),
    EventType("opportunity.deleted", "An opportunity was soft-deleted.", OpportunityRef),
    EventType("tier.changed", "A customer moved to another value tier.", TierChanged),
    EventType("lifecycle.stage_changed", "A customer moved to another lifecycle stage.", StageChanged),
    EventType("segment.member_added", "A customer joined a dynamic segment at a refresh.", SegmentMembership),
    EventType("segment.member_removed", "A customer left a dynamic segment at a refresh.", SegmentMembership),
    EventType(
        "webhook_endpoint.disabled", "An endpoint was disabled after failures or a 410 answer.", EndpointDisabled
    ),
    EventType("user.created", "A user was added.", UserOut),
    EventType("user.updated", "A user's name, role, team or active state changed.", UserChanged),
    EventType("user.password_changed", "A user's password was changed or reset.", PasswordChanged),
    EventType("team.created", "A team was added.", TeamOut),
    EventType("team.updated", "A team was renamed.", TeamChanged),
    EventType("team.deleted", "An empty team was deleted.", TeamRef),
    EventType("webhook.ping", "A test delivery asked for by the endpoint's owner.", Ping),
    EventType("message.sent", "A message was accepted by its provider.", MessageEvent),
    EventType("message.delivered", "The provider reported a message delivered.", MessageEvent),
    EventType(
        "message.failed",
        "A message was refused for good, ran out of retries, bounced or was not delivered.",
        MessageEvent,
    ),
    EventType("message.replied", "A customer replied to a message (an SMS reply).", MessageReplied),
    EventType(
        "loyalty.points_earned",
        "A paid order's lines earned points (`earn`, one event per order), a referral's reward was credited "
        "(`referral`), or a named action was awarded (`action`).",
        LoyaltyPointsMoved,
    ),
    EventType(
        "loyalty.points_redeemed",
        "Points were redeemed (`redeem`), or a redemption was cancelled and gave them back (`redeem_cancel`).",
        LoyaltyPointsMoved,
    ),
    EventType(
        "loyalty.points_expired",
        "A member's unspent points of lots past their expiry were written off.",
        LoyaltyPointsMoved,
    ),
    EventType(
        "loyalty.points_adjusted",
        "Points were adjusted by hand (`adjust`), taken back for a refund or cancellation (`reverse`), moved "
        "by a customer merge (`merge`) or forfeited by leaving the program (`forfeit`).",
        LoyaltyPointsMoved,
    ),
    EventType("loyalty.level_changed", "A level review moved a member to another level.", LoyaltyLevelChanged),
    EventType("voucher.issued", "A voucher was issued: bought with points, or by hand.", VoucherChanged),
    EventType("voucher.redeemed", "A voucher was spent on an order.", VoucherChanged),
    EventType(
        "voucher.voided", "A voucher was voided; the points it cost, if any, went back to the member.", VoucherChanged
    ),
    EventType(
        "referral.created",
        "A customer was created (or imported) with a referral code: linked to its referrer, or refused (the reason).",
        ReferralChanged,
    ),
    EventType(
        "referral.qualified",
        "The referee's first paid order at or above the program's amount, within its window, qualified the referral.",
        ReferralChanged,
    ),
    EventType("referral.rewarded", "A qualified referral's points were credited.", ReferralChanged),
    EventType("consent.changed", "A customer's marketing consent changed (edit, merge, unsubscribe).", ConsentChanged),
    EventType(
        "automation.run_failed",
        "An automation rule's run for a customer failed (an action failed) or was skipped (a chain too deep).",
        AutomationRunFailed,
    ),
    EventType(
        "automation.webhook_requested",
        "An automation rule's `call_webhook` action: delivered to the endpoint it names (and to subscribers).",
        AutomationWebhookRequested,
    ),
)

TYPES = frozenset(event.name for event in CATALOGUE)
FAMILIES = frozenset(name.split(".")[0] for name in TYPES)


def data_model(name: str) -> type[BaseModel]:
    """The model of a type's `data`, which the type's serialiser (`payloads.Payload`) is checked against."""
    return next(event.data for event in CATALOGUE if event.name == name)


def is_valid_filter(pattern: str) -> bool:
    """`*`, an exact type, or `family.*` for a known family."""
    if pattern == "*" or pattern in TYPES:
        return True
    family, _, rest = pattern.partition(".")
    return rest == "*" and family in FAMILIES
