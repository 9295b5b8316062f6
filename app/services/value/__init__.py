"""Orders and what they make of a customer: RFM, tiers, lifetime value."""
