"""Linked axes (`grid.zip`): expansion, job ids, and plots/summaries that treat a group as one axis."""

import copy

import pandas as pd
import pytest

from ddsweep.analysis import free_axes, linked_axes
from ddsweep.analysis.peaks import summarize
from ddsweep.errors import GridError, UserError
from ddsweep.grid import expand, parse_grid
from ddsweep.plot.curve import curve_figure
from tests.conftest import TINY, write_grid
from tests.synthetic import table

SCALING = {"batch_size": [25, 50, 100, 200], "lr": [0.025, 0.05, 0.1, 0.2], "warmup": [0, 4, 8, 16]}


def linked(zip_, **axes):
    g = copy.deepcopy(TINY)
    g["grid"] = {"width": [4, 16], "n_train": [400], **axes, "zip": zip_}
    return g


def cells(jobs):
    return sorted((j.config["width"], j.config["train"]["batch_size"], j.config["train"]["lr"],
                   j.config["train"].get("warmup", 0)) for j in jobs)


def test_a_group_varies_together_and_crosses_the_other_axes():
    jobs = expand(parse_grid(linked(SCALING)))
    assert cells(jobs) == sorted((w, b, lr, wu) for w in (4, 16) for b, lr, wu in zip(*SCALING.values()))
    assert len({j.job_id for j in jobs}) == 8


def test_several_groups_cross_each_other():
    jobs = expand(parse_grid(linked([{"batch_size": [25, 50], "lr": [0.025, 0.05]},
                                     {"momentum": [0.0, 0.9], "weight_decay": [0.0, 5e-4]}])))
    seen = {(j.config["width"], j.config["train"]["batch_size"], j.config["train"]["lr"],
             j.config["train"]["momentum"], j.config["train"]["weight_decay"]) for j in jobs}
    assert len(jobs) == 2 * 2 * 2
    assert seen == {(w, b, lr, m, wd) for w in (4, 16) for b, lr in ((25, 0.025), (50, 0.05))
                    for m, wd in ((0.0, 0.0), (0.9, 5e-4))}


def test_a_linked_cell_is_the_same_job_as_in_the_crossed_grid():
    """The grouping is not part of a job's config: the diagonal of the crossed grid, same ids."""
    crossed = copy.deepcopy(TINY)
    crossed["grid"] = {"width": [4, 16], "n_train": [400], **SCALING}
    by_cell = {c: j.job_id for j in expand(parse_grid(crossed)) for c in cells([j])}
    jobs = expand(parse_grid(linked(SCALING)))
    assert len(by_cell) == 2 * 4 ** 3
    assert {j.job_id for j in jobs} == {by_cell[c] for c in cells(jobs)}


def test_generators_and_repeated_rows_in_a_group():
    """Generators expand inside a group; a row given twice is one cell (values may repeat per axis)."""
    jobs = expand(parse_grid(linked({"batch_size": {"geom": [25, 100, 3]}, "lr": [0.025, 0.05, 0.1]})))
    assert sorted({(j.config["train"]["batch_size"], j.config["train"]["lr"]) for j in jobs}) == \
        [(25, 0.025), (50, 0.05), (100, 0.1)]
    jobs = expand(parse_grid(linked({"batch_size": [25, 25, 50, 25], "lr": [0.025, 0.025, 0.025, 0.05]})))
    assert sorted({(j.config["train"]["batch_size"], j.config["train"]["lr"]) for j in jobs}) == \
        [(25, 0.025), (25, 0.05), (50, 0.025)]
    assert len(jobs) == 2 * 3


def test_required_axes_and_pool_checks_see_linked_axes():
    g = copy.deepcopy(TINY)
    g["grid"] = {"zip": {"width": [4, 16], "n_train": [400, 800]}}
    assert sorted((j.config["width"], j.config["n_train"]) for j in expand(parse_grid(g))) == [(4, 400), (16, 800)]
    g["grid"]["zip"]["n_train"] = [400, 5000]
    with pytest.raises(GridError, match=r"grid\.zip\.n_train\[1\] = 5000: larger than the dataset's training pool"):
        expand(parse_grid(g))
    g["grid"] = {"width": [4], "zip": {"lr": [0.1], "momentum": [0.9]}}
    with pytest.raises(GridError, match="missing axis"):
        expand(parse_grid(g))


