"""The outbox, the event catalogue, the audit trail and webhook delivery."""
