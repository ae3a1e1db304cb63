"""ddsweep refine: the proposal logic on synthetic objectives, the Optuna study, the database wiring, the CLI."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import yaml

from conftest import TINY, finish_pending, write_grid
from ddsweep.refinement import (Axis, Cell, ask, is_geometric, propose, simulate, study_dir, study_name,
                                sync_study)

LOG_WIDTH = Axis("width", True, True, 2, 300)
COARSE = [int(round(v)) for v in np.geomspace(2, 300, 6)]  # 2 5 15 40 110 300: the coarse MNIST-1D grid


def dd_test_error(peak: float):
    """Double-descent-like test error over width: high for tiny models (the global maximum is at the
    smallest width, so plain maximisation would go there), a bump at `peak`, a slow second descent."""
    return lambda w: 0.3 + 0.2 * math.exp(-math.log(w / peak) ** 2 / 0.08) + 0.5 * math.exp(-w / 2) - 2e-4 * w


def interior_peak(f, lo=2, hi=300) -> int:
    """The integer width of f's interior local maximum, by brute force over every integer."""
    ws = range(lo + 1, hi)
    return max((w for w in ws if f(w) > f(w - 1) and f(w) >= f(w + 1)), key=f)


def planted_train_error():
    """Train error falling with width: 0.9 / (1 + (w/40)^6) <= 0.1  <=>  w >= 40 * 8^(1/6) = 56.57, so 57 on."""
    return lambda w: 0.9 / (1 + (w / 40) ** 6)


# ----------------------------------------------------------------------------- pure proposal logic


@pytest.mark.parametrize("peak", [7, 23, 37, 60, 150])
def test_finds_the_peak_within_one_step_on_a_small_budget(peak):
    f = dd_test_error(peak)
    true = interior_peak(f)
    cells, est, batches = simulate(f, COARSE, LOG_WIDTH, "peak", budget=14, batch=2)
    assert est.at is not None and abs(est.at - true) <= 1, (est, batches)
    assert est.converged  # resolved to one integer step: both neighbours were run
    assert len(cells) <= 6 + 14 < 299  # a dense integer grid over 2..300 has 299 widths
    assert all(len(b) <= 2 for b in batches)


def test_finds_a_planted_threshold_crossing():
    g = planted_train_error()
    assert g(56) > 0.1 >= g(57)
    cells, est, batches = simulate(g, COARSE, LOG_WIDTH, "threshold", budget=10, batch=2)
    assert est.at == 57 and est.bracket == (56, 57) and est.converged, (est, batches)
    assert len(cells) - len(COARSE) <= 10


def test_threshold_outside_the_range_proposes_nothing():
    picks, est = propose({2: 0.5, 5: 0.4, 15: 0.3}, [], LOG_WIDTH, "threshold", 2)
    assert picks == [] and "beyond the range" in est.note
    picks, est = propose({2: 0.05, 5: 0.0, 15: 0.0}, [], LOG_WIDTH, "threshold", 2)
    assert picks == [] and "below the range" in est.note


def test_proposals_are_log_midpoints_on_a_log_axis_and_plain_ones_on_a_linear_axis():
    obs = {15: 0.4, 40: 0.6, 110: 0.45}
    assert sorted(propose(obs, [], LOG_WIDTH, "peak", 2)[0]) == [24, 66]  # sqrt(15*40), sqrt(40*110)
    linear = Axis("width", True, False, 15, 110)
    assert propose(obs, [], linear, "peak", 1)[0] == [75]  # (40 + 110) / 2; in log space it is 66
    assert sorted(propose(obs, [], linear, "peak", 3)[0]) == [57, 75, 92]


def test_proposals_never_repeat_a_cell_and_stop_when_the_bracket_is_resolved():
    axis = Axis("width", True, False, 1, 100)
    obs = {10: 0.3, 13: 0.5, 16: 0.3}
    picks, est = propose(obs, [], axis, "peak", 10)
    assert sorted(picks) == [11, 12, 14, 15]  # every integer inside the bracket, once, none of the cells
    assert all(isinstance(v, int) for v in picks)
    picks, _ = propose(obs, [11, 12], axis, "peak", 10)  # pending ones are not proposed again
    assert sorted(picks) == [14, 15]
    picks, est = propose({1: 0.1, 2: 0.5, 3: 0.2}, [], axis, "peak", 3)
    assert picks == [] and est.converged and est.at == 2
    picks, est = propose({1: 0.1, 2: 0.5, 4: 0.2}, [3], axis, "peak", 3)
    assert picks == [] and not est.converged  # 3 is still pending inside the bracket


