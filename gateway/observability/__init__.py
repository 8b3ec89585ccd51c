"""Seeing what the gateway does (DESIGN.md 2.12, 2.13): health probes, Prometheus metrics summed
across workers, and the usage dashboard drawn from the audit's rollups."""
