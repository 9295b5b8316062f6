"""SQLAlchemy tables; importing this package registers every table on `Base.metadata`."""

from app.models.api_key import ApiKey
from app.models.audit import AuditEntry
from app.models.automation import AutomationEventCursor, AutomationRule, AutomationRun
from app.models.base import Base
from app.models.custom_field import CustomFieldDefinition
from app.models.customer import Customer, CustomerCodeCounter, CustomerIdentity, CustomerMerge
from app.models.customer_value import CustomerValue, TierChange, ValueModel, ValueTier
from app.models.idempotency import IdempotencyRecord
from app.models.import_job import ExportJob, ImportJob, ImportRowError
from app.models.interaction import FollowUpPlan, Interaction, Task
from app.models.lead_scoring import CustomerLeadScore, LeadScoringRules
from app.models.lifecycle import CustomerStage, LifecycleRules, LifecycleStage, StageHistory
from app.models.loyalty import (
    LoyaltyAccount,
    LoyaltyDocument,
    LoyaltyEntry,
    LoyaltyLot,
    LoyaltyRedemption,
    LoyaltyRedemptionLot,
)
from app.models.loyalty_members import LoyaltyActionAward, LoyaltyDeparture
from app.models.loyalty_rewards import LoyaltyReward, LoyaltyVoucher
from app.models.message_template import MessageTemplate, MessageTemplateRevision
from app.models.order import Order, OrderFulfilmentChange, OrderLine
from app.models.outbox import OutboxEvent
from app.models.outreach import Channel, Message, Suppression
from app.models.referral import Referral
from app.models.relation import CustomerRelation
from app.models.sales import Opportunity, OpportunityStageChange, Pipeline, PipelineStage
from app.models.segment import Segment, SegmentMember, SegmentSize
from app.models.stored_file import StoredFile, StoredFileChunk
from app.models.ticket import (
    BusinessHours,
    CsatRequest,
    IntakeForm,
    SlaPolicy,
    Survey,
    SurveyResponse,
    Ticket,
    TicketCategory,
    TicketComment,
    TicketEvent,
)
from app.models.user import Team, User
from app.models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.models.workspace import Workspace

__all__ = [
    "ApiKey",
    "AuditEntry",
    "AutomationEventCursor",
    "AutomationRule",
    "AutomationRun",
    "Base",
    "BusinessHours",
    "Channel",
    "CsatRequest",
    "CustomFieldDefinition",
    "Customer",
    "CustomerCodeCounter",
    "CustomerIdentity",
    "CustomerLeadScore",
    "CustomerMerge",
    "CustomerRelation",
    "CustomerStage",
    "CustomerValue",
    "ExportJob",
    "FollowUpPlan",
    "IdempotencyRecord",
    "ImportJob",
    "ImportRowError",
    "IntakeForm",
    "Interaction",
    "LeadScoringRules",
    "LifecycleRules",
    "LifecycleStage",
    "LoyaltyAccount",
    "LoyaltyActionAward",
    "LoyaltyDeparture",
    "LoyaltyDocument",
    "LoyaltyEntry",
    "LoyaltyLot",
    "LoyaltyRedemption",
    "LoyaltyRedemptionLot",
    "LoyaltyReward",
    "LoyaltyVoucher",
    "Message",
    "MessageTemplate",
    "MessageTemplateRevision",
    "Opportunity",
    "OpportunityStageChange",
    "Order",
    "OrderFulfilmentChange",
    "OrderLine",
    "OutboxEvent",
    "Pipeline",
    "PipelineStage",
    "Referral",
    "Segment",
    "SegmentMember",
    "SegmentSize",
    "SlaPolicy",
    "StageHistory",
    "StoredFile",
    "StoredFileChunk",
    "Suppression",
    "Survey",
    "SurveyResponse",
    "Task",
    "Team",
    "Ticket",
    "TicketCategory",
    "TicketComment",
    "TicketEvent",
    "TierChange",
    "User",
    "ValueModel",
    "ValueTier",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "Workspace",
]
