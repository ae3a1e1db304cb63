"""`metrics` without its primary key, its rows ordered by (job_id, epoch).

The ART index behind PRIMARY KEY (job_id, epoch) had become the cost of ingest: at
2-8M rows a 500K-row INSERT OR IGNORE took about twice as long as the same insert
with its duplicate check as an anti-join on (job_id, epoch) into an unkeyed table.
The writer now checks for duplicates itself (store.jobs.insert_metrics, under the
single-writer lock: a (job_id, epoch) already stored is skipped, as OR IGNORE did).
The table is rebuilt with the same columns and types (job_id and epoch stay NOT
NULL), rows sorted by (job_id, epoch) so that a job filter skips row groups by
their min/max. The views that read `metrics` are dropped first and recreated as
0001 (final_metrics) and 0007 (curves, emc_grid, interpolation_thresholds) left
them, their SQL frozen here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# every metrics column at 0007, in its order (0001, then 0004, 0005, 0007 appended)
COLUMNS = (
    ("job_id", "VARCHAR NOT NULL"), ("epoch", "INTEGER NOT NULL"), ("step", "BIGINT"),
    ("train_loss", "DOUBLE"), ("train_error", "DOUBLE"), ("train_error_clean", "DOUBLE"), ("noisy_fit", "DOUBLE"),
    ("test_loss", "DOUBLE"), ("test_error", "DOUBLE"), ("lr", "DOUBLE"), ("seconds", "DOUBLE"),
    ("grad_norm", "DOUBLE"), ("dist_from_init", "DOUBLE"), ("weight_norm", "DOUBLE"), ("noise_scale", "DOUBLE"),
    ("flooded_loss", "DOUBLE"), ("ascent_fraction", "DOUBLE"), ("clip_rate", "DOUBLE"),
    ("val_loss", "DOUBLE"), ("val_error", "DOUBLE"),
    ("train_soft_error", "DOUBLE"), ("test_soft_error", "DOUBLE"),
)
CELL = ("sweep, dataset, model, depth, width, n_train, label_noise, optimizer, lr, momentum, weight_decay, "
        "batch_size, loss, schedule, warmup, grad_clip, grad_penalty, flood, world, augment")
EXTRA_METRICS = ("grad_norm", "dist_from_init", "weight_norm", "noise_scale", "flooded_loss", "ascent_fraction",
                 "clip_rate", "train_soft_error", "test_soft_error")


def _views() -> None:
    """The views of 0001 (final_metrics) and 0007 (the others), verbatim."""
    op.execute("""
        CREATE VIEW final_metrics AS
        SELECT j.sweep, j.width, j.n_train, j.label_noise, j.seed, j.epochs, j.lr, j.batch_size,
               j.optimizer, j.status, m.*
        FROM jobs j
        JOIN metrics m ON m.job_id = j.job_id
        WHERE m.epoch = (SELECT max(epoch) FROM metrics m2 WHERE m2.job_id = j.job_id)""")
    means = "".join(f",\n               avg(m.{c}) AS {c}" for c in EXTRA_METRICS)
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
               max(m.test_error)                               AS test_error_max{means}
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


def _drop_views() -> None:
    for view in ("interpolation_thresholds", "emc_grid", "curves", "final_metrics"):
        op.execute(f"DROP VIEW {view}")


def _rebuild(key: str) -> None:
    """metrics again, with `key` (a constraint clause, or nothing) after its columns, rows sorted."""
    columns = ",\n            ".join(f"{name} {kind}" for name, kind in COLUMNS)
    names = ", ".join(name for name, _ in COLUMNS)
    _drop_views()
    op.execute(f"CREATE TABLE metrics_rebuilt (\n            {columns}{key}\n        )")
    op.execute(f"INSERT INTO metrics_rebuilt ({names}) SELECT {names} FROM metrics ORDER BY job_id, epoch")
    op.execute("DROP TABLE metrics")
    op.execute("ALTER TABLE metrics_rebuilt RENAME TO metrics")
    _views()


def upgrade() -> None:
    _rebuild("")


def downgrade() -> None:
    _rebuild(",\n            PRIMARY KEY (job_id, epoch)")
