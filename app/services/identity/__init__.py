"""Workspaces, users, API keys and tokens."""
