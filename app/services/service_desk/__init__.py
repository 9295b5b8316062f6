"""Tickets, SLAs, satisfaction surveys and the service reports."""
