"""Secrets shared by every process of a deployment, kept in PostgreSQL (server_secrets)."""

from __future__ import annotations

import secrets

import asyncpg

from modelreg.store.errors import translated

SECRET_BYTES = 32

_CREATE = """
INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING
"""
_READ = "SELECT value FROM server_secrets WHERE name = $1"


async def shared_secret(pool: asyncpg.Pool, *, name: str) -> bytes:
    """The secret called `name`, made (random, 32 bytes) by whichever process asks first;
    processes that race all read the one that was stored."""
    async with translated():
        await pool.execute(_CREATE, name, secrets.token_bytes(SECRET_BYTES))
        value: bytes = await pool.fetchval(_READ, name)
    return value
