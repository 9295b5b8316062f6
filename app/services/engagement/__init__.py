"""Interactions, tasks, follow-up plans and care rules."""
