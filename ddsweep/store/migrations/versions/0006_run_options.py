"""How each job was trained: `jobs.run_options`.

A JSON object written when a job finishes (by the `ddsweep work` that finished it):
the ddsweep version, device, torch threads, pack size option and the GPU speed
settings (compile, cuda_graphs, dense_members, pack_memory_gb), so a figure can say
how its runs were trained. NULL for jobs finished before this revision.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN run_options VARCHAR")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN run_options")
