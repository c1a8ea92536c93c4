"""Adapters for webhook delivery: the HTTP sender that signs and POSTs (domain/delivery.py
holds the rules and the loop)."""
