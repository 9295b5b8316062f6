"""Guanxi: an async JSON API for customer relationship management."""
