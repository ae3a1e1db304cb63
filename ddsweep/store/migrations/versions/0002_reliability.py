"""Reliability: failed attempts and lease expiry per job.

`failures` counts the job's failed attempts (an exception, or its worker process
died); `--retries N` requeues a job while failures <= N. `lease_until` is when the
running job's lease runs out unless its coordinator heartbeats again; after that
any `ddsweep work` may reclaim it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN failures INTEGER DEFAULT 0")
    op.execute("ALTER TABLE jobs ADD COLUMN lease_until TIMESTAMP")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN lease_until")
    op.execute("ALTER TABLE jobs DROP COLUMN failures")
