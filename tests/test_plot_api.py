"""The plot API as a notebook uses it: Figures returned, ax= honoured, frames or databases in,
files only when asked; the figures' data computed apart from drawing; the plot commands' figure options."""

import os
import struct

import numpy as np
import pandas as pd
import pytest

from ddsweep.errors import UserError
from ddsweep.exchange import import_frame
from ddsweep.plot import bootstrap, curve, heatmap
from ddsweep.plot.bootstrap import bootstrap_data
from ddsweep.plot.curve import curve_data
from ddsweep.plot.heatmap import heatmap_data
from tests.synthetic import grid_frame, model_wise


@pytest.fixture(scope="module")
def frame():
    """4 widths x 2 seeds x epochs 0..12, one noise level, one n."""
    return grid_frame([4, 8, 16, 32], 12, seeds=(0, 1))


def _worlds():
    """Real and ideal world, 2 seeds, steps 0..160: real test error above ideal by a known gap."""
    rows = []
    for world, base in (("real", 0.3), ("ideal", 0.2)):
        for seed in (0, 1):
            for step in (0, 10, 40, 160):
                rows.append({"job_id": f"{world}{seed}", "width": 8, "n_train": 100, "label_noise": 0.0,
                             "seed": seed, "world": world, "epoch": step // 10, "step": step,
                             "test_error": base + 0.01 * seed, "train_error": 0.1})
    return pd.DataFrame(rows)


def _new_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    return fig, fig.subplots()


