"""Endpoint services: one module per endpoint, sharing routing (legs, retries, fallback, commit)."""
