"""Alembic migrations of the results database; part of the package as ddsweep.store.migrations."""