def test_functions_return_figures_and_write_nothing_without_out(frame, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    figs = [heatmap(frame), curve(frame, x="width"), curve(frame, x="epoch"), bootstrap(_worlds())]
    assert all(isinstance(f, Figure) for f in figs)
    assert os.listdir(tmp_path) == []  # no heatmap.png in the working directory
    fig = heatmap(frame, out=tmp_path / "m.svg")
    assert isinstance(fig, Figure) and (tmp_path / "m.svg").read_text().startswith("<?xml")


def test_ax_is_drawn_into(frame):
    fig, ax = _new_axes()
    assert heatmap(frame, ax=ax) is fig
    assert ax.collections and ax.get_ylabel() == "epoch"  # the mesh is on the given Axes
    fig, ax = _new_axes()
    assert curve(frame, x="width", ax=ax) is fig and len(ax.get_lines()) >= 3 and ax.get_legend() is not None
    assert ax.get_legend().get_bbox_to_anchor().y1 < ax.get_window_extent().y0  # the key under the plot, not on it
    from matplotlib.figure import Figure

    fig = Figure()
    top, gap = fig.subplots(2, 1)
    assert bootstrap(_worlds(), ax=(top, gap)) is fig and top.get_lines() and gap.get_lines()
    two = pd.concat([frame, frame.assign(label_noise=0.3, job_id=frame["job_id"] + "b")])
    with pytest.raises(UserError, match="ax= draws one panel"):
        heatmap(two, ax=_new_axes()[1])


def test_a_database_path_draws_the_same_as_its_frame(frame, tmp_path):
    db = tmp_path / "m.duckdb"
    import_frame(frame.drop(columns="job_id"), db, sweep="api")
    from_db, from_frame = curve(db, x="width"), curve(frame, x="width")

    def ys(fig):
        return np.concatenate([np.asarray(ln.get_ydata(), dtype=float) for ln in fig.axes[0].get_lines()])

    assert len(ys(from_db)) > 8 and ys(from_db) == pytest.approx(ys(from_frame), nan_ok=True)
    fig = heatmap(db, where={"width": ["8", "16"]})
    assert "where width=8,16" in fig._suptitle.get_text()  # the filter applied in the database, said in the title


def test_heatmap_data_is_seed_means_with_epoch_zero(frame):
    d = heatmap_data(frame, x="width", y="epoch", contour=0.1)
    assert d.yscale == "symlog" and 0 in d.all_y  # epoch 0 (initialisation) is drawn
    m = d.panels[(None, None)]
    want = frame.groupby(["width", "epoch"])["test_error"].mean()
    got = m.set_index(["width", "epoch"])["test_error"]
    assert got.sort_index().to_numpy() == pytest.approx(want.sort_index().to_numpy())
    assert d.seeds == 2 and d.fixed == {"label_noise": 0.2}  # one noise level: said once, in the title
    with pytest.raises(UserError, match="--x n_train: n_train has one value"):
        heatmap_data(frame, x="n_train", y="epoch")


def test_curve_data_lines_and_threshold():
    widths = [2, 4, 8, 16, 32]
    df = model_wise([0.5, 0.6, 0.7, 0.4, 0.3], [0.5, 0.3, 0.15, 0.05, 0.0], widths)
    d = curve_data(df, x="width")
    kinds = {ln.kind: ln for ln in d.panels[None]}
    assert set(kinds) == {"test", "train", "early", "threshold"}
    assert kinds["test"].y == pytest.approx([0.5, 0.6, 0.7, 0.4, 0.3])
    assert kinds["threshold"].x[0] == 16  # the smallest width with train error <= 0.1
    assert kinds["test"].lo is None  # one seed: no band, and no note about one
    assert not any("CI" in n for n in d.notes)
    with pytest.raises(UserError, match="--x n_train: n_train has one value .* axes that vary: width"):
        curve_data(df, x="n_train")
    over_epochs = curve_data(df, x="epoch", hue="width")
    assert over_epochs.xscale == "symlog" and min(ln.x.min() for ln in over_epochs.panels[None]) == 0


def test_bootstrap_data_gap():
    d = bootstrap_data(_worlds())
    gap = d.gaps[None]
    assert gap["step"].tolist() == [0, 10, 40, 160] and gap["gap"].to_numpy() == pytest.approx([0.1] * 4)
    assert d.seeds == 2


def _png_size(path):
    head = path.read_bytes()[:24]
    return struct.unpack(">II", head[16:24])


def test_figure_options_on_the_command_line(frame, tmp_path, cli):
    db = tmp_path / "m.duckdb"
    import_frame(frame.drop(columns="job_id"), db, sweep="opts")
    out = tmp_path / "c.png"
    r = cli("plot", "curve", "--db", db, "--out", out, "--size", "4,3", "--dpi", "100", "--style", "paper",
            "--no-title")
    assert r.exit_code == 0, r.output
    assert _png_size(out) == (400, 300)  # 4 x 3 in at 100 dpi: the size asked for (a paper's column width)
    big = tmp_path / "big.png"
    assert cli("plot", "heatmap", "--db", db, "--out", big, "--dpi", "200", "--title", "Fig. 2").exit_code == 0
    assert _png_size(big)[0] > 1.8 * _png_size(tmp_path / "c.png")[0]
    for args, message in ((["--size", "4"], "--size 4: expected WIDTH,HEIGHT"),
                          (["--style", "poster"], "--style poster: unknown style"),
                          (["--dpi", "0"], "--dpi 0"),
                          (["--x", "n_train"], "--x n_train: n_train has one value")):
        r = cli("plot", "curve", "--db", db, "--out", tmp_path / "bad.png", *args)
        assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, (args, r.output)
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("style,size", [("lab", None), ("paper", None), ("talk", None), ("lab", (3.5, 3.0)),
                                        ("paper", (3.5, 3.0)), ("talk", (6.5, 5.0))])
def test_no_text_is_cut_at_the_edges_of_the_figure(frame, tmp_path, style, size):
    """Figures are saved at their own size (not grown to a box around their texts), so every title,
    caption line and legend entry must fit inside it, even a narrow one with large type."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    db = tmp_path / "m.duckdb"
    long_name = "a-sweep_named_by_a_script-" + "x" * 60 + "-with-no-spaces-at-all-in-its-name"  # (one long word)
    import_frame(frame.drop(columns="job_id"), db, sweep=long_name)
    where = {"width": ["4", "8", "16"]}
    for draw in (lambda: curve(db, where=where, size=size, style=style),
                 lambda: heatmap(db, size=size, style=style, contour=[0.1, 0.3]),
                 lambda: bootstrap(_worlds(), size=size, style=style)):
        fig = draw()
        FigureCanvasAgg(fig)
        fig.draw_without_rendering()
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # (inches: what bbox_inches="tight" would keep)
        w, h = fig.get_size_inches()
        assert -0.01 <= drawn.x0 and drawn.x1 <= w + 0.01 and -0.01 <= drawn.y0 and drawn.y1 <= h + 0.01, \
            (style, size, drawn, (w, h))


def test_a_size_too_small_for_the_texts_is_one_line_and_no_file(frame, tmp_path, cli):
    db = tmp_path / "m.duckdb"
    import_frame(frame.drop(columns="job_id"), db, sweep="small")
    out = tmp_path / "h.png"
    r = cli("plot", "heatmap", "--db", db, "--out", out, "--size", "2,1.5", "--style", "talk")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "--size 2,1.5: too small for this figure's texts in the talk style" in r.output
    assert not out.exists()
    assert cli("plot", "heatmap", "--db", db, "--out", out, "--size", "6,4.5", "--style", "talk").exit_code == 0


def test_where_in_titles_stays_short():
    from ddsweep.plot.style import where_text

    assert where_text({"width": ["8", "16"], "label_noise": ["0.2"]}) == "width=8,16, label_noise=0.2"
    assert where_text({"width": [str(w) for w in (2, 3, 5, 6, 8, 11, 14, 19, 24, 32, 43)]}) == \
        "width=2,3,...,43 (11 values)"
    assert where_text(None) == ""
    from ddsweep.where import parse_where

    assert where_text(parse_where(["width>=8", "lr=0.01..0.1"])) == "width>=8, lr=0.01..0.1"


def test_the_api_refuses_a_missing_folder_as_the_command_line_does(frame, tmp_path):
    for draw in (lambda out: heatmap(frame, out=out), lambda out: curve(frame, x="width", out=out)):
        with pytest.raises(UserError, match="no folder"):
            draw(tmp_path / "typo" / "m.png")
    assert os.listdir(tmp_path) == []  # no folder made, no file written


def test_a_contour_level_outside_0_1_is_one_line(frame, tmp_path, cli):
    db = tmp_path / "m.duckdb"
    import_frame(frame.drop(columns="job_id"), db, sweep="levels")
    for level in ("-1", "1.5"):
        r = cli("plot", "heatmap", "--db", db, "--contour", level, "--out", tmp_path / "bad.png")
        assert r.exit_code == 2 and r.output.count("\n") == 1 and f"--contour {level}" in r.output, r.output
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(UserError, match="between 0 and 1"):
        heatmap(frame, contour=[0.1, 2])
