"""Result tables as text: one renderer for every command that prints a table (query, status, emc, summary).

Formats (`--format`):

- `table`: a rich table for the terminal. Numbers are never cut: a numeric column is as
  wide as its widest number (only headers and text wrap), and a table wider than the
  terminal is printed wider (the terminal wraps the lines) rather than with `0.60…`.
- `csv`, `tsv`: one header line, one line per row, every value in full. TSV is the
  default whenever standard output is not a terminal (a pipe, a file): plain, full
  width, and `cut`/`awk`/`sort` read it.
- `json`: a JSON array of objects, one per row (NaN and missing values are null).
- `markdown`: a pipe table, numbers right-aligned.

Numbers print at the precision they were computed in. Every metric ddsweep records is a
float32 (the training runs in float32) stored in a DOUBLE column, so a float column whose
values are all float32 values prints each as the shortest decimal that reads back to that
float32 (0.68975, not 0.6897500157356262); any other float column prints the shortest
decimal that reads back to the same float64. The terminal table alone rounds the latter (a seed mean,
say) to 6 significant digits for reading; csv/tsv/json never round.

Several results (several SQL statements, summary's peaks and Deep Bootstrap tables) print
one after another: tables under their titles, csv/tsv/markdown separated by a blank line,
json as one array per line-separated document (`jq` reads the stream).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from enum import Enum
from typing import IO, Iterable

import numpy as np
import pandas as pd


class Format(str, Enum):
    table = "table"
    csv = "csv"
    tsv = "tsv"
    json = "json"
    markdown = "markdown"


PIPED_FORMAT = Format.tsv  # the default when standard output is not a terminal
TABLE_ROWS = 1000  # more rows than this are not drawn as a terminal table (slow and unreadable)
FORMAT_HELP = ("table (the default on a terminal), csv, tsv (the default when the output is piped or "
               "redirected: never cut), json or markdown.")


def chosen(fmt: Format | str | None, stream: IO | None = None) -> Format:
    """The format asked for, else `table` on a terminal and PIPED_FORMAT otherwise."""
    if fmt is not None:
        return Format(fmt)
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return Format.table if isatty is not None and isatty() else PIPED_FORMAT


def is_float32(x: float) -> bool:
    """True when the float64 `x` is exactly a float32 value."""
    with np.errstate(over="ignore"):
        return math.isfinite(x) and float(np.float32(x)) == x


def float32_column(values) -> bool:
    """A float column every finite value of which is a float32 (a recorded metric): printed as float32.

    Decided per column, not per value: a float64 result that happens to be a float32 value
    in a column of others keeps its float64 digits."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    with np.errstate(over="ignore"):
        return x.size > 0 and bool((x.astype(np.float32).astype(float) == x).all())


def number_text(x: float, float32: bool | None = None) -> str:
    """A float in full: the shortest decimal that reads back to it, as a float32 when `float32` (None: when
    `x` is a float32 value), else as a float64. NaN is ''."""
    if not math.isfinite(x):
        return "" if x != x else ("inf" if x > 0 else "-inf")
    if float32 is None:
        float32 = is_float32(x)
    return str(np.float32(x)) if float32 else repr(float(x))


