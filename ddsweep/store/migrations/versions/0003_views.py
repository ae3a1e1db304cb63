"""Views for SQL users: seed-aggregated curves, EMC and interpolation thresholds.

- `curves`: one row per sweep, axis cell (every job axis but the seed) and evaluated
  epoch: seeds, mean and standard error over seeds of test and train error, means of
  the other metrics. What the maps and curves are drawn from.
- `emc_grid`: from `curves`, per cell without n_train and epoch: the largest n whose
  seed-mean train error is <= 0.1 (the paper's epsilon) and the smallest n above it;
  EMC lies between (`ddsweep emc` interpolates in log n and takes any epsilon).
- `interpolation_thresholds`: from `curves`, per cell without width and epoch: the
  smallest width whose seed-mean train error is <= 0.1.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CELL = ("sweep, dataset, model, depth, width, n_train, label_noise, optimizer, lr, momentum, weight_decay, "
        "batch_size, loss")


def upgrade() -> None:
    op.execute(f"""
        CREATE VIEW curves AS
        SELECT {', '.join('j.' + c.strip() for c in CELL.split(','))}, m.epoch,
               count(*)                                        AS seeds,
               avg(m.test_error)                               AS test_error,
               stddev_samp(m.test_error) / sqrt(count(*))      AS test_error_sem,
               avg(m.train_error)                              AS train_error,
               stddev_samp(m.train_error) / sqrt(count(*))     AS train_error_sem,
               avg(m.train_error_clean)                        AS train_error_clean,
               avg(m.noisy_fit)                                AS noisy_fit,
               avg(m.test_loss)                                AS test_loss,
               avg(m.train_loss)                               AS train_loss,
               min(m.test_error)                               AS test_error_min,
               max(m.test_error)                               AS test_error_max
        FROM metrics m
        JOIN jobs j ON j.job_id = m.job_id
        GROUP BY ALL""")
    op.execute(f"""
        CREATE VIEW emc_grid AS
        SELECT {CELL.replace(' n_train,', '')}, epoch,
               count(*)                                                AS n_values,
               min(n_train)                                            AS n_min,
               max(n_train)                                            AS n_max,
               max(n_train) FILTER (WHERE train_error <= 0.1)          AS largest_fitted_n,
               min(n_train) FILTER (WHERE train_error > 0.1)           AS smallest_unfitted_n
        FROM curves
        GROUP BY ALL""")
    op.execute(f"""
        CREATE VIEW interpolation_thresholds AS
        SELECT {CELL.replace(' width,', '')}, epoch,
               count(*)                                                AS widths,
               min(width) FILTER (WHERE train_error <= 0.1)            AS threshold_width,
               max(width) FILTER (WHERE train_error > 0.1)             AS largest_unfitted_width
        FROM curves
        GROUP BY ALL""")


def downgrade() -> None:
    op.execute("DROP VIEW interpolation_thresholds")
    op.execute("DROP VIEW emc_grid")
    op.execute("DROP VIEW curves")
