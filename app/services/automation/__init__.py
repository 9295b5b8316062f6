"""Automation rules: triggers (events, schedules, dates) and the actions they run for each customer."""