def test_float_axes_round_to_three_digits_and_deduplicate():
    lr = Axis("lr", False, True, 1e-3, 1e-1)
    picks, _ = propose({1e-3: 0.3, 1e-2: 0.5, 1e-1: 0.3}, [], lr, "peak", 6)
    assert len(picks) == len(set(picks)) == 6
    assert all(float(f"{v:.3g}") == v and 1e-3 < v < 1e-1 for v in picks)
    tight = propose({0.01: 0.3, 0.0101: 0.5, 0.0102: 0.3}, [], lr, "peak", 4)
    assert tight[0] == [] and tight[1].converged  # nothing left between at 3 significant digits


def test_no_interior_peak_explores_the_widest_gap():
    picks, est = propose({2: 0.7, 10: 0.5, 30: 0.45, 300: 0.4}, [], LOG_WIDTH, "peak", 1)
    assert est.at is None and picks == [95]  # geometric midpoint of the widest log gap, 30..300


def test_geometric_spacing_is_detected():
    assert is_geometric(COARSE) and is_geometric([1, 10])
    assert not is_geometric([1, 2, 3, 4, 5]) and not is_geometric([0, 1, 2])


# ----------------------------------------------------------------------------- the Optuna study


def _cells(values: dict, pending=(), failed=()) -> dict:
    out = {v: Cell(v, "done", y, 1, 1, "grid") for v, y in values.items()}
    out.update({v: Cell(v, "pending", None, 1, 0, "refine") for v in pending})
    out.update({v: Cell(v, "failed", None, 1, 0, "refine") for v in failed})
    return out


def test_study_asks_like_propose_and_rebuilds_from_the_cells(tmp_path):
    from optuna.trial import TrialState

    f = dd_test_error(37)
    obs = {w: f(w) for w in COARSE}
    path = tmp_path / "r.duckdb.optuna" / "s-width-peak.log"
    study, note = sync_study(path, "s-width-peak", LOG_WIDTH, "peak", _cells(obs))
    assert note == "created" and len(study.trials) == 6
    asked = ask(study, LOG_WIDTH, 2)
    assert asked == propose(obs, obs, LOG_WIDTH, "peak", 2)[0]  # the sampler is `propose`, one ask at a time
    assert [t.state for t in study.trials[-2:]] == [TrialState.RUNNING] * 2

    # the asked values got jobs; one finished, one failed: sync tells the study
    cells = _cells(obs)
    cells[asked[0]] = Cell(asked[0], "done", f(asked[0]), 1, 1, "refine")
    cells[asked[1]] = Cell(asked[1], "failed", None, 1, 0, "refine")
    study, note = sync_study(path, "s-width-peak", LOG_WIDTH, "peak", cells)
    assert note == ""
    states = {t.params["width"]: t.state for t in study.trials}
    assert states[asked[0]] == TrialState.COMPLETE and states[asked[1]] == TrialState.FAIL
    assert asked[1] not in ask(study, LOG_WIDTH, 2)  # a failed value is not proposed again

    # the file can go at any time: rebuilt from the cells
    for p in path.parent.iterdir():
        p.unlink()
    study, note = sync_study(path, "s-width-peak", LOG_WIDTH, "peak", cells)
    assert note == "created" and len(study.trials) == len(cells)

    # a result that changed in the database (e.g. more seeds) rebuilds the study
    cells[40] = Cell(40, "done", 0.99, 2, 2, "grid")
    study, note = sync_study(path, "s-width-peak", LOG_WIDTH, "peak", cells)
    assert note.startswith("rebuilt") and "40" in note
    assert {t.params["width"]: t.value for t in study.trials}[40] == 0.99


def test_study_names():
    assert study_name("mnist1d-mlp", "width", "peak") == "mnist1d-mlp-width-peak"
    assert study_name("s", "width", "peak", True, {"label_noise": ["0.2"]}) == "s-width-peak-early-stopped-label_noise=0.2"
    assert study_dir("out/results.duckdb").as_posix() == "out/results.duckdb.optuna"


# ----------------------------------------------------------------------------- database wiring, synthetic results


GRID = {**TINY, "name": "syn", "train": {**TINY["train"], "epochs": 8}, "eval": {"every": 4},
        "grid": {"width": {"geom": [2, 300, 6]}, "n_train": [400], "label_noise": [0.1, 0.2], "seed": [0, 1]}}


def fake_work(db, test_error, train_error=lambda w: 0.5):
    """Finish every pending job with synthetic metrics (epochs 0 and the horizon) instead of training."""
    return finish_pending(db, lambda w: {"test_error": test_error(w), "train_error": train_error(w)})


