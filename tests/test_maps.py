"""Heatmaps and curves (figure contents, not just files), export and import."""

import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from ddsweep.analysis.emc import emc_over_n
from ddsweep.errors import UserError
from ddsweep.exchange import import_frame
from ddsweep.plot.curve import curve_data, curve_figure
from ddsweep.plot.heatmap import heatmap_figure
from tests.synthetic import grid_frame


@pytest.fixture(scope="module")
def sample_frame():
    """Widths x n x 2 noise levels x 2 seeds x 21 epochs."""
    return grid_frame([2, 4, 8, 16, 32, 64, 128, 256], 20, n_values=(250, 500, 1000, 2000, 4000), noises=(0.0, 0.2),
                      seeds=(0, 1))


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def _texts(fig) -> str:
    """Every text of a figure (title, notes, legends), one per line."""
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_large_map_is_binned_and_readable(tmp_path):
    df = grid_frame(np.arange(1, 65), 4000)  # widths 1..64 (the paper's ResNet grid) x 4001 epochs
    assert df["width"].nunique() == 64
    fig = heatmap_figure(df, "big", x="width", y="epoch", contour=[0.1, 0.05], log_color=True)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    rows, cols = mesh.get_array().shape
    assert cols == 64 and rows <= 300  # 4000 epochs binned into at most 300 rows (a few pixels each)
    assert "binned" in _texts(fig)  # (in the notes under the plot, not the title)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # (under the panels, not over the cells)
    assert labels == ["train error = 0.1", "train error = 0.05"]
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "symlog"  # widths 1..64 are evenly spaced
    from matplotlib.colors import LogNorm

    assert isinstance(mesh.norm, LogNorm)
    out = tmp_path / "big.png"
    fig.savefig(out, dpi=100)
    _close(fig)
    assert 20_000 < out.stat().st_size < 1_000_000


def test_width_by_n_map_has_the_emc_line(sample_frame):
    fig = heatmap_figure(sample_frame, "s", x="width", y="n_train", metric="test_error", contour=[0.1])
    assert len(fig.axes) == 3  # two noise panels and the colour bar
    ax = fig.axes[1]  # label noise 20%
    assert ax.get_title() == "label noise 20%"
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(lines) == 1
    x, y = lines[0].get_data()
    final = sample_frame[(sample_frame["epoch"] == 20) & (sample_frame["label_noise"] == 0.2)]
    m = final.groupby(["width", "n_train"], as_index=False)["train_error"].mean()
    expect = []
    for w, g in m.groupby("width"):
        v, b = emc_over_n(g["n_train"], g["train_error"], 0.1)
        if not b:
            expect.append((w, v))
    assert expect and list(x) == [w for w, _ in expect]
    assert list(y) == pytest.approx([v for _, v in expect])
    _close(fig)


def test_map_axes_facets_and_errors(sample_frame):
    # n_train x epoch: width varies too -> one row of panels per width unless fixed
    with pytest.raises(UserError, match="--where"):
        heatmap_figure(sample_frame, x="n_train", y="epoch", facet="label_noise", row="seed")
    fig = heatmap_figure(sample_frame, x="n_train", y="epoch", where={"width": ["64"]})
    assert [a.get_title() for a in fig.axes[:2]] == ["label noise 0%", "label noise 20%"]
    _close(fig)
    # facet on any axis; the other varying axis (label noise) becomes the panel rows
    fig = heatmap_figure(sample_frame, x="width", y="epoch", facet="n_train", metric="train_error")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert "label noise 0% | n = 250" in titles and len(titles) == 10
    _close(fig)
    with pytest.raises(UserError, match="--metric nope: not a stored metric"):
        heatmap_figure(sample_frame, metric="nope")
    with pytest.raises(UserError, match="no such value"):
        heatmap_figure(sample_frame, where={"width": ["3"]})


