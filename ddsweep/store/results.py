"""The one read layer: jobs, metrics, sweeps and stored grids, read through DuckDB's own client.

Every read of a results database goes through here, on a read-only connection
(`Store.reader`: it waits for a writer like `Store.read`, and writes nothing, not
even a lock file). Filters run in DuckDB: `sweep`, `where`, `epochs`, each job's
final epoch, the columns asked for; seed means and early stopping are SQL
aggregates (`cell_means`, `best_epochs`), so a map or a summary reads only the cells
it draws, never the whole table as Python objects.

Frames come back as pandas (`output="pandas"`, the default, with the vocabulary's
dtypes: floats float64, whole numbers int64), or as Arrow tables (`"arrow"`, needs
pyarrow) or polars frames (`"polars"`, needs polars) straight from DuckDB.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ddsweep.axes import METRICS, RESULT_COLUMNS, normalize
from ddsweep.errors import UserError
from ddsweep.store.connection import DEFAULT_WAIT, Store
from ddsweep.store.filters import COLUMN_SQL, JOB_COLUMNS, sql_filters as _filters
from ddsweep.suggest import hint, no_such_sweep, not_evaluated
from ddsweep.workers.events import UNFINISHED, JobStatus, sql_list

OUTPUTS = ("pandas", "arrow", "polars")

METRIC_NAMES = tuple(m.column for m in METRICS)  # the per-epoch columns, as load_metrics names them


@contextmanager
def connect(db, wait: float = DEFAULT_WAIT):
    """A read-only DuckDB connection to `db` (for SQL of your own: `.sql(...).df()`, `.arrow()`, `.pl()`)."""
    with Store(db).reader(wait) as conn:
        yield conn


def _out(rel, output: str):
    """A DuckDB relation as the frame type asked for."""
    if output == "pandas":
        return normalize(rel.df())
    if output == "arrow":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError("output='arrow' needs pyarrow: pip install pyarrow") from None
        return rel.arrow()
    if output == "polars":
        try:
            import polars  # noqa: F401
        except ImportError:
            raise UserError("output='polars' needs polars: pip install polars") from None
        return rel.pl()
    raise UserError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")


# ----------------------------------------------------------------------------- sweeps, jobs, status


def sweeps(db, wait: float = DEFAULT_WAIT) -> list[str]:
    """The sweeps in the database, by name."""
    with connect(db, wait) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM sweeps ORDER BY name").fetchall()]


def pick_sweep(db, sweep: str | None, wait: float = DEFAULT_WAIT) -> str:
    """The sweep to read: the one named, or the only one in the database."""
    names = sweeps(db, wait)
    if sweep is None:
        if len(names) != 1:
            raise UserError(f"{db}: holds sweeps {', '.join(names) or '(none)'}; choose one with --sweep")
        return names[0]
    if sweep not in names:
        raise UserError(no_such_sweep(sweep, db, names))
    return sweep


def stored_grid(db, sweep: str, wait: float = DEFAULT_WAIT) -> tuple[str | None, str | None] | None:
    """(grid_path, grid_yaml) of a sweep as last planned; None if there is no such sweep."""
    with connect(db, wait) as conn:
        row = conn.execute("SELECT grid_path, grid_yaml FROM sweeps WHERE name = ?", [sweep]).fetchone()
    return None if row is None else (row[0], row[1])


def job_epochs(db, sweep: str, wait: float = DEFAULT_WAIT) -> dict[str, int]:
    """{job_id: planned horizon} of a sweep's jobs (what `plan --dry-run` compares with)."""
    with connect(db, wait) as conn:
        return dict(conn.execute("SELECT job_id, epochs FROM jobs WHERE sweep = ?", [sweep]).fetchall())


def jobs(db, sweep: str | None = None, columns=None, where: dict | None = None, wait: float = DEFAULT_WAIT,
         output: str = "pandas"):
    """The jobs table (of `sweep`; `columns` only; rows matching `where` on job columns)."""
    cols = list(columns) if columns else ["*"]
    with connect(db, wait) as conn:
        filters, args = _filters(conn, sweep, where, metric_rows=False)
        sql = f"SELECT {', '.join(cols)} FROM jobs j" + (f" WHERE {' AND '.join(filters)}" if filters else "")
        return _out(conn.sql(sql + " ORDER BY j.sweep, j.job_id", params=args or None), output)


