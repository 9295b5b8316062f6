"""Mechanisms every layer shares: settings, database, ids, clock, errors, the caller, pagination."""
