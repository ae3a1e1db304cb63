"""Knobs of the neighbouring phenomena: their metrics, their job axes, views that tell them apart.

- `metrics` gains nullable columns, filled where they apply (see the README's table):
  grad_norm (full-batch gradient norm at the evaluated point), dist_from_init
  (||theta - theta_0||), weight_norm (||theta||), noise_scale (SGD's lr (N/B - 1) /
  (1 - momentum)), flooded_loss and ascent_fraction (epochs with a flood level),
  clip_rate (epochs with gradient clipping).
- `jobs` gains the knobs that are grid axes as columns, at their defaults for every
  job planned before: schedule, warmup, grad_clip, grad_penalty, flood, world.
- `curves`, `emc_grid` and `interpolation_thresholds` are rebuilt so that those axes
  split cells (runs that differ only in, say, flood are no longer averaged as seeds),
  and `curves` also averages the new metrics.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

METRICS = ("grad_norm", "dist_from_init", "weight_norm", "noise_scale", "flooded_loss", "ascent_fraction",
           "clip_rate")
JOB_KNOBS = (("schedule", "VARCHAR", "'constant'"), ("warmup", "INTEGER", "0"), ("grad_clip", "DOUBLE", "0"),
             ("grad_penalty", "DOUBLE", "0"), ("flood", "DOUBLE", "0"), ("world", "VARCHAR", "'real'"))

OLD_CELL = ("sweep, dataset, model, depth, width, n_train, label_noise, optimizer, lr, momentum, weight_decay, "
            "batch_size, loss")
NEW_CELL = OLD_CELL + ", " + ", ".join(name for name, _, _ in JOB_KNOBS)


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
    for c in METRICS:
        op.execute(f"ALTER TABLE metrics ADD COLUMN {c} DOUBLE")
    for name, kind, default in JOB_KNOBS:
        op.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind} DEFAULT {default}")
    _drop_views()
    _views(NEW_CELL, METRICS)


def downgrade() -> None:
    _drop_views()
    for name, _, _ in reversed(JOB_KNOBS):
        op.execute(f"ALTER TABLE jobs DROP COLUMN {name}")
    for c in reversed(METRICS):
        op.execute(f"ALTER TABLE metrics DROP COLUMN {c}")
    _views(OLD_CELL, ())
