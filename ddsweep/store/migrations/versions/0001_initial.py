"""Initial schema: sweeps, jobs, metrics and the final_metrics view.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE sweeps (
            name        VARCHAR PRIMARY KEY,
            grid_path   VARCHAR,
            grid_yaml   VARCHAR,       -- the grid file as last planned
            created_at  TIMESTAMP DEFAULT current_timestamp,
            updated_at  TIMESTAMP DEFAULT current_timestamp
        )""")
    op.execute("""
        CREATE TABLE jobs (
            job_id       VARCHAR PRIMARY KEY,   -- hash of the resolved config
            sweep        VARCHAR NOT NULL,
            status       VARCHAR NOT NULL DEFAULT 'pending', -- pending|running|done|failed|diverged
            dataset      VARCHAR,
            model        VARCHAR,
            depth        INTEGER,
            width        INTEGER,
            n_train      INTEGER,
            label_noise  DOUBLE,
            seed         INTEGER,
            epochs       INTEGER,               -- horizon trained to (longest planned)
            horizons     VARCHAR,               -- JSON list of every planned horizon
            optimizer    VARCHAR,
            lr           DOUBLE,
            momentum     DOUBLE,
            weight_decay DOUBLE,
            batch_size   INTEGER,
            loss         VARCHAR,
            pack_key     VARCHAR,               -- jobs with equal keys train together
            config       VARCHAR,               -- resolved config, JSON
            attempts     INTEGER DEFAULT 0,
            epochs_done  INTEGER DEFAULT 0,
            lease_owner  VARCHAR,               -- coordinator running it
            heartbeat_at TIMESTAMP,
            created_at   TIMESTAMP DEFAULT current_timestamp,
            started_at   TIMESTAMP,
            finished_at  TIMESTAMP,
            error        VARCHAR
        )""")
    op.execute("""
        CREATE TABLE metrics (
            job_id            VARCHAR NOT NULL,
            epoch             INTEGER NOT NULL,
            step              BIGINT,
            train_loss        DOUBLE,
            train_error       DOUBLE,   -- against the noisy labels trained on
            train_error_clean DOUBLE,   -- against the true labels
            noisy_fit         DOUBLE,   -- share of flipped samples predicted as their flipped label
            test_loss         DOUBLE,
            test_error        DOUBLE,   -- clean test set
            lr                DOUBLE,
            seconds           DOUBLE,   -- training wall time so far
            PRIMARY KEY (job_id, epoch)
        )""")
    op.execute("""
        CREATE VIEW final_metrics AS
        SELECT j.sweep, j.width, j.n_train, j.label_noise, j.seed, j.epochs, j.lr, j.batch_size,
               j.optimizer, j.status, m.*
        FROM jobs j
        JOIN metrics m ON m.job_id = j.job_id
        WHERE m.epoch = (SELECT max(epoch) FROM metrics m2 WHERE m2.job_id = j.job_id)""")


def downgrade() -> None:
    op.execute("DROP VIEW final_metrics")
    op.execute("DROP TABLE metrics")
    op.execute("DROP TABLE jobs")
    op.execute("DROP TABLE sweeps")
