"""The read layer (ddsweep.store.results): same numbers as reading the whole table, and no writes."""

import ast
import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from ddsweep import api, axes
from ddsweep.analysis.emc import emc_table
from ddsweep.analysis.frames import apply_where
from ddsweep.analysis.peaks import summarize
from ddsweep.errors import DatabaseBusy, UserError
from ddsweep.exchange import import_frame
from ddsweep.store import Store, results
from tests.synthetic import grid_frame

ROOT = Path(__file__).resolve().parents[1]


def _old_load(db, sweep=None) -> pd.DataFrame:
    """The whole table as the read path before the read layer built it: every row a Python tuple."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = ("SELECT j.*, j.epochs AS horizon, m.*, m.lr AS epoch_lr FROM metrics m JOIN jobs j USING (job_id)"
               + (" WHERE j.sweep = ?" if sweep else "") + " ORDER BY j.sweep, m.job_id, m.epoch")
        cur = con.execute(sql, [sweep] if sweep else [])
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    df = pd.DataFrame(rows, columns=names)
    df = df.loc[:, ~df.columns.duplicated()]  # (m.lr is dropped for the job's lr, as the old read did)
    return df


@pytest.fixture(scope="module")
def synthetic_db(tmp_path_factory):
    """Widths x n x 2 noise levels x 3 seeds x 31 epochs, imported (so depth etc. are missing)."""
    db = tmp_path_factory.mktemp("res") / "s.duckdb"
    df = grid_frame([2, 4, 8, 16, 32, 64, 128], 30, n_values=(250, 500, 1000, 2000), noises=(0.0, 0.2),
                    seeds=(0, 1, 2))
    # (at label noise 0 the synthetic test error depends on neither width nor n: break those exact ties, which
    # means summed in another order may break the other way)
    df["test_error"] += (1e-3 * np.log2(df["width"]) + 7e-4 * np.log2(df["n_train"])) * (df["label_noise"] == 0)
    import_frame(df.drop(columns="job_id").assign(dataset="mnist1d"), db, sweep="syn")
    return db


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory):
    """The tiny grid of the end-to-end test, trained for real."""
    from tests.conftest import TINY, write_grid

    d = tmp_path_factory.mktemp("trained")
    db = d / "t.duckdb"
    grid = write_grid(d / "tiny.yaml", TINY)
    api.plan(grid, db)
    assert api.work(db, cpus=2, show_progress=False).done == 4
    return db


@pytest.mark.parametrize("which", ["synthetic_db", "trained_db"])
def test_load_metrics_equals_the_whole_table(request, which):
    db = request.getfixturevalue(which)
    new = api.load_metrics(db)
    old = _old_load(db)
    assert len(new) == len(old) and tuple(new.columns) == axes.RESULT_COLUMNS
    for col in axes.RESULT_COLUMNS:
        a, b = new[col], old[col]
        if a.dtype.kind == "f":
            assert np.allclose(a.to_numpy(), pd.to_numeric(b).to_numpy(dtype=float), equal_nan=True), col
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col
    for m in axes.METRICS:  # float metrics float64, also where the table holds nulls
        assert new[m.column].dtype == (np.float64 if m.kind == "float" or new[m.column].isna().any() else np.int64)
    if which == "trained_db":  # the per-epoch lr is there, next to the job's
        assert new["epoch_lr"].notna().all() and (new["lr"] == 0.05).all()


def test_filters_in_sql_equal_filters_in_pandas(synthetic_db):
    full = api.load_metrics(synthetic_db)
    where = {"n_train": ["500", "2000"], "label_noise": ["0.2"]}
    got = api.load_metrics(synthetic_db, where=where).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, apply_where(full, where).reset_index(drop=True))
    last = full.loc[full.groupby("job_id")["epoch"].idxmax()].sort_values(["job_id"]).reset_index(drop=True)
    fin = api.load_metrics(synthetic_db, final=True).sort_values(["job_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(fin, last)
    at = api.load_metrics(synthetic_db, epochs=[3, 30], columns=["width", "epoch", "test_error"])
    assert list(at.columns) == ["width", "epoch", "test_error"] and set(at["epoch"]) == {3, 30}
    with pytest.raises(UserError, match="no such value"):
        api.load_metrics(synthetic_db, where={"width": ["3"]})
    with pytest.raises(UserError, match="no such column"):
        api.load_metrics(synthetic_db, where={"nope": ["3"]})


@pytest.mark.parametrize("which", ["synthetic_db", "trained_db"])
def test_summary_and_emc_reduced_in_sql_equal_the_whole_table_path(request, which):
    db = request.getfixturevalue(which)
    full = _old_load(db)
    for c in ("test_error", "train_error"):
        full[c] = full[c].astype(float)
    n = sorted(full["n_train"].unique())
    cases = [({}, {}), ({"label_noise": ["0.2"]}, {}), ({"n_train": [str(n[0])]}, {}),
             ({"n_train": [str(n[0])]}, {"all_epochs": True}), ({}, {"epochs": [2, 6]})]
    for where, kw in cases:
        old = emc_table(apply_where(full, where), **kw)
        new = api.emc(db, where=where, **kw)
        assert (new.mode, new.folded, new.notes) == (old.mode, old.folded, old.notes), (where, kw)
        pd.testing.assert_frame_equal(new.table, old.table, check_dtype=False)
    if which == "trained_db":  # 2 widths: no curve to summarise
        return
    for where, epoch in (({}, None), ({"label_noise": ["0.2"]}, None), ({"n_train": ["500"]}, 20)):
        pd.testing.assert_frame_equal(api.summary(db, where=where, epoch=epoch),
                                      summarize(apply_where(full, where), epoch=epoch), check_dtype=False)
    with pytest.raises(UserError, match="--epoch 999: not an evaluated epoch; nearest evaluated: "):
        api.summary(db, epoch=999)


def _drawn(fig) -> list[np.ndarray]:
    """What a figure shows: colour meshes and line data, panel by panel."""
    import matplotlib.pyplot as plt

    out = []
    for ax in fig.axes:
        for c in ax.collections:
            a = c.get_array()
            if a is not None:
                out.append(np.ma.filled(np.asarray(a, dtype=float), np.nan).ravel())
        for ln in ax.get_lines():
            out.append(np.asarray(ln.get_ydata(), dtype=float))
    plt.close(fig)
    return out


def test_maps_and_curves_read_in_sql_draw_what_all_rows_draw(synthetic_db):
    import importlib

    curve_mod, heatmap_mod = (importlib.import_module(f"ddsweep.plot.{m}") for m in ("curve", "heatmap"))

    full = api.load_metrics(synthetic_db)
    for kw in ({"x": "width", "y": "epoch", "where": {"n_train": ["500"]}},
               {"x": "width", "y": "n_train", "metric": "train_error"},
               {"x": "n_train", "y": "epoch", "where": {"width": ["16"]}, "facet": "label_noise"},
               {"x": "width", "y": "n_train", "epoch": 10}):
        name, df = heatmap_mod._read(synthetic_db, None, kw.get("where"), kw["x"], kw["y"],
                                     kw.get("metric", "test_error"), kw.get("facet", "label_noise"), None,
                                     kw.get("epoch"))
        assert len(df) < len(full)  # seed means or one row per job, not every row
        rest = {k: v for k, v in kw.items() if k != "where"}
        a = _drawn(heatmap_mod.heatmap_figure(df, name, **rest))
        b = _drawn(heatmap_mod.heatmap_figure(full, name, **kw))
        assert len(a) == len(b) and all(np.allclose(u, v, equal_nan=True) for u, v in zip(a, b)), kw
    for kw in ({"x": "width", "where": {"n_train": ["1000"]}},
               {"x": "n_train", "where": {"width": ["64"]}, "epoch": 20},
               {"x": "epoch", "where": {"n_train": ["1000"], "label_noise": ["0.2"]}}):
        name, df = curve_mod._read(synthetic_db, None, kw.get("where"), kw["x"], kw.get("epoch"), "label_noise",
                                   None, True)
        rest = {k: v for k, v in kw.items() if k != "where"}
        a = _drawn(curve_mod.curve_figure(df, name, **rest))
        b = _drawn(curve_mod.curve_figure(full, name, **kw))
        assert len(a) == len(b) and all(np.allclose(u, v, equal_nan=True) for u, v in zip(a, b)), kw


def test_a_map_over_many_epochs_is_binned_in_sql_and_draws_what_all_rows_draw(tmp_path):
    """More evaluated epochs than a map has cells: DuckDB bins them (only the cells drawn come back),
    and the figure is the one drawn from every row, its caption saying so."""
    import importlib

    heatmap_mod = importlib.import_module("ddsweep.plot.heatmap")
    db = tmp_path / "long.duckdb"
    df = grid_frame([2, 4, 8], 700, n_values=(500,), noises=(0.0, 0.2), seeds=(0, 1, 2))
    df = df[(df["seed"] != 2) | (df["epoch"] % 3 == 0)]  # (a seed evaluated less often: cells of unequal counts)
    import_frame(df.drop(columns="job_id").assign(dataset="mnist1d"), db, sweep="long")
    full = api.load_metrics(db)
    name, binned = heatmap_mod._read(db, None, None, "width", "epoch", "test_error", "label_noise", None, None)
    assert binned["epoch"].nunique() <= heatmap_mod.MAX_CELLS < full["epoch"].nunique()
    assert len(binned) <= 2 * 3 * heatmap_mod.MAX_CELLS
    a_map, b_map = (heatmap_mod.heatmap_data(f, x="width", y="epoch") for f in (binned, full))
    assert a_map.binned == b_map.binned == ["epoch"] and a_map.seeds == b_map.seeds == 3  # (what the caption says)
    a = _drawn(heatmap_mod.heatmap_figure(binned, name, x="width", y="epoch"))
    b = _drawn(heatmap_mod.heatmap_figure(full, name, x="width", y="epoch"))
    assert len(a) == len(b) and all(np.allclose(u, v, equal_nan=True) for u, v in zip(a, b))


@pytest.mark.parametrize("where", [None, ["test_error<0.6"], ["test_error<0.6", "width>=4"]])
def test_binned_map_with_gaps_nan_and_a_running_job_equals_the_one_from_every_row(tmp_path, where):
    """The binned read groups whole bins at once only where every job has every epoch's value: a job
    still running, NaN values and a filter on a metric leave bins uneven, which take the exact path
    (per cell and epoch first). Either way the map equals the one drawn from every row."""
    import importlib

    from ddsweep.where import parse_where

    heatmap_mod = importlib.import_module("ddsweep.plot.heatmap")
    where = where and parse_where(where)
    db = tmp_path / "gaps.duckdb"
    df = grid_frame([2, 4, 8], 700, n_values=(500,), noises=(0.2,), seeds=(0, 1, 2))
    running = (df["width"] == 4) & (df["seed"] == 1) & (df["epoch"] > 450)  # (evaluated up to epoch 450 so far)
    df = df[~running].copy()
    nan_rows = (df["width"] == 8) & (df["epoch"] % 97 == 5) & (df["seed"] == 0)
    df.loc[nan_rows, "test_error"] = np.nan
    import_frame(df.drop(columns="job_id").assign(dataset="mnist1d"), db, sweep="gaps")
    full = api.load_metrics(db)
    name, binned = heatmap_mod._read(db, None, where, "width", "epoch", "test_error", "label_noise", None, None)
    assert binned["epoch"].nunique() <= heatmap_mod.MAX_CELLS < full["epoch"].nunique()
    a = _drawn(heatmap_mod.heatmap_figure(binned, name, x="width", y="epoch"))
    b = _drawn(heatmap_mod.heatmap_figure(full, name, x="width", y="epoch", where=where))
    assert len(a) == len(b) and all(np.allclose(u, v, equal_nan=True) for u, v in zip(a, b))
    seeds = binned.set_index(["width", "epoch"])["seeds"]
    assert seeds.max() == 3 and seeds.loc[4].iloc[-1] < 3  # (the running job's late bins: fewer seeds)


@pytest.mark.parametrize("output", ["arrow", "polars"])
def test_arrow_and_polars_output(synthetic_db, output):
    module = {"arrow": "pyarrow", "polars": "polars"}[output]
    try:
        __import__(module)
    except ImportError:
        with pytest.raises(UserError, match=f"pip install {module}"):
            api.load_metrics(synthetic_db, output=output)
        return
    t = api.load_metrics(synthetic_db, where={"width": ["8"]}, output=output)
    assert t.num_rows if output == "arrow" else len(t) == len(api.load_metrics(synthetic_db, where={"width": ["8"]}))


def _snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_read_commands_write_nothing(tmp_path, cli, synthetic_db):
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "copy.duckdb"
    db.write_bytes(synthetic_db.read_bytes())  # a copied database: no lock file beside it
    out = tmp_path / "out"
    out.mkdir()  # (a missing output folder is refused, not created)
    before = _snapshot(folder)
    commands = [
        ["status"], ["query", "select count(*) from metrics"], ["summary"], ["emc", "--where", "label_noise=0.2"],
        ["plot", "heatmap", "--x", "width", "--y", "epoch", "--where", "n_train=500", "--out", out / "h.png"],
        ["plot", "curve", "--x", "width", "--where", "n_train=500", "--out", out / "c.png"],
        ["export", "--format", "parquet", "--out", out / "e.parquet"],
        ["report", "--out", out / "r.html"],
    ]
    for args in commands:
        r = cli(*args, "--db", db)
        assert r.exit_code == 0, (args, r.output)
        assert _snapshot(folder) == before, args  # same bytes, no lock file, no WAL, nothing new
    assert not list(folder.glob("*.lock*"))


def test_reader_takes_its_turn_at_a_writers_lock(tmp_path):
    from filelock import FileLock

    db = tmp_path / "w.duckdb"
    with Store(db).write():
        pass
    lock = FileLock(Store(db).lock_path)
    with lock:  # a writer queued (or writing): the reader waits for it, then says who
        with pytest.raises(DatabaseBusy, match="writing for over"):
            results.sweeps(db, wait=0.3)
    assert results.sweeps(db, wait=1) == []


def test_schema_check_reads_the_revisions_alembic_reads():
    from ddsweep.store import connection

    script = connection._script()
    assert connection.head_revision() == script.get_current_head()
    assert connection.known_revisions() == {s.revision for s in script.walk_revisions()}


# ----------------------------------------------------------------------------- import graph

LAYER_RULES = {  # package -> ddsweep modules it may not import (directly or in a function)
    "ddsweep.analysis": ("ddsweep.api", "ddsweep.cli", "ddsweep.store", "ddsweep.plot", "ddsweep.html_report",
                         "ddsweep.workers", "ddsweep.exchange"),
    "ddsweep.plot": ("ddsweep.api", "ddsweep.cli", "ddsweep.html_report", "ddsweep.workers"),
    "ddsweep.store": ("ddsweep.api", "ddsweep.cli", "ddsweep.analysis", "ddsweep.plot", "ddsweep.html_report"),
    "ddsweep.axes": ("ddsweep.",),
}


def _imports() -> dict[str, set[str]]:
    """module -> the ddsweep modules it imports (at the top or inside functions)."""
    graph = {}
    for path in (ROOT / "ddsweep").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("ddsweep")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ddsweep"):
                found.add((node.module, tuple(a.name for a in node.names)))
        graph[name] = found
    out = {}
    for m, deps in graph.items():
        edges = set()
        for dep in deps:
            if isinstance(dep, str):
                edges.add(dep)
                continue
            module, names = dep  # `from ddsweep.store import results` imports the module results, not store's body
            subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in graph}
            edges |= subs if len(subs) == len(names) else subs | {module}
        out[m] = {i for i in edges if i in graph and i != m and i != "ddsweep"}
    # (the root package is the lazy facade `ddsweep.plan(...)` over api; importing __version__
    # from it imports nothing else)
    return out


def test_layers():
    """Analysis is pure (frames in, frames out), plots and the store never call back into api.

    (Cycles anywhere in the package: tests/test_import_graph.py.)
    """
    graph = _imports()
    assert "ddsweep.api" in graph and "ddsweep.store.results" in graph
    for module, deps in graph.items():
        for package, banned in LAYER_RULES.items():
            if module == package or module.startswith(package + "."):
                bad = sorted(d for d in deps if any(d == b or d.startswith(b) for b in banned))
                assert not bad, f"{module} imports {bad}"


def test_reads_have_a_memory_limit_and_spill_outside_the_database_folder(synthetic_db):
    """DuckDB's default would take 80% of the machine; a read spills instead, never beside the database."""
    from ddsweep.store.connection import READ_MEMORY_LIMIT

    with results.connect(synthetic_db) as conn:
        limit, spill = conn.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()
    plain = duckdb.connect()
    plain.execute(f"SET memory_limit = '{READ_MEMORY_LIMIT}'")
    assert limit == plain.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert not Path(spill).resolve().is_relative_to(Path(synthetic_db).resolve().parent)