def test_bad_groups_are_one_line_naming_the_group(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    bad = linked({"batch_size": [25, 50, 100], "lr": [0.025, 0.05]})
    r = cli("plan", write_grid(tmp_path / "g.yaml", bad), "--db", db)
    assert r.exit_code == 2 and not db.exists()
    line = r.output.strip()
    assert "\n" not in line and "g.yaml: grid.zip (batch_size, lr): linked axes need equally many values" in line


# ------------------------------------------------------------------ plots and summary over a linked axis


def scaling_frame(seeds=(0, 1)) -> pd.DataFrame:
    """Runs of a linked batch-size / lr group crossed with two widths (errors fall with batch size)."""
    frames = []
    for b, lr in ((25, 0.025), (50, 0.05), (100, 0.1), (200, 0.2)):
        cells = {(w, 400, 0.0): (lambda e, b=b, w=w: (0.5 - b / 1000 - w / 100, 0.3 - b / 2000)) for w in (4, 16)}
        t = table(cells, seeds=seeds, batch_size=b, lr=lr)
        t["job_id"] = t["job_id"] + f"-b{b}"
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def test_linked_axes_are_read_one_to_one_from_the_rows():
    df = scaling_frame()
    assert linked_axes(df, "batch_size") == ["lr"] and linked_axes(df, "lr") == ["batch_size"]
    assert linked_axes(df, "width") == []
    assert free_axes(df, ["batch_size"]) == ["width"]
    assert free_axes(df, ["width"]) == ["lr"]  # one axis per linked group
    crossed = pd.concat([df, df.assign(lr=df["lr"] * 2, job_id=df["job_id"] + "x")], ignore_index=True)
    assert linked_axes(crossed, "batch_size") == []  # lr takes two values per batch size: crossed, not linked
    assert free_axes(crossed, ["batch_size"]) == ["width", "lr"]


def test_curve_over_a_linked_axis_draws_and_names_the_others():
    df = scaling_frame()
    fig = curve_figure(df, "s", x="batch_size", hue="width")
    assert "(with learning rate)" in fig.axes[0].get_xlabel()
    crossed = pd.concat([df, df.assign(lr=df["lr"] * 2, job_id=df["job_id"] + "x")], ignore_index=True)
    fig = curve_figure(crossed, "s", x="batch_size", hue="width")  # crossed: lr is an axis of its own (panels)
    assert "with" not in fig.axes[0].get_xlabel() and "learning rate" in fig.axes[0].get_title()
    with pytest.raises(UserError, match="lr also varies"):
        curve_figure(crossed.assign(depth=crossed["seed"] + 1), "s", x="batch_size", hue="width")


def test_summary_over_n_with_a_linked_axis():
    """n_train linked with lr (a scaling rule over n): the sample-wise curve is one curve, not 4 points."""
    cells = {(8, n, 0.0): (lambda e, n=n: ({400: 0.3, 800: 0.5, 1600: 0.35, 3200: 0.2}[n], 0.0))
             for n in (400, 800, 1600, 3200)}
    df = table(cells, seeds=(0, 1))
    df["lr"] = df["n_train"] / 4000
    out = summarize(df)
    sample = out[(out["curve"] == "sample-wise") & (out["measure"] == "final")]
    assert len(sample) == 1 and sample.iloc[0]["points"] == 4 and sample.iloc[0]["peak_at"] == 800


def test_plan_work_plot_and_summarise_a_linked_sweep(tmp_path, cli):
    g = linked({"batch_size": [25, 50, 100], "lr": [0.025, 0.05, 0.1]})
    g["grid"]["width"] = [4, 8, 16]
    db = tmp_path / "r.duckdb"
    assert cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", db).exit_code == 0
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0 and "done 9, failed 0" in r.output, r.output
    out = tmp_path / "curve.png"
    r = cli("plot", "curve", "--db", db, "--x", "batch_size", "--hue", "width", "--out", out)
    assert r.exit_code == 0 and out.stat().st_size > 10_000, r.output
    r = cli("summary", "--db", db)
    assert r.exit_code == 0, r.output
    assert r.output.count("model-wise, final") == 3  # one width curve per (batch size, lr) row of the group
