"""PostgreSQL adapters of the domain's Store port (asyncpg)."""
