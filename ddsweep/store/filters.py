"""`--where` and `--sweep` as SQL over `metrics m JOIN jobs j`: the filters of the read layer (ddsweep.store.results).

Plain values become an exact IN list of the column's matching distinct values (numbers
within a relative 1e-9, as typed); comparisons and ranges (ddsweep.where) are checked
on those distinct values for job columns, and go into the SQL as they are for metric
columns. A filter that keeps nothing is one line listing the values there are.
"""

from __future__ import annotations

import numpy as np

from ddsweep import where as where_filter
from ddsweep.axes import BOOKKEEPING, JOB_AXES, METRICS, RESULT_COLUMNS
from ddsweep.errors import UserError
from ddsweep.suggest import no_such_column

# Each long-format column as SQL over `metrics m JOIN jobs j`.
COLUMN_SQL = {"sweep": "j.sweep", "job_id": "j.job_id", "status": "j.status", "horizon": "j.epochs",
              **{a: f"j.{a}" for a in JOB_AXES}, "epoch": "m.epoch", **{m.column: f"m.{m.name}" for m in METRICS}}
JOB_COLUMNS = BOOKKEEPING + JOB_AXES  # the long-format columns the jobs table alone holds
assert tuple(COLUMN_SQL) == RESULT_COLUMNS


def sql_filters(conn, sweep: str | None, where: dict | None, metric_rows: bool = True) -> tuple[list[str], list]:
    """SQL conditions (over `jobs j`, and `metrics m` with metric_rows) for a sweep and `--where`.

    `where` (ddsweep.where) keeps rows whose column takes one of the given values, numbers
    compared with a relative tolerance of 1e-9 (as typed on a command line, 0.1 matches
    0.1000000001), and satisfies its comparisons and ranges (`width>=8`, `width=8..64`):
    the column's distinct values are read first (cheap: the jobs table) and the matching
    ones become an exact IN list, so the scan itself is a plain filter. Comparisons on a
    metric column alone (`test_error<0.5`) go into the SQL as they are.
    """
    filters, args = (["j.sweep = ?"], [sweep]) if sweep else ([], [])
    for col, values in (where or {}).items():
        if col not in COLUMN_SQL or (not metric_rows and col not in JOB_COLUMNS):
            have = RESULT_COLUMNS if metric_rows else JOB_COLUMNS
            raise UserError(no_such_column("--where", col, have))
        expr = COLUMN_SQL[col]
        plain, conds = where_filter.split(values)
        rows = expr.startswith("m.") or any("m." in f for f in filters)  # (the metric rows, not the jobs alone)
        source = "metrics m JOIN jobs j USING (job_id)" if rows else "jobs j"
        cond = f" WHERE {' AND '.join(filters)}" if filters else ""
        if expr.startswith("m.") and not plain:  # (a metric's distinct values are many: compare in SQL)
            for c in conds:
                text, params = _condition_sql(expr, c)
                filters.append(text)
                args.extend(params)
            if not conn.execute(f"SELECT 1 FROM {source} WHERE {' AND '.join(filters)} LIMIT 1", args).fetchall():
                raise UserError(f"--where {where_filter.describe(col, values)}: no row matches")
            continue
        have = [r[0] for r in conn.execute(f"SELECT DISTINCT {expr} FROM {source}{cond}", args).fetchall()]
        present = [v for v in have if v is not None and not (isinstance(v, float) and v != v)]
        keep = _matching(col, have, plain) if plain else present
        if conds:
            _check_numeric(col, present, conds)
            keep = [v for v in keep if all(where_filter.holds(c, v) for c in conds)]
        if not keep:
            shown = ", ".join(_fmt_value(v) for v in sorted(present))
            raise UserError(f"--where {where_filter.describe(col, values)}: no such value (values: {shown})")
        filters.append(f"{expr} IN ({', '.join('?' * len(keep))})")
        args.extend(keep)
    return filters, args


def _condition_sql(expr: str, c) -> tuple[str, list]:
    if isinstance(c, where_filter.Between):
        parts = ([f"{expr} >= ?"] if c.lo is not None else []) + ([f"{expr} <= ?"] if c.hi is not None else [])
        return "(" + " AND ".join(parts) + ")", [v for v in (c.lo, c.hi) if v is not None]
    if c.op == "!=" and isinstance(c.value, float):
        rtol, atol = where_filter.TOLERANCE
        return f"abs({expr} - ?) > ?", [c.value, atol + rtol * abs(c.value)]
    return f"{expr} {c.op} ?", [c.value]


def _check_numeric(col: str, present: list, conds) -> None:
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in present)
    for c in conds:
        if not numeric and (isinstance(c, where_filter.Between) or c.op != "!="):
            raise UserError(f"--where {col}{c}: {col} is not numeric")


def _matching(col: str, have: list, wanted) -> list:
    present = [v for v in have if v is not None and not (isinstance(v, float) and v != v)]
    if present and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                       for v in present):
        try:
            w = np.array([float(v) for v in wanted])
        except ValueError:
            raise UserError(f"--where {col}={','.join(map(str, wanted))}: {col} is numeric") from None
        x = np.array(present, dtype=float)
        close = np.isclose(x[:, None], w[None, :], rtol=1e-9, atol=1e-12).any(axis=1)
        return [v for v, k in zip(present, close) if k]
    wanted = {str(v) for v in wanted}
    return [v for v in present if str(v) in wanted]


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
