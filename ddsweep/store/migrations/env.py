"""Alembic environment: ddsweep passes an open SQLAlchemy connection in config.attributes."""

from alembic import context
from alembic.ddl.impl import DefaultImpl


class DuckDBImpl(DefaultImpl):
    """Teach Alembic the duckdb dialect (duckdb-engine ships none)."""

    __dialect__ = "duckdb"


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ddsweep migrations run through ddsweep.store, which supplies the connection")
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
