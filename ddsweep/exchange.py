"""Moving results in and out: `ddsweep export` (Parquet/CSV) and `ddsweep import` (results made elsewhere).

The exchange format is long: one row per run and evaluated epoch, with the run's
axes (width, n_train, label_noise, seed, and optionally the other axes of
ddsweep.axes: depth, lr, ..., the knobs), `epoch`, and metric columns (test_error,
train_error, ..., the per-epoch learning rate as epoch_lr). `export --table metrics`
writes exactly that, the same columns as `load_metrics`, so an export imports again
unchanged.

An import becomes a sweep of jobs with status 'done', one per distinct combination
of axes, with a synthetic job_id (a hash of sweep and axes, prefixed "imp-") and a
config JSON that names the source file; every plot, `emc` and `summary` then work
on it as on a trained sweep. It writes through `Store.write()` (the cross-process
lock), in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.axes import (BOOKKEEPING, INT_AXES, JOB_AXES, KNOB_DEFAULTS, METRICS as VOCABULARY, REQUIRED_AXES,
                          TEXT_AXES, result_select)
from ddsweep.errors import UserError
from ddsweep.paths import output_file
from ddsweep.store import Store, results
from ddsweep.store.jobs import _insert_rows, insert_metrics
from ddsweep.suggest import no_such_sweep
from ddsweep.workers.events import JobStatus

# The exchange format is the vocabulary's long format (ddsweep.axes.RESULT_COLUMNS), so an export
# holds every axis and metric `load_metrics` returns and imports again unchanged.
OPTIONAL_AXES = tuple(a for a in JOB_AXES if a not in REQUIRED_AXES)
METRICS = {m.column: m.name for m in VOCABULARY}  # file column -> metrics column (epoch_lr -> lr)
WHOLE_METRICS = tuple(m.column for m in VOCABULARY if m.kind == "int")  # step
ERROR_METRICS = tuple(m.column for m in VOCABULARY if m.fraction)  # shares in [0, 1]
INT_LIMITS = {"epoch": 1_000_000, "width": 1_000_000, "step": 2**53}  # epochs and widths as a grid allows

FORMATS = {"parquet": ".parquet", "csv": ".csv"}

_METRIC_SQL = "SELECT " + result_select() + " FROM metrics m JOIN jobs j ON j.job_id = m.job_id {where} " \
    "ORDER BY j.sweep, j.job_id, m.epoch"
TABLES = {
    "metrics": _METRIC_SQL,
    "curves": "SELECT * FROM curves {where} ORDER BY ALL",
    "final_metrics": "SELECT * FROM final_metrics {where} ORDER BY ALL",
    "jobs": "SELECT * FROM jobs {where} ORDER BY sweep, job_id",
}


# ----------------------------------------------------------------------------- export


def export(db, fmt: str = "parquet", out=None, sweep: str | None = None, table: str = "metrics") -> tuple[Path, int]:
    """Write a table (default: the long metrics format) to Parquet or CSV, or every run to a folder of
    TensorBoard event files (fmt="tensorboard"; ddsweep.export_tensorboard); returns (path, rows)."""
    fmt = fmt.lower()
    if fmt == "tensorboard":
        if table != "metrics":
            raise UserError(f"--table {table}: --format tensorboard exports the metrics (every run, every epoch)")
        from ddsweep.export_tensorboard import export_tensorboard

        path, _, rows = export_tensorboard(db, out, sweep)
        return path, rows
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use parquet, csv or tensorboard")
    if table not in TABLES:
        raise UserError(f"--table {table}: use one of {', '.join(TABLES)}")
    db = Path(db)
    out = Path(out) if out else Path(f"{db.stem}-{table}{FORMATS[fmt]}")
    if out.suffix.lower() != FORMATS[fmt]:
        raise UserError(f"--out {out}: a {fmt} file should end in {FORMATS[fmt]}")
    output_file(out, "--out")  # (a missing folder is refused, not made: ddsweep.paths)
    where = ""
    if sweep:
        col = "j.sweep" if table == "metrics" else "sweep"
        where = f"WHERE {col} = {_literal(sweep)}"
    sql = TABLES[table].format(where=where)
    options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
    tmp = out.with_name(out.name + ".tmp")
    if sweep:
        known = results.sweeps(db)
        if sweep not in known:
            raise UserError(no_such_sweep(sweep, db, sorted(known)))
    rows = results.copy_to(db, sql, tmp, options)
    tmp.replace(out)
    return out, int(rows)


def _literal(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


# ----------------------------------------------------------------------------- import


@dataclass
class ImportResult:
    sweep: str
    db: Path
    jobs: int
    rows: int
    source: str
    axes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def read_table(path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (Parquet read by DuckDB: no pyarrow needed)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import duckdb

            con = duckdb.connect()
            try:
                return con.execute("SELECT * FROM read_parquet(?)", [str(path)]).df()
            finally:
                con.close()
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (UserError, FileNotFoundError):
        raise
    except Exception as e:  # a malformed file: one line, not a traceback
        raise UserError(f"{path}: cannot read ({str(e).strip().splitlines()[0]})") from None
    raise UserError(f"{path}: unknown format {suffix!r} (use .csv or .parquet)")


def parse_pairs(items, option: str) -> dict[str, str]:
    """["old=new", ...] -> {"old": "new"} (new may be empty)."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UserError(f"{option} {item}: expected NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def prepare(df: pd.DataFrame, mapping: dict | None = None, constants: dict | None = None,
            source: str = "<frame>") -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Validate and normalise a long results table: (frame, axes, metric columns, dropped columns)."""
    df = df.copy()
    mapping = dict(mapping or {})
    missing = [old for old in mapping if old not in df.columns]
    if missing:
        raise UserError(f"{source}: --map {missing[0]}=...: no such column (columns: {', '.join(map(str, df.columns))})")
    dropped = [old for old, new in mapping.items() if not new]
    df = df.drop(columns=dropped).rename(columns={old: new for old, new in mapping.items() if new})
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise UserError(f"{source}: two columns are named {dup!r} after --map")
    for key, value in (constants or {}).items():
        if key in df.columns:
            raise UserError(f"{source}: --set {key}={value}: the file has a {key} column already")
        if key not in REQUIRED_AXES + OPTIONAL_AXES:
            raise UserError(f"--set {key}: not an axis (axes: {', '.join(REQUIRED_AXES + OPTIONAL_AXES)})")
        df[key] = value
    known = set(REQUIRED_AXES) | set(OPTIONAL_AXES) | {"epoch"} | set(METRICS) | set(BOOKKEEPING)
    unknown = [c for c in df.columns if c not in known]
    if unknown:
        raise UserError(f"{source}: unknown column(s) {', '.join(map(str, unknown))}: rename with --map OLD=NEW "
                        f"(axes: {', '.join(REQUIRED_AXES + OPTIONAL_AXES)}, epoch; metrics: {', '.join(METRICS)}) "
                        "or drop with --map OLD=")
    need = [c for c in REQUIRED_AXES + ("epoch",) if c not in df.columns]
    if need:
        raise UserError(f"{source}: missing column(s) {', '.join(need)} (rename with --map OLD=NEW, or give a "
                        "constant with --set AXIS=VALUE)")
    metrics = [c for c in METRICS if c in df.columns]
    if not {"test_error", "train_error"} & set(metrics):
        raise UserError(f"{source}: needs a test_error or train_error column")
    if df.empty:
        raise UserError(f"{source}: no rows")
    if "sweep" in df.columns and df["sweep"].nunique(dropna=True) > 1:
        raise UserError(f"{source}: holds several sweeps ({', '.join(map(str, df['sweep'].unique()[:5]))}); "
                        "import one file per sweep")
    empty = [c for c in OPTIONAL_AXES if c in df.columns and df[c].isna().all()]
    df = df.drop(columns=empty)  # e.g. an export of imported results that never had the axis
    axes = [c for c in REQUIRED_AXES + OPTIONAL_AXES if c in df.columns]
    for col in axes + ["epoch"] + metrics:
        if col in TEXT_AXES:
            df[col] = df[col].astype("string")
            continue
        if col == "augment":  # true/false (a CSV's True, true, 1)
            words = df[col].map(lambda v: None if pd.isna(v) else str(v).strip().lower())
            flags = words.map({"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False})
            bad = flags.isna() & words.notna()
            if bad.any():
                raise UserError(f"{source}: augment = {df[col][bad].iloc[0]!r}: must be true or false")
            df[col] = flags.astype("boolean")
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise UserError(f"{source}: {col} = {df[col][bad].iloc[0]!r} (row {int(np.flatnonzero(bad)[0]) + 1}): "
                            "not a number")
        if col in INT_AXES or col == "epoch" or col in WHOLE_METRICS:
            if col in REQUIRED_AXES or col == "epoch":
                if values.isna().any():
                    raise UserError(f"{source}: {col} is empty in row {int(np.flatnonzero(values.isna())[0]) + 1}")
            frac = values.notna() & (values != values.round())
            if frac.any():
                raise UserError(f"{source}: {col} = {values[frac].iloc[0]!r}: must be a whole number")
            limit = INT_LIMITS.get(col, 2**31 - 1)  # the database's INTEGER (step: BIGINT)
            huge = values.notna() & (values.abs() > limit)
            if huge.any():
                raise UserError(f"{source}: {col} = {values[huge].iloc[0]:g} (row {int(np.flatnonzero(huge)[0]) + 1}): "
                                f"too large (at most {limit:,})")
            values = values.astype("Int64")
        df[col] = values
    if df["label_noise"].isna().any() or not df["label_noise"].between(0, 1, inclusive="left").all():
        bad = df["label_noise"][~df["label_noise"].between(0, 1, inclusive="left")].iloc[0]
        raise UserError(f"{source}: label_noise = {bad!r}: must be a fraction in [0, 1) (20% is 0.2)")
    for col in ("width", "n_train"):
        if (df[col] < 1).any():
            raise UserError(f"{source}: {col} = {df[col][df[col] < 1].iloc[0]}: must be at least 1")
    if (df["epoch"] < 0).any():
        raise UserError(f"{source}: epoch = {df['epoch'][df['epoch'] < 0].iloc[0]}: must be >= 0")
    for col in ERROR_METRICS:
        if col in df.columns:
            v = df[col]
            out = v.notna() & ~v.between(0, 1)
            if out.any():
                raise UserError(f"{source}: {col} = {v[out].iloc[0]!r}: errors are fractions in [0, 1] "
                                "(percentages? divide by 100)")
    dup = df.duplicated(subset=axes + ["epoch"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        what = ", ".join(f"{a}={row[a]}" for a in axes + ["epoch"])
        raise UserError(f"{source}: {int(dup.sum())} rows repeat a run and epoch (e.g. {what}); a run needs one row "
                        "per epoch (add the axis that tells them apart, e.g. seed)")
    return df, axes, metrics, dropped


def import_frame(df: pd.DataFrame, db, sweep: str | None = None, mapping: dict | None = None,
                 constants: dict | None = None, source: str = "<frame>", replace: bool = False) -> ImportResult:
    """Import a long results table (see the module doc) into `db` as a sweep of finished jobs."""
    df, axes, metrics, dropped = prepare(df, mapping, constants, source)
    if sweep is None:
        if "sweep" in df.columns and df["sweep"].notna().any():
            sweep = str(df["sweep"].dropna().iloc[0])
        else:
            sweep = Path(source).stem if source != "<frame>" else "imported"
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if Path(source).is_file() else None
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
    jobs, rows = [], []
    for key, g in df.groupby(axes, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values = {a: _py(v) for a, v in zip(axes, key)}
        # knobs at their defaults are left out of the id, as in a grid's job ids: a file without
        # knob columns and its export (which has them, at their defaults) give the same runs
        named = {a: v for a, v in values.items() if a not in KNOB_DEFAULTS or v != KNOB_DEFAULTS[a]}
        job_id = "imp-" + hashlib.sha256(json.dumps([sweep, named], sort_keys=True, default=str).encode()).hexdigest()[:16]
        last = int(g["epoch"].max())
        config = {"imported_from": source, "source_sha256": digest, "imported_at": now.isoformat() + "Z",
                  "columns": mapping or {}, "constants": constants or {}, "sweep": sweep, **values}
        jobs.append({"job_id": job_id, "sweep": sweep, "status": JobStatus.DONE.value,
                     **{a: values.get(a) for a in axes},
                     "epochs": last, "horizons": json.dumps([last]), "config": json.dumps(config, sort_keys=True),
                     "attempts": 0, "epochs_done": last, "finished_at": now})
        part = {"job_id": [job_id] * len(g), "epoch": g["epoch"].astype(int).tolist()}
        for col in metrics:
            part[METRICS[col]] = [_py(v) for v in g[col].tolist()]
        rows.extend(dict(zip(part, vals)) for vals in zip(*part.values()))
    store = Store(db)
    with store.write() as conn:
        existing = conn.exec_driver_sql("SELECT config FROM jobs WHERE sweep = ?", (sweep,)).fetchall()
        known = conn.exec_driver_sql("SELECT count(*) FROM sweeps WHERE name = ?", (sweep,)).fetchone()[0]
        if known or existing:
            imported = all("imported_from" in json.loads(c or "{}") for (c,) in existing)
            if not replace:
                raise UserError(f"{db}: sweep {sweep} exists already; import under another name with --sweep NAME"
                                + (" or replace it with --replace" if imported else ""))
            if not imported:
                raise UserError(f"{db}: sweep {sweep} holds trained jobs; --replace only replaces imported sweeps")
            conn.exec_driver_sql("DELETE FROM metrics WHERE job_id IN (SELECT job_id FROM jobs WHERE sweep = ?)",
                                 (sweep,))
            conn.exec_driver_sql("DELETE FROM jobs WHERE sweep = ?", (sweep,))
            conn.exec_driver_sql("DELETE FROM sweeps WHERE name = ?", (sweep,))
        conn.exec_driver_sql("INSERT INTO sweeps (name, grid_path, grid_yaml) VALUES (?, ?, ?)",
                             (sweep, source, f"# imported from {source}\n"))
        job_cols = list(dict.fromkeys(c for j in jobs for c in j))
        _insert_rows(conn, "jobs", jobs, job_cols)
        insert_metrics(conn, rows)
    return ImportResult(sweep, Path(db), len(jobs), len(rows), source, axes, metrics, dropped)


def import_file(path, db, sweep: str | None = None, mapping: dict | None = None, constants: dict | None = None,
                replace: bool = False) -> ImportResult:
    """`ddsweep import FILE`: read CSV/Parquet and import it (see `import_frame`)."""
    df = read_table(path)
    return import_frame(df, db, sweep=sweep, mapping=mapping, constants=constants, source=str(path),
                        replace=replace)


def _py(v):
    """numpy/pandas scalars -> plain Python for the bulk insert; NaN/NA -> None."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    return v