def _db_state(db):
    from ddsweep import api

    jobs = api.query("select job_id, width, label_noise, seed, status from jobs order by width", db)
    grid_yaml = api.query("select grid_yaml from sweeps", db).iloc[0, 0]
    return jobs, grid_yaml


def test_refine_plans_the_jobs_plan_would_and_finds_the_peak(tmp_path):
    from ddsweep import api
    from ddsweep.refinement import refine_auto

    grid = write_grid(tmp_path / "syn.yaml", GRID)
    db = tmp_path / "r.duckdb"
    api.plan(grid, db)
    f = dd_test_error(37)
    fake_work(db, f)
    where = {"label_noise": ["0.2"]}
    r = api.refine(db, axis="width", budget=12, batch=3, where=where)
    assert r.log and r.integer and len(r.proposed) == 3 and r.new_jobs == 3 * 2 * 2  # x label_noise x seed
    again = api.refine(db, axis="width", budget=12, batch=3, where=where)
    assert again.proposed == [] and "pending" in again.note  # at most `batch` pending at a time
    r = refine_auto(db, "syn", lambda: fake_work(db, f), axis="width", budget=12, batch=3, where=where)
    assert r.estimate.at == interior_peak(f) and r.estimate.converged
    assert r.used <= 12 and not r.pending

    # every refined job is exactly what `plan` makes from the grid with those widths
    jobs, grid_yaml = _db_state(db)
    assert yaml.safe_load(grid_yaml) == GRID  # the stored grid is still the coarse one
    widths = sorted(set(jobs["width"]))
    full = write_grid(tmp_path / "full.yaml", {**GRID, "grid": {**GRID["grid"], "width": widths}})
    p = api.plan(full, db, dry_run=True)
    assert p.new == 0 and {j.job_id for j in p.jobs} == set(jobs["job_id"])
    assert (jobs["status"] == "done").all() and len(jobs) == len(widths) * 4

    # summary and the maps use the refined widths like any others
    s = api.summary(db, where=where)
    row = s[(s["curve"] == "model-wise") & (s["measure"] == "final")].iloc[0]
    assert row["points"] == len(widths) and row["peak_at"] == r.estimate.at
    from ddsweep.plot import curve
    curve(db, x="width", where=where, out=tmp_path / "c.png")
    assert (tmp_path / "c.png").exists()

    # the study can be deleted: rebuilt from the database, same answer, nothing new proposed
    for p in study_dir(db).iterdir():
        p.unlink()
    r2 = api.refine(db, axis="width", budget=12, batch=3, where=where)
    assert r2.proposed == [] and r2.estimate.at == r.estimate.at


def test_refine_threshold_brackets_the_crossing(tmp_path):
    from ddsweep import api
    from ddsweep.refinement import refine_auto

    grid = write_grid(tmp_path / "syn.yaml", {**GRID, "grid": {**GRID["grid"], "label_noise": [0.2]}})
    db = tmp_path / "r.duckdb"
    api.plan(grid, db)
    g = planted_train_error()
    work = lambda: fake_work(db, lambda w: 0.5, g)  # noqa: E731
    work()
    r = refine_auto(db, "syn", work, axis="width", target="threshold", budget=10, batch=2)
    assert r.estimate.at == 57 and r.estimate.bracket == (56, 57) and r.estimate.converged
    emc = api.emc(db).table  # the EMC table sees the refined widths too
    assert "57" in set(emc["threshold width"].astype(str))