STATUS_SQL = (  # (a .format template: {where})
    "SELECT sweep, count(*) AS jobs, "
    + "".join(f"count(*) FILTER (WHERE status = {s.sql}) AS {s.value}, " for s in JobStatus) +
    "sum(epochs_done) AS epochs_done, sum(epochs) AS epochs, "
    "coalesce(sum(epochs_done) FILTER (WHERE started_at IS NOT NULL), 0) AS _trained, "
    "epoch(max(coalesce(finished_at, heartbeat_at)) - min(started_at)) AS _span, "
    f"coalesce(sum(epochs - epochs_done) FILTER (WHERE status IN ({sql_list(UNFINISHED)})), 0) AS _left "
    "FROM jobs {where} GROUP BY sweep ORDER BY sweep")


def status(db, sweep: str | None = None, wait: float = DEFAULT_WAIT) -> pd.DataFrame:
    """Jobs per sweep and status, epochs done and planned, training rate and ETA.

    `epochs/s` is the sweep's epochs trained (summed over jobs) per second of wall time
    since its first job started; `eta` divides the epochs left by it while jobs run.
    """
    if sweep is not None:
        pick_sweep(db, sweep, wait)  # (an unknown sweep is an error, not an empty table)
    with connect(db, wait) as conn:
        df = conn.execute(STATUS_SQL.format(where="WHERE sweep = ?" if sweep else ""), [sweep] if sweep else []).df()
    return status_frame(df)


def status_frame(df: pd.DataFrame) -> pd.DataFrame:
    """STATUS_SQL's rows as `status` shows them: counts, epochs/s and eta."""
    counts = ("jobs", "pending", "running", "done", "failed", "diverged", "epochs_done", "epochs")
    df = df.astype({c: "int64" for c in counts})  # (DuckDB's sums are HUGEINT, which reads as float)
    rates, etas = [], []
    for rec in df.to_dict("records"):
        span, trained, left = rec["_span"], rec["_trained"], rec["_left"]
        rate = float(trained) / float(span) if span and span == span and span > 0 and trained else None
        rates.append(round(rate, 3) if rate else None)
        etas.append(_duration(float(left) / rate) if rate and rec["running"] and left else "")
    df = df.drop(columns=["_trained", "_span", "_left"])
    df["epochs/s"] = pd.Series(rates, index=df.index, dtype="float64")
    df["eta"] = pd.Series(etas, index=df.index, dtype=object)
    return df


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def query(db, sql: str, wait: float = DEFAULT_WAIT, output: str = "pandas", allow_external: bool = False):
    """Read-only SQL of your own (a statement that writes is refused by the read-only connection).

    Unless `allow_external`, the SQL sees this database only: DuckDB's external access is
    off (no COPY ... TO, read_csv of other files, ATTACH, INSTALL) and the configuration is
    locked, so the SQL cannot turn it back on. Several statements run in order; the last
    one's result is returned (`queries` returns each)."""
    import duckdb

    with _sql_connection(db, wait, allow_external) as conn:
        try:
            rel = conn.sql(sql)
        except duckdb.Error as e:
            raise UserError(f"query failed: {str(e).strip().splitlines()[0]}") from None
        if rel is None:  # not a query (e.g. SET): nothing to return
            return pd.DataFrame()
        return rel.df() if output == "pandas" else _out(rel, output)


