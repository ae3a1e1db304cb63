"""The Deep Bootstrap: soft error at every evaluation, augmentation as a job axis.

- `metrics` gains train_soft_error and test_soft_error: 1 - the mean softmax probability
  of the true class (Nakkiran, Neyshabur, Sedghi 2021), on the noisy training labels for
  train, on the clean test labels for test. Rows written before stay null.
- `jobs` gains `augment` (random crop + flip on image datasets), false for every job
  planned before (no earlier job could vary it; those that had it on are set from
  their config).
- `curves` (and the views built on it) are rebuilt: augment splits cells, and the soft
  errors are averaged over seeds like the other metrics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SOFT = ("train_soft_error", "test_soft_error")
KNOB_METRICS = ("grad_norm", "dist_from_init", "weight_norm", "noise_scale", "flooded_loss", "ascent_fraction",
                "clip_rate")
OLD_CELL = ("sweep, dataset, model, depth, width, n_train, label_noise, optimizer, lr, momentum, weight_decay, "
            "batch_size, loss, schedule, warmup, grad_clip, grad_penalty, flood, world")
NEW_CELL = OLD_CELL + ", augment"


def _views(cell: str, extra_metrics: tuple[str, ...]) -> None:
    means = "".join(f",\n               avg(m.{c}) AS {c}" for c in extra_metrics)
    op.execute(f"""
        CREATE VIEW curves AS
        SELECT {', '.join('j.' + c.strip() for c in cell.split(','))}, m.epoch,
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
               max(m.test_error)                               AS test_error_max{means}
        FROM metrics m
        JOIN jobs j ON j.job_id = m.job_id
        GROUP BY ALL""")
    op.execute(f"""
        CREATE VIEW emc_grid AS
        SELECT {cell.replace(' n_train,', '')}, epoch,
               count(*)                                                AS n_values,
               min(n_train)                                            AS n_min,
               max(n_train)                                            AS n_max,
               max(n_train) FILTER (WHERE train_error <= 0.1)          AS largest_fitted_n,
               min(n_train) FILTER (WHERE train_error > 0.1)           AS smallest_unfitted_n
        FROM curves
        GROUP BY ALL""")
    op.execute(f"""
        CREATE VIEW interpolation_thresholds AS
        SELECT {cell.replace(' width,', '')}, epoch,
               count(*)                                                AS widths,
               min(width) FILTER (WHERE train_error <= 0.1)            AS threshold_width,
               max(width) FILTER (WHERE train_error > 0.1)             AS largest_unfitted_width
        FROM curves
        GROUP BY ALL""")


def _drop_views() -> None:
    op.execute("DROP VIEW interpolation_thresholds")
    op.execute("DROP VIEW emc_grid")
    op.execute("DROP VIEW curves")


def upgrade() -> None:
    for c in SOFT:
        op.execute(f"ALTER TABLE metrics ADD COLUMN {c} DOUBLE")
    op.execute("ALTER TABLE jobs ADD COLUMN augment BOOLEAN DEFAULT false")
    op.execute("UPDATE jobs SET augment = coalesce(json_extract(config, '$.dataset.augment')::BOOLEAN, false)")
    _drop_views()
    _views(NEW_CELL, KNOB_METRICS + SOFT)


def downgrade() -> None:
    _drop_views()
    op.execute("ALTER TABLE jobs DROP COLUMN augment")
    for c in reversed(SOFT):
        op.execute(f"ALTER TABLE metrics DROP COLUMN {c}")
    _views(OLD_CELL, KNOB_METRICS)