def value_text(v, float32: bool | None = None, rounded: bool = False) -> str:
    """One cell as text: missing -> '', floats as `number_text` (rounded: 6 significant digits unless float32)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        x = float(v)
        f32 = is_float32(x) if float32 is None else float32
        if rounded and math.isfinite(x) and not f32:
            return f"{x:.6g}"
        return number_text(x, f32)
    if isinstance(v, (np.integer,)):
        return str(int(v))
    return str(v)


def _json_value(v, float32: bool) -> str:
    if v is None or v is pd.NA or v is pd.NaT:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if x != x:
            return "null"
        return number_text(x, float32) if math.isfinite(x) else json.dumps(number_text(x))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, pd.Timestamp):
        return json.dumps(v.isoformat())
    return json.dumps(v if isinstance(v, (str, list, dict)) else str(v))


def _float32_flags(df: pd.DataFrame) -> list[bool]:
    """Per column: printed as float32 (a float column of float32 values only)."""
    return [df[c].dtype.kind == "f" and float32_column(df[c]) for c in df.columns]


def _rows(df: pd.DataFrame, rounded: bool = False) -> list[list[str]]:
    flags = _float32_flags(df)
    return [[value_text(v, f, rounded) for v, f in zip(row, flags)] for row in df.itertuples(index=False, name=None)]


def _numeric(df: pd.DataFrame, col) -> bool:
    return df[col].dtype.kind in "iuf"


def _delimited(df: pd.DataFrame, delimiter: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow([str(c) for c in df.columns])
    w.writerows(_rows(df))
    return buf.getvalue()


def _json(df: pd.DataFrame) -> str:
    keys = [json.dumps(str(c)) for c in df.columns]
    flags = _float32_flags(df)
    rows = ["{" + ", ".join(f"{k}: {_json_value(v, f)}" for k, v, f in zip(keys, row, flags)) + "}"
            for row in df.itertuples(index=False, name=None)]
    return "[" + ",\n ".join(rows) + "]\n"


def _markdown(df: pd.DataFrame) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if _numeric(df, c) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(text) for text in row) + " |" for row in _rows(df)]
    return "\n".join([head, rule, *body]) + "\n"


def rich_table(df: pd.DataFrame):
    """(a rich Table whose numbers cannot be cut: numeric columns no-wrap at their widest cell, the width it needs)."""
    from rich.table import Table

    table = Table()
    cells = _rows(df, rounded=True)
    need = 1  # the width it needs: numeric columns whole, text columns down to their longest word
    for i, col in enumerate(df.columns):
        if _numeric(df, col):
            widest = max([len(str(col))] + [len(r[i]) for r in cells])
            table.add_column(str(col), justify="right", no_wrap=True, min_width=widest)
        else:
            widest = max([1] + [len(w) for w in str(col).split()] + [len(w) for r in cells for w in r[i].split()])
            table.add_column(str(col), justify="left", overflow="fold")
        need += widest + 3  # (a space each side and a border)
    for r in cells:
        table.add_row(*r)
    return table, need


def print_table(df: pd.DataFrame, title: str | None = None, stream: IO | None = None) -> None:
    """A rich table on `stream`, printed wider than the terminal rather than cutting a number."""
    from rich.console import Console

    stream = stream or sys.stdout
    table, need = rich_table(df)
    console = Console(file=stream, soft_wrap=False)
    if need > console.width:
        console = Console(file=stream, width=need, soft_wrap=False)
    if title:  # (above the table, unwrapped: a table narrower than its title would fold it)
        console.print(title, highlight=False, markup=False, soft_wrap=True)
    console.print(table, highlight=False)


def render(results: Iterable[tuple[str | None, pd.DataFrame]], fmt: Format | str | None = None,
           stream: IO | None = None, warn=None) -> Format:
    """Print each (title, frame) in the format asked for (None: by terminal); returns the format used.

    `warn(text)` receives the one note a format may need (a terminal table cut to TABLE_ROWS rows).
    """
    stream = stream or sys.stdout
    fmt = chosen(fmt, stream)
    for i, (title, df) in enumerate(results):
        if fmt is Format.table:
            if len(df) > TABLE_ROWS:
                if warn is not None:
                    warn(f"{len(df):,} rows; showing the first {TABLE_ROWS:,} as a table "
                         "(all of them: --format tsv, csv or json)")
                df = df.head(TABLE_ROWS)
            print_table(df, title, stream)
            continue
        if i and fmt is not Format.json:
            stream.write("\n")
        if fmt is Format.markdown and title:
            stream.write(f"**{title}**\n\n")
        text = {Format.csv: lambda d: _delimited(d, ","), Format.tsv: lambda d: _delimited(d, "\t"),
                Format.json: _json, Format.markdown: _markdown}[fmt](df)
        stream.write(text)
    stream.flush()
    return fmt
