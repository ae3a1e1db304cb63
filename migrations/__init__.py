"""Alembic migrations of the results database; shipped inside the package as ddsweep.migrations."""