def queries(db, sql: str, wait: float = DEFAULT_WAIT, allow_external: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """Each statement of `sql` run in order (as `query`): (statement, its rows) for every one that returns rows.

    A statement that fails stops the run with a UserError naming it (1-based) when there are several."""
    import duckdb

    with _sql_connection(db, wait, allow_external) as conn:
        try:
            statements = conn.extract_statements(sql)
        except duckdb.Error as e:
            raise UserError(f"query failed: {str(e).strip().splitlines()[0]}") from None
        done = []
        for i, stmt in enumerate(statements, 1):
            text = " ".join(stmt.query.split()).rstrip(";").strip()
            try:
                rel = conn.sql(stmt.query)
            except duckdb.Error as e:
                where = f"statement {i} ({_clip(text)})" if len(statements) > 1 else "query"
                raise UserError(f"{where} failed: {str(e).strip().splitlines()[0]}") from None
            if rel is not None and duckdb.ExpectedResultType.QUERY_RESULT in stmt.expected_result_type:
                done.append((text, rel.df()))
        return done


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _sql_connection(db, wait: float, allow_external: bool):
    with connect(db, wait) as conn:
        if not allow_external:
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
        yield conn


# ----------------------------------------------------------------------------- metric rows


def _metric_sql(sweep, where, epochs, final, columns, status, conn, job_index: bool = False) -> tuple[str, list]:
    """(SQL, args) of the metric rows; with job_index, the job columns are left out for `_jx`, the
    job's row in `_j` (a CTE the caller puts before it)."""
    cols = list(columns) if columns else list(RESULT_COLUMNS)
    unknown_cols = [c for c in cols if c not in COLUMN_SQL]
    if unknown_cols:
        raise UserError(f"no such column {unknown_cols[0]!r}{hint(unknown_cols[0], RESULT_COLUMNS)}")
    filters, args = _filters(conn, sweep, where)
    if status:
        filters.append(f"j.status IN ({', '.join('?' * len(status))})")
        args.extend(status)
    if epochs is not None:
        epochs = [int(e) for e in (epochs if isinstance(epochs, (list, tuple, set)) else [epochs])]
        filters.append(f"m.epoch IN ({', '.join(map(str, epochs))})")
    source = "metrics m JOIN jobs j USING (job_id)"
    if final:  # each job's last evaluated epoch (the metrics key is (job_id, epoch): a grouped max)
        last = "SELECT job_id, max(epoch) AS epoch FROM metrics GROUP BY job_id"
        if filters:
            last = ("SELECT m.job_id, max(m.epoch) AS epoch FROM metrics m JOIN jobs j USING (job_id) "
                    f"WHERE {' AND '.join(filters)} GROUP BY m.job_id")
        source = f"({last}) f JOIN metrics m USING (job_id, epoch) JOIN jobs j USING (job_id)"
        args = args + args
    select = ", ".join(f"{COLUMN_SQL[c]} AS {c}" for c in cols)
    if job_index:
        source += " JOIN _j ON _j.job_id = j.job_id"
        select = ", ".join(["_j._jx AS _jx", *(f"{COLUMN_SQL[c]} AS {c}" for c in cols if c not in JOB_COLUMNS)])
    sql = f"SELECT {select} FROM {source}" + (f" WHERE {' AND '.join(filters)}" if filters else "")
    return sql, args


def load_metrics(db, sweep: str | None = None, where: dict | None = None, epochs=None, final: bool = False,
                 columns=None, status=None, wait: float = DEFAULT_WAIT, output: str = "pandas", order: bool = True):
    """Metric rows joined with their job's axes: one row per (job, evaluated epoch).

    The columns are the long exchange format (ddsweep.axes.RESULT_COLUMNS, the same as
    `export`), or just `columns`. Filters run in DuckDB: `sweep`, `where` ({column:
    values}, as `--where`), `epochs` (one or several), `final` (each job's last
    evaluated epoch), `status` (job statuses). Rows are ordered by sweep, job, epoch
    unless order=False.
    """
    with connect(db, wait) as conn:
        if output == "pandas":
            return _metric_frame(conn, sweep, where, epochs, final, columns, status, order)
        sql, args = _metric_sql(sweep, where, epochs, final, columns, status, conn)
        if order:
            keys = [c for c in ("sweep", "job_id", "epoch") if not columns or c in columns]
            sql += f" ORDER BY {', '.join(COLUMN_SQL[c] for c in keys)}" if keys else ""
        return _out(conn.sql(sql, params=args or None), output)


def _metric_frame(conn, sweep, where, epochs, final, columns, status, order: bool) -> pd.DataFrame:
    """load_metrics as pandas: the metric columns from DuckDB with each row's job as an integer,
    the job columns taken from the (small) jobs frame by it. Strings made once per job, not once
    per row (a job column of 1M rows was 1M Python strings): 2x faster, half the memory."""
    cols = list(columns) if columns else list(RESULT_COLUMNS)
    sql, args = _metric_sql(sweep, where, epochs, final, cols, status, conn, job_index=True)
    keys = [c for c in ("sweep", "job_id", "epoch") if c in cols] if order else []
    job_order = ", ".join([*(COLUMN_SQL[c] for c in keys if c != "epoch"), "j.job_id"])
    numbered = f"SELECT j.job_id, row_number() OVER (ORDER BY {job_order}) - 1 AS _jx FROM jobs j"
    sort = [*(["_jx"] if any(c != "epoch" for c in keys) else []), *(["m.epoch"] if "epoch" in keys else [])]
    rows = conn.sql(f"WITH _j AS ({numbered}) {sql}" + (f" ORDER BY {', '.join(sort)}" if sort else ""),
                    params=args or None).df()
    job_cols = [c for c in cols if c in JOB_COLUMNS]
    jobs = conn.sql(f"SELECT {', '.join(f'{COLUMN_SQL[c]} AS {c}' for c in job_cols) or 'NULL AS _'} "
                    f"FROM jobs j ORDER BY {job_order}").df()
    taken = jobs[job_cols].take(rows.pop("_jx").to_numpy()).reset_index(drop=True)
    return normalize(pd.concat([taken, rows], axis=1)[cols])


def evaluated_epochs(conn, sweep: str | None, where: dict | None = None) -> list[int]:
    """The distinct epochs at which some job (of `sweep`, matching `where`) has a metric row."""
    filters, args = _filters(conn, sweep, where)
    cond = f" WHERE {' AND '.join(filters)}" if filters else ""
    sql = f"SELECT DISTINCT m.epoch FROM metrics m JOIN jobs j USING (job_id){cond} ORDER BY 1"
    return [r[0] for r in conn.execute(sql, args).fetchall()]


def load_sweep(db, sweep: str | None = None, where: dict | None = None, columns=None, final: bool = False,
               epochs=None, wait: float = DEFAULT_WAIT) -> tuple[str, pd.DataFrame]:
    """(sweep name, its metric rows): the sweep named, or the only one; no rows is a UserError."""
    name = pick_sweep(db, sweep, wait)
    df = load_metrics(db, name, where=where, columns=columns, final=final, epochs=epochs, wait=wait)
    if df.empty:
        if epochs is not None and not isinstance(epochs, (list, tuple, set)) or epochs is not None and len(epochs) == 1:
            with connect(db, wait) as conn:
                have = evaluated_epochs(conn, name, where)
            if have:
                epoch = epochs if not isinstance(epochs, (list, tuple, set)) else next(iter(epochs))
                raise UserError(not_evaluated(int(epoch), have))
        if where or epochs is not None:
            raise UserError(f"{db}: sweep {name} has no metric rows where {where or ''} {epochs or ''}".rstrip())
        raise UserError(f"{db}: sweep {name} has no metric rows yet; run `ddsweep work --db {db}` first")
    return name, df


def copy_to(db, sql: str, out: Path, options: str, wait: float = DEFAULT_WAIT) -> int:
    """DuckDB's COPY (query) TO out: writes the file (not the database); returns its rows.

    The rows are COPY's own count (counting them again ran the whole query twice). A sorted
    export larger than the reads' memory limit is sorted externally, spilling outside the
    database's folder (20M rows: 0.8 GB, not 10.5)."""
    with connect(db, wait) as conn:
        done = conn.execute(f"COPY ({sql}) TO '{str(out).replace(chr(39), chr(39) * 2)}' ({options})").fetchone()
        return int(done[0])


def sweep_frame(db, sweep: str | None = None, where: dict | None = None, metrics=(), final: bool = False,
                epochs=None, wait: float = DEFAULT_WAIT) -> tuple[str, pd.DataFrame]:
    """(sweep name, its rows with every job column, epoch and just `metrics`): what a figure reads.

    Names in `metrics` that are not metric columns are left out, so the figure's own
    check names them ("--metric nope: no such column").
    """
    wanted = [c for c in dict.fromkeys(metrics) if c in COLUMN_SQL and c not in JOB_COLUMNS and c != "epoch"]
    return load_sweep(db, sweep, where, columns=[*JOB_COLUMNS, "epoch", *wanted], final=final, epochs=epochs,
                      wait=wait)


# ----------------------------------------------------------------------------- reductions in SQL
# What the maps, curves, summary and emc read instead of every row: each job's row at the
# epoch read, seed means per cell and epoch, the early-stopping epoch per cell. The same
# numbers as ddsweep.analysis.frames computes from all rows (tests/test_results.py checks).

SHOWN_CELL = ("label_noise", "n_train", "width")  # cell columns a curve always names, varying or not


def _num(expr: str) -> str:
    """A metric as SQL, NaN read as missing (pandas' means skip NaN; DuckDB's avg would return it)."""
    return f"CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END"


def _means_sql(keys: list[str], metrics: list[str], filters: list[str], epoch_col: bool = True,
               join: str = "") -> str:
    """seed_mean in SQL: per `keys` (and epoch): means, standard errors over seeds, rows (`seeds`)."""
    group = [COLUMN_SQL[k] for k in keys] + (["m.epoch"] if epoch_col else [])
    sel = [f"{COLUMN_SQL[k]} AS {k}" for k in keys] + (["m.epoch AS epoch"] if epoch_col else [])
    sel += [f"avg({_num(COLUMN_SQL[c])}) AS {c}" for c in metrics]
    sel += [f"stddev_samp({_num(COLUMN_SQL[c])}) / sqrt(count({_num(COLUMN_SQL[c])})) AS {c}_sem" for c in metrics]
    sel += ["count(*) AS seeds"]
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    return (f"SELECT {', '.join(sel)} FROM metrics m JOIN jobs j USING (job_id){join}{where} "
            f"GROUP BY {', '.join(group)}")


def _best_sql(keys: list[str], metrics: list[str], chooser: str, filters: list[str]) -> str:
    """Per cell, the seed means (as _means_sql) at the epoch of least seed-mean `chooser` (the first such).

    In two passes over the rows (the filters' arguments twice): the mean of `chooser` alone per
    cell (an integer, `dense_rank` of the jobs' cell columns) and epoch, its least per cell (a
    min of (mean, epoch)); then every mean and standard error at just that epoch. Cheaper than
    all of them at every epoch and a window over cells x epochs (4M groups at 20M rows).
    """
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    cells = f"SELECT job_id, dense_rank() OVER (ORDER BY {', '.join(COLUMN_SQL[k] for k in keys)}) AS cell FROM jobs j"
    means = (f"SELECT c.cell, m.epoch, avg({_num(COLUMN_SQL[chooser])}) AS v FROM metrics m JOIN jobs j "
             f"USING (job_id) JOIN _cells c USING (job_id){where} GROUP BY c.cell, m.epoch")
    pick = ("SELECT c.job_id, p.epoch FROM (SELECT cell, min({'v': v, 'e': epoch}).e AS epoch FROM _means "
            "WHERE v IS NOT NULL GROUP BY cell) p JOIN _cells c USING (cell)")
    at_best = _means_sql(keys, metrics, filters, join=" JOIN _pick p ON p.job_id = m.job_id AND p.epoch = m.epoch")
    return (f"WITH _cells AS ({cells}), _means AS ({means}), _pick AS ({pick}) {at_best} "
            f"ORDER BY {', '.join(keys)}")


def cell_keys(rows: pd.DataFrame) -> list[str]:
    """The cell columns that split a sweep's rows: every varying cell axis, plus label noise, n and width."""
    from ddsweep.axes import CELL_AXES

    return [a for a in CELL_AXES if a in rows.columns and (a in SHOWN_CELL or rows[a].nunique(dropna=False) > 1)]


def reduce(db, sweep: str | None = None, where: dict | None = None, epoch: int | None = None,
           metrics=("test_error", "train_error"), curves=False, best: str | None = None,
           best_until: int | None = None, best_select: str | None = None, epoch_bins=None,
           rows: bool = True, wait: float = DEFAULT_WAIT) -> dict:
    """A sweep reduced in DuckDB to what summary, emc and the figures read.

    Returns {"sweep", "rows", "curves", "best"}: `rows`, each job's row at `epoch` (None:
    its last evaluated epoch) with every job column; with curves=True (or a function of
    `rows` that says True), the seed means of `metrics` per cell and evaluated epoch
    (`epoch_curves` over `cell_keys`); with best=M,
    per cell the epoch <= best_until of least seed-mean M (`early_stopped`), or of least
    seed-mean `best_select` with M read there (early stopping chosen on the validation split).
    `epoch_bins`: a function of the evaluated epochs giving {epoch: its bin's center}; the
    curves are then binned in DuckDB (per cell and bin: the mean over the bin's epochs of the
    seed means, and of `seeds`), as a map draws them, so only the cells drawn come back.
    rows=False: only the curves (and best) are wanted: `rows` is None and the cells are read
    from the jobs with metric rows, not from each job's last row (a scan of every row less).
    """
    best_select = None if best_select == best else best_select
    name = pick_sweep(db, sweep, wait)
    metrics = [m for m in dict.fromkeys(metrics) if m in METRIC_NAMES]
    with connect(db, wait) as conn:
        if not conn.execute("SELECT 1 FROM metrics m JOIN jobs j USING (job_id) WHERE j.sweep = ? LIMIT 1",
                            [name]).fetchall():
            raise UserError(f"{db}: sweep {name} has no metric rows yet; run `ddsweep work --db {db}` first")
        filters, fargs = _filters(conn, name, where)
        if rows:
            sql, args = _metric_sql(name, where, None if epoch is None else [epoch], epoch is None,
                                    [*JOB_COLUMNS, "epoch", *metrics], None, conn)
            table = _out(conn.sql(sql + " ORDER BY j.job_id", params=args or None), "pandas")
            if table.empty and epoch is not None:
                raise UserError(not_evaluated(epoch, evaluated_epochs(conn, name, where)))
        else:  # (the jobs with a row the filters keep: on the jobs alone, any row; on the rows too, a scan)
            jf, ja = _job_filters(filters, fargs)
            if len(jf) == len(filters):
                kept, args = "SELECT DISTINCT job_id FROM metrics", ja
            else:
                kept = ("SELECT DISTINCT m.job_id FROM metrics m JOIN jobs j USING (job_id) WHERE "
                        + " AND ".join(filters))
                args = ja + fargs
            sql = (f"SELECT {', '.join(f'{COLUMN_SQL[c]} AS {c}' for c in JOB_COLUMNS)} FROM jobs j WHERE "
                   + " AND ".join(jf + [f"j.job_id IN ({kept})"]))
            table = _out(conn.sql(sql, params=args or None), "pandas")
        keys = cell_keys(table)
        out = {"sweep": name, "rows": table if rows else None, "curves": None, "best": None}
        if curves is True or callable(curves) and curves(table):
            q = _means_sql(keys, metrics, filters) + f" ORDER BY {', '.join(keys + ['epoch'])}"
            if epoch_bins is None:
                out["curves"] = _out(conn.sql(q, params=fargs or None), "pandas")
            else:  # (a bin's center is a fraction: not the whole-number epoch of the vocabulary's dtypes)
                q, qargs = _binned(conn, keys, metrics, filters, fargs, epoch_bins)
                out["curves"] = _out(conn.sql(q, params=qargs), "pandas").rename(columns={"epoch_center": "epoch"})
        if best:
            until = [] if best_until is None else [f"m.epoch <= {int(best_until)}"]
            q = _best_sql(keys, [best] + ([best_select] if best_select else []), best_select or best, filters + until)
            b = _out(conn.sql(q, params=fargs + fargs or None), "pandas")
            if best_select:
                if b.empty:
                    raise UserError(f"sweep {name} has no {best_select}: give its dataset a validation split "
                                    "(dataset: {val: N}) to select on it")
                b = b.drop(columns=[best_select, f"{best_select}_sem"])
            out["best"] = b.rename(columns={"epoch": "best_epoch"}).reset_index(drop=True)
    return out


def _job_filters(filters: list[str], fargs: list) -> tuple[list[str], list]:
    """The conditions (and their arguments) over the jobs alone, without those on the metric rows ("m.")."""
    job_filters, job_args, at = [], [], 0
    for f in filters:
        if "m." not in f:
            job_filters.append(f)
            job_args += fargs[at:at + f.count("?")]
        at += f.count("?")
    return job_filters, job_args


def _binned(conn, keys: list[str], metrics: list[str], filters: list[str], fargs: list, epoch_bins):
    """(SQL, args): the seed means per cell and epoch, averaged per cell over each bin of epochs
    (`epoch` is then the bin's center): 4,000 evaluated epochs come back as a map's few hundred rows.

    Where every job of a cell has a value at every epoch of a bin (a finished sweep: nearly
    every bin), each epoch has the same number of seeds, so that mean of seed means is the
    plain mean of the bin's rows: one grouping per (cell, bin), 300K groups at 20M rows. Only
    the other bins (jobs still running, seeds evaluated at other epochs, NaN values, a filter
    on a metric) are grouped per (cell, epoch) first, as the definition says. A bin is even
    when its rows number the cell's jobs (those with rows) x the bin's epochs and no value
    is missing; that relies on a job having one row per epoch, which the store's single
    writer keeps (store.jobs._insert_new_metrics). Cells are integers (`dense_rank` of the
    jobs' cell columns).
    """
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    epochs = [r[0] for r in conn.execute(
        f"SELECT DISTINCT m.epoch FROM metrics m JOIN jobs j USING (job_id){where} ORDER BY 1", fargs).fetchall()]
    centers = epoch_bins(epochs)
    job_filters, job_args = _job_filters(filters, fargs)
    key_sql = ", ".join(COLUMN_SQL[k] for k in keys)
    cells = f"SELECT job_id, dense_rank() OVER (ORDER BY {key_sql}) AS cell FROM jobs j"
    cell_keys = ("SELECT DISTINCT c.cell, " + ", ".join(f"{COLUMN_SQL[k]} AS {k}" for k in keys)
                 + " FROM jobs j JOIN _cells c USING (job_id)")
    jwhere = " AND ".join(job_filters + ["j.job_id IN (SELECT DISTINCT job_id FROM metrics)"])  # (pending: none)
    jobs = f"SELECT c.cell, count(*) AS jobs FROM jobs j JOIN _cells c USING (job_id) WHERE {jwhere} GROUP BY c.cell"
    bins = "SELECT unnest(?::INTEGER[]) AS epoch, unnest(?::DOUBLE[]) AS center"
    widths = "SELECT center, count(*) AS epochs FROM _bins GROUP BY center"
    rows = "FROM metrics m JOIN jobs j USING (job_id) JOIN _cells c USING (job_id) JOIN _bins b USING (epoch)"
    pooled = ("SELECT c.cell, b.center, count(*) AS n, "
              + ", ".join(f"sum({_num(COLUMN_SQL[m])}) AS {m}_sum, count({_num(COLUMN_SQL[m])}) AS {m}_n"
                          for m in metrics)
              + f" {rows}{where} GROUP BY c.cell, b.center")
    even_if = "p.n = k.jobs * w.epochs" + "".join(f" AND p.{m}_n = p.n" for m in metrics)
    checked = (f"SELECT p.*, w.epochs, {even_if} AS even FROM _pooled p JOIN _jobs k USING (cell) JOIN _widths w "
               "USING (center)")
    even = ("SELECT cell, center, " + ", ".join(f"{m}_sum / {m}_n AS {m}" for m in metrics)
            + ", n / epochs AS seeds FROM _checked WHERE even")
    uneven = "SELECT cell, center FROM _checked WHERE NOT even"
    means = ("SELECT c.cell, b.center, m.epoch, " + ", ".join(f"avg({_num(COLUMN_SQL[m])}) AS {m}" for m in metrics)
             + f", count(*) AS seeds {rows} JOIN _uneven u ON u.cell = c.cell AND u.center = b.center{where} "
             "GROUP BY c.cell, b.center, m.epoch")
    exact = ("SELECT cell, center, " + ", ".join(f"avg({m}) AS {m}" for m in metrics)
             + ", avg(seeds) AS seeds FROM _means GROUP BY cell, center")
    sel = ", ".join([*(f"k.{k}" for k in keys), "v.center AS epoch_center", *(f"v.{m}" for m in metrics), "v.seeds"])
    q = (f"WITH _cells AS ({cells}), _keys AS ({cell_keys}), _jobs AS ({jobs}), _bins AS ({bins}), "
         f"_widths AS ({widths}), _pooled AS ({pooled}), _checked AS ({checked}), _uneven AS ({uneven}), "
         f"_means AS ({means}), _binned AS ({even} UNION ALL {exact}) "
         f"SELECT {sel} FROM _binned v JOIN _keys k USING (cell) ORDER BY {', '.join(keys)}, epoch_center")
    return q, [*job_args, [int(e) for e in epochs], [float(centers[e]) for e in epochs], *fargs, *fargs]
