"""Outreach: channels (email, SMS, WeCom, signed HTTP), message templates, messages and the rules a send obeys."""
