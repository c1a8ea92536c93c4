"""Caches in front of PostgreSQL for the hot lookups: L1 in-process, L2 Redis (DESIGN.md §4)."""
