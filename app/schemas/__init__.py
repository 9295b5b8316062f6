"""Pydantic models that make up the OpenAPI contract: inputs forbid extra fields."""
