"""Segments and lifecycle stages."""