def test_cli_refine_and_bad_input(tmp_path, cli):
    from ddsweep import api

    grid = write_grid(tmp_path / "syn.yaml", GRID)
    db = tmp_path / "r.duckdb"
    api.plan(grid, db)
    r = cli("refine", "--db", db, "--where", "label_noise=0.1")
    assert r.exit_code == 0, r.output
    assert "6 pending" in r.output and "run `ddsweep work" in r.output
    fake_work(db, dd_test_error(37))
    r = cli("refine", "--db", db, "--where", "label_noise=0.1", "--budget", "3")
    assert r.exit_code == 0, r.output
    assert "proposed width = 24, 66" in r.output and "bracketed by 15 and 110" in r.output
    bad = [
        (["--sweep", "nope"], "no such sweep"),
        (["--axis", "lr"], "not an axis of sweep syn's grid"),
        (["--axis", "n_train"], "only 400"),
        (["--axis", "seed"], "cannot be refined"),
        (["--budget", "0"], "--budget = 0"),
        (["--batch", "0"], "--batch = 0"),
        (["--target", "valley"], "'valley' is not one of 'peak', 'threshold'"),  # (a choice: --help lists them)
        (["--target", "threshold", "--early-stopped"], "--early-stopped applies to --target peak"),
        (["--cpus", "2"], "only with --auto"),
        ([], "label_noise takes several values"),
        (["--where", "label_noise=0.5"], "no such value"),
    ]
    for args, message in bad:
        r = cli("refine", "--db", db, *args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    r = cli("refine", "--db", tmp_path / "none.duckdb")
    assert r.exit_code == 2 and "no such database" in r.output


# ----------------------------------------------------------------------------- end to end, real training


@pytest.mark.slow
def test_refine_auto_trains_on_mnist1d(tmp_path, cli):
    """The wiring end to end with real (tiny) training: coarse grid, --auto, the refined jobs trained."""
    grid = write_grid(tmp_path / "g.yaml", {
        "name": "tiny-refine", "dataset": {"name": "mnist1d", "pool": 600, "test": 300},
        "model": {"name": "mlp", "depth": 2},
        "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "epochs": 6},
        "eval": {"every": 3},
        "grid": {"width": {"geom": [2, 64, 5]}, "n_train": [300], "label_noise": [0.2], "seed": [0]},
    })
    db = tmp_path / "r.duckdb"
    assert cli("plan", grid, "--db", db).exit_code == 0
    t = time.perf_counter()
    r = cli("refine", "--db", db, "--auto", "--cpus", "2", "--budget", "2", "--batch", "2")
    assert r.exit_code == 0, r.output
    assert "refined 2 new value(s) of width" in r.output and "7 job(s) trained" in r.output
    from ddsweep import api

    jobs = api.query("select width, status from jobs order by width", db)
    assert len(jobs) == 7 and (jobs["status"] == "done").all()
    s = api.summary(db)
    assert (s["points"] == 7).all()
    assert time.perf_counter() - t < 60


# ----------------------------------------------------------------------------- --select-on val

VAL_GRID = {**GRID, "dataset": {**GRID["dataset"], "val": 200},
            "grid": {**GRID["grid"], "label_noise": [0.2], "seed": [0]}}


def fake_work_val(db, test_error, val_error):
    """fake_work with a validation split: the val and test errors peak at different widths."""
    return finish_pending(db, lambda w: {"test_error": test_error(w), "train_error": 0.5, "val_error": val_error(w)},
                          first={"test_error": 0.9, "train_error": 0.9, "val_error": 0.9})


def test_refine_selects_on_validation_error(tmp_path, cli):
    """--select-on val locates the peak of the validation error: the test set chooses no point. Its
    study is its own (another objective), and the CLI says which error it follows."""
    from ddsweep import api
    from ddsweep.refinement import refine_auto

    db = tmp_path / "r.duckdb"
    api.plan(write_grid(tmp_path / "val.yaml", VAL_GRID), db)
    on_test, on_val = dd_test_error(23), dd_test_error(60)  # neither peak is a grid width
    work = lambda: fake_work_val(db, on_test, on_val)  # noqa: E731
    work()
    r = refine_auto(db, "syn", work, axis="width", budget=14, batch=2, select_on="val")
    assert r.metric == "val_error" and "val_error" in r.study
    assert abs(r.estimate.at - interior_peak(on_val)) <= 1 and r.estimate.converged, r.estimate
    val_peak = r.estimate.at
    t = refine_auto(db, "syn", work, axis="width", budget=30, batch=2)  # the test set's peak: another study
    assert t.metric == "test_error" and abs(t.estimate.at - interior_peak(on_test)) <= 1, t.estimate
    r = cli("refine", "--db", db, "--select-on", "val", "--budget", "30")
    assert r.exit_code == 0, r.output
    assert "peak of final validation error" in r.output and f"h = {val_peak}" in r.output

    plain = tmp_path / "plain.duckdb"
    api.plan(write_grid(tmp_path / "syn.yaml", {**GRID, "grid": {**GRID["grid"], "label_noise": [0.2]}}), plain)
    for d, args, message in [
        (plain, ["--select-on", "val"], "sweep syn has no validation split"),
        (db, ["--select-on", "val", "--target", "threshold"], "--select-on val applies to --target peak only"),
        (db, ["--select-on", "val", "--metric", "train_loss"], "--metric train_loss has no validation counterpart"),
        (db, ["--select-on", "train"], "'train' is not one of 'test', 'val'"),
    ]:
        r = cli("refine", "--db", d, *args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
