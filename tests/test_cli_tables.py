"""Tables on the command line: --format on query/status/emc/summary, nothing cut, float32 printed as float32."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import duckdb
import numpy as np
import pytest

from ddsweep import tables

FORMATS = ("table", "csv", "tsv", "json", "markdown")
COMMANDS = (["status"], ["query", "select width, test_error from final_metrics order by width"], ["emc"],
            ["summary"])


def _stored(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _json_docs(text: str) -> list:
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
    return docs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_every_table_command_prints_every_format(cli, demo_db, args, fmt):
    r = cli(*args, "--db", demo_db, "--format", fmt)
    assert r.exit_code == 0, r.output
    text = r.stdout
    if fmt in ("csv", "tsv"):
        rows = list(csv.reader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t"))
        assert len(rows) >= 2 and all(len(row) == len(rows[0]) for row in rows), text[:500]
    elif fmt == "json":
        (doc,) = _json_docs(text)
        assert isinstance(doc, list) and doc and all(set(d) == set(doc[0]) for d in doc)
    elif fmt == "markdown":
        lines = [ln for ln in text.strip().splitlines() if ln and not ln.startswith("**")]  # (titles: bold lines)
        assert lines[0].startswith("| ") and set(lines[1]) <= set("|-:") and all(ln.startswith("|") for ln in lines)
    else:
        assert "┃" in text and "…" not in text


def test_float32_metrics_print_as_their_float32_round_trip(cli, demo_db):
    sql = "select job_id, epoch, test_error, train_loss from metrics order by job_id, epoch"
    stored = _stored(demo_db, sql)
    r = cli("query", sql, "--db", demo_db, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == len(stored)
    for row, (_, _, test_error, train_loss) in zip(rows, stored):
        for text, value in ((row["test_error"], test_error), (row["train_loss"], train_loss)):
            assert np.float32(text) == np.float32(value) and float(np.float32(text)) == value  # the same float32
            # and its shortest decimal (0.68975, not 0.6897500157356262)
            assert text == str(np.float32(value))
            assert len(text.split("e")[0].replace("-", "").replace(".", "").strip("0")) <= 9  # float32: 9 digits
    # JSON: the same numbers, as numbers
    r = cli("query", sql, "--db", demo_db, "--format", "json")
    (doc,) = _json_docs(r.stdout)
    assert len(doc) == len(stored)
    assert all(np.float32(d["test_error"]) == np.float32(s[2]) for d, s in zip(doc, stored))
    assert '0.6897500157356262' not in r.stdout
    # a float64 that is no float32 (a seed mean, 1/3) keeps all its digits
    r = cli("query", "select 1/3 as third, 0.1::float as tenth", "--db", demo_db, "--format", "csv")
    assert r.stdout.splitlines() == ["third,tenth", f"{1 / 3!r},0.1"]


def test_number_text():
    assert tables.number_text(float(np.float32(0.68975))) == "0.68975"
    assert tables.number_text(0.6897500157356262) == "0.68975"
    assert tables.number_text(0.1) == "0.1" and tables.number_text(1 / 3) == repr(1 / 3)
    assert tables.number_text(4000.0) == "4000.0" and tables.number_text(float("nan")) == ""
    assert tables.number_text(1003.4878540039062, float32=False) == "1003.4878540039062"
    assert tables.float32_column([0.6897500157356262, 0.5]) and not tables.float32_column([1003.4878540039062, 0.1])
    assert tables.value_text(np.int64(7)) == "7" and tables.value_text(None) == ""


def test_piped_output_is_never_cut(cli, demo_db):
    # Not a terminal (the runner's output is a pipe): the default is tsv, every value in full, however wide.
    cols = ", ".join(f"test_error * {i} + 1000 as a_rather_long_column_name_{i}" for i in range(12))
    sql = f"select job_id, {cols} from final_metrics order by job_id"
    stored = _stored(demo_db, sql)
    r = cli("query", sql, "--db", demo_db)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["job_id", *(f"a_rather_long_column_name_{i}" for i in range(12))]
    assert [line.split("\t")[0] for line in lines[1:]] == [s[0] for s in stored]  # whole ids
    assert all(float(t) == v or np.float32(t) == v
               for line, s in zip(lines[1:], stored) for t, v in zip(line.split("\t")[1:], s[1:]))
    assert sum(float(t) == v for line in lines[1:] for t, v in zip(line.split("\t")[1:], stored[0][1:])) >= 11
    # A terminal table wider than the terminal is printed wider, not cut: every number whole, no ellipsis.
    r = cli("query", sql, "--db", demo_db, "--format", "table")
    assert r.exit_code == 0 and "…" not in r.stdout
    f32 = [tables.float32_column([s[i] for s in stored]) for i in range(1, 13)]
    assert not all(f32)  # (computed in float64: those columns keep float64 digits; rounded on a terminal)
    for s in stored:
        assert all(tables.value_text(v, f, rounded=True) in r.stdout for v, f in zip(s[1:], f32))
    r = cli("status", "--db", demo_db)
    assert r.stdout.splitlines()[0].split("\t")[:2] == ["sweep", "jobs"]
    assert r.stdout.splitlines()[1].split("\t")[:2] == ["mnist1d-mlp", "18"]


def test_several_statements_print_each_result(cli, demo_db):
    sql = "select 1 as a; select 2 as b, 'x;y' as c; set variable v = 1; select count(*) as n from jobs"
    r = cli("query", sql, "--db", demo_db, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout.split("\n\n") == ["a\n1", "b,c\n2,x;y", "n\n18\n"]
    r = cli("query", sql, "--db", demo_db, "--format", "json")
    assert _json_docs(r.stdout) == [[{"a": 1}], [{"b": 2, "c": "x;y"}], [{"n": 18}]]
    r = cli("query", sql, "--db", demo_db, "--format", "table")
    assert all(t in r.stdout for t in ("select 1 as a", "select 2 as b, 'x;y' as c", "select count(*) as n"))
    r = cli("query", "select 1 as a; select nope from jobs", "--db", demo_db)
    assert r.exit_code == 2 and r.stdout == "" and r.output.count("\n") == 1, r.output
    assert "ddsweep: error: statement 2 (select nope from jobs) failed: " in r.output


def test_table_commands_write_nothing(tmp_path, cli, demo_db):
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "copy.duckdb"
    db.write_bytes(demo_db.read_bytes())

    def snapshot():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before = snapshot()
    for args in COMMANDS:
        for fmt in FORMATS:
            assert cli(*args, "--db", db, "--format", fmt).exit_code == 0
    assert cli("query", "select 1; select 2", "--db", db).exit_code == 0
    assert snapshot() == before


def test_bad_format_is_one_line(cli, demo_db):
    r = cli("status", "--db", demo_db, "--format", "xml")
    assert r.exit_code == 2 and "xml" in r.output
    r = cli("query", "select 1", "--db", demo_db, "--csv", "--format", "json")
    assert r.exit_code == 2 and r.output.strip() == "ddsweep: error: --csv and --format json: choose one"
