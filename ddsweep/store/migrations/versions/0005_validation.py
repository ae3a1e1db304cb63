"""A validation split: `val_loss` and `val_error` at every evaluation.

- `metrics` gains val_loss and val_error: loss and error on the samples a dataset with
  `val: N` holds out of its training pool (clean labels). Null for runs without a split,
  and for every row written before.
The views are left as they are (they average the test and train metrics).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("val_loss", "val_error")


def upgrade() -> None:
    for c in COLUMNS:
        op.execute(f"ALTER TABLE metrics ADD COLUMN {c} DOUBLE")


def downgrade() -> None:
    for c in reversed(COLUMNS):
        op.execute(f"ALTER TABLE metrics DROP COLUMN {c}")