def test_curve_with_early_stopping_and_noisy_test(sample_frame):
    df = sample_frame.assign(dataset="mnist1d")
    fig = curve_figure(df, "s", x="width", where={"n_train": ["1000"]})
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # each kind of line and each noise level named once, not "test (label noise 20%)" per line
    assert labels == ["test", "train", "test, early-stopped", "threshold: train error <= 0.1",
                      "label noise 0%", "label noise 20%"]
    assert "clean test labels" in _texts(fig) and "95% CI over seeds" in _texts(fig)
    _close(fig)
    one_seed = curve_figure(df[df["seed"] == 0], x="width", where={"n_train": ["1000"]})
    assert "95% CI" not in _texts(one_seed)  # one seed: no bands, no note about them
    clean = curve_data(df, x="width", where={"n_train": ["1000"]})
    noisy = curve_data(df, x="width", where={"n_train": ["1000"]}, noisy_test=True)
    assert "NOISY test distribution" in " ".join(noisy.notes)
    paper = curve_figure(df, x="width", where={"n_train": ["1000"]}, noisy_test=True, style="paper")
    assert "NOISY" not in _texts(paper)  # (the paper style leaves the notes to the paper's caption)
    assert "noisy test distribution" in paper._suptitle.get_text()  # (but the title still says which error)

    def line(d, kind, level):
        return next(ln.y for ln in d.panels[None] if ln.kind == kind and ln.level == level)

    p, C = 0.2, 10
    assert line(noisy, "test", p) == pytest.approx(p + line(clean, "test", p) * (1 - p * C / (C - 1)))
    assert line(noisy, "train", p) == pytest.approx(line(clean, "train", p))
    # n_train varies: without --where the curves come in one panel per n
    fig = curve_figure(df, "s", x="width")
    assert len([a for a in fig.axes if a.get_title()]) == 5
    _close(fig)
    with pytest.raises(UserError, match="--classes"):
        curve_figure(sample_frame.assign(dataset="unknown"), x="width", noisy_test=True, where={"n_train": ["1000"]})


def test_plot_commands_on_an_imported_database(tmp_path, cli, sample_frame):
    db = tmp_path / "m.duckdb"
    import_frame(sample_frame.drop(columns="job_id"), db, sweep="maps")
    for args in (["heatmap", "--x", "width", "--y", "n_train", "--log-color", "--contour", "0.1", "--contour", "0.02"],
                 ["heatmap", "--x", "n_train", "--y", "epoch", "--where", "width=64", "--where", "label_noise=0.2",
                  "--metric", "train_error"],
                 ["curve", "--x", "n_train", "--where", "width=64", "--noisy-test", "--classes", "10"]):
        out = tmp_path / f"{len(list(tmp_path.glob('*.png')))}.png"
        r = cli("plot", *args, "--db", db, "--out", out)
        assert r.exit_code == 0, (args, r.output)
        assert out.stat().st_size > 10_000
    r = cli("plot", "heatmap", "--db", db, "--where", "width=3", "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no such value" in r.output


# ----------------------------------------------------------------------------- export / import


def test_export_import_round_trip(tmp_path, cli, sample_frame):
    from ddsweep import api

    db = tmp_path / "a.duckdb"
    src = sample_frame.drop(columns="job_id")
    res = import_frame(src, db, sweep="orig")
    assert (res.jobs, res.rows) == (8 * 5 * 2 * 2, len(src))
    jobs = api.query("select status, count(*) n, min(job_id) id, min(config) cfg from jobs group by status", db)
    assert jobs["status"].tolist() == ["done"] and jobs["id"][0].startswith("imp-")
    assert '"imported_from": "<frame>"' in jobs["cfg"][0]
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"orig.{fmt}"
        r = cli("export", "--db", db, "--format", fmt, "--out", out)
        assert r.exit_code == 0, r.output
        db2 = tmp_path / f"b-{fmt}.duckdb"
        r = cli("import", out, "--db", db2)
        assert r.exit_code == 0, r.output
        assert "imported 160 runs" in r.output and "sweep orig" in r.output
        a = api.load_metrics(db).sort_values(["width", "n_train", "label_noise", "seed", "epoch"])
        b = api.load_metrics(db2).sort_values(["width", "n_train", "label_noise", "seed", "epoch"])
        for col in ("width", "n_train", "label_noise", "seed", "epoch", "test_error", "train_error"):
            assert a[col].tolist() == pytest.approx(b[col].tolist())
        cfg = api.query("select config from jobs limit 1", db2)["config"][0]
        assert str(out) in cfg and "source_sha256" in cfg
    # the same ids again: refused, unless --replace (an imported sweep)
    r = cli("import", tmp_path / "orig.csv", "--db", tmp_path / "b-csv.duckdb")
    assert r.exit_code == 2 and "--replace" in r.output
    r = cli("import", tmp_path / "orig.csv", "--db", tmp_path / "b-csv.duckdb", "--replace")
    assert r.exit_code == 0, r.output
    r = cli("export", "--db", db, "--table", "curves", "--format", "csv", "--out", tmp_path / "curves.csv")
    assert r.exit_code == 0 and len(pd.read_csv(tmp_path / "curves.csv")) == 8 * 5 * 2 * 21


def test_import_with_column_mapping_and_constants(tmp_path, cli):
    df = pd.DataFrame({"h": [4, 4, 8, 8], "n": [100] * 4, "noise": [0.1] * 4, "ep": [1, 2, 1, 2],
                       "test_acc_err": [0.5, 0.4, 0.45, 0.3], "notes": ["a", "b", "c", "d"]})
    path = tmp_path / "published.csv"
    df.to_csv(path, index=False)
    db = tmp_path / "p.duckdb"
    r = cli("import", path, "--db", db)
    assert r.exit_code == 2 and "unknown column(s) h, n, noise, ep, test_acc_err, notes" in r.output
    r = cli("import", path, "--db", db, "--map", "h=width", "--map", "n=n_train", "--map", "noise=label_noise",
            "--map", "ep=epoch", "--map", "test_acc_err=test_error", "--map", "notes=")
    assert r.exit_code == 2 and "missing column(s) seed" in r.output
    r = cli("import", path, "--db", db, "--map", "h=width", "--map", "n=n_train", "--map", "noise=label_noise",
            "--map", "ep=epoch", "--map", "test_acc_err=test_error", "--map", "notes=", "--set", "seed=0")
    assert r.exit_code == 0, r.output
    assert "imported 2 runs, 4 rows into sweep published" in r.output
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("select j.width, j.seed, m.epoch, m.test_error, m.train_error from metrics m "
                       "join jobs j using (job_id) order by 1, 3").fetchall()
    con.close()
    assert rows == [(4, 0, 1, 0.5, None), (4, 0, 2, 0.4, None), (8, 0, 1, 0.45, None), (8, 0, 2, 0.3, None)]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.assign(label_noise=20), "must be a fraction"),
    (lambda d: d.assign(test_error=d["test_error"] * 100), "percentages"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "repeat a run and epoch"),
    (lambda d: d.assign(width="wide"), "not a number"),
    (lambda d: d.assign(epoch=1.5), "whole number"),
    (lambda d: d.drop(columns=["test_error", "train_error"]), "test_error or train_error"),
])
def test_import_rejects_bad_tables(tmp_path, change, message):
    d = pd.DataFrame({"width": [4, 4], "n_train": [100, 100], "label_noise": [0.1, 0.1], "seed": [0, 0],
                      "epoch": [1, 2], "test_error": [0.5, 0.4], "train_error": [0.3, 0.2]})
    with pytest.raises(UserError, match=message):
        import_frame(change(d), tmp_path / "x.duckdb")
    assert not (tmp_path / "x.duckdb").exists()  # nothing written


def test_import_refuses_to_replace_a_trained_sweep(tmp_path):
    from ddsweep import api

    db = tmp_path / "t.duckdb"
    api.plan(__import__("tests.conftest", fromlist=["x"]).write_grid(tmp_path / "g.yaml", {
        "name": "trained", "dataset": {"name": "mnist1d", "pool": 1200, "test": 600},
        "model": {"name": "mlp", "depth": 2}, "train": {"epochs": 2}, "grid": {"width": [4], "n_train": [100]}}), db)
    d = pd.DataFrame({"width": [4], "n_train": [100], "label_noise": [0.1], "seed": [0], "epoch": [1],
                      "test_error": [0.5]})
    with pytest.raises(UserError, match="holds trained jobs"):
        import_frame(d, db, sweep="trained", replace=True)
    assert math.isclose(import_frame(d, db, sweep="other").jobs, 1)
    assert sorted(api.sweeps(db)) == ["other", "trained"]
    assert np.all(api.load_metrics(db, "other")["test_error"] == 0.5)
