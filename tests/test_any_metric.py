"""Peaks, thresholds and curves on any stored metric (the Transformer figures plot test loss), and the
embedded text preset through the CLI."""

from __future__ import annotations

import pytest
import yaml

from ddsweep.analysis.emc import emc_table
from ddsweep.analysis.peaks import describe_lines, summarize
from ddsweep.exchange import import_frame
from tests.conftest import ROOT, finish_pending, write_grid
from tests.synthetic import model_wise

WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128]
# the test error peaks at h = 16; the test loss, planted apart from it, at h = 8 after a first minimum
# at h = 2, with a second descent to 1.1 at h = 128 (below the first minimum)
TEST_ERROR = [0.50, 0.40, 0.30, 0.38, 0.45, 0.33, 0.25, 0.22]
TRAIN_ERROR = [0.60, 0.50, 0.40, 0.30, 0.12, 0.05, 0.0, 0.0]
TEST_LOSS = [2.0, 1.5, 1.9, 2.5, 2.2, 1.6, 1.3, 1.1]
TRAIN_LOSS = [1.8, 1.4, 0.9, 0.6, 0.35, 0.2, 0.1, 0.05]


def planted():
    df = model_wise(TEST_ERROR, TRAIN_ERROR, WIDTHS)
    final = df["epoch"] == 100
    by_width = dict(zip(WIDTHS, zip(TEST_LOSS, TRAIN_LOSS)))
    df["test_loss"] = [by_width[w][0] if f else 3.0 for w, f in zip(df["width"], final)]
    df["train_loss"] = [by_width[w][1] if f else 3.0 for w, f in zip(df["width"], final)]
    return df


def test_summary_finds_the_planted_loss_peak():
    s = summarize(planted(), metric="test_loss")
    final = s[s["measure"] == "final"].iloc[0]
    assert final["metric"] == "test_loss"
    assert (final["first_min_at"], final["first_min"]) == (2, pytest.approx(1.5))
    assert (final["peak_at"], final["peak"]) == (8, pytest.approx(2.5))
    assert (final["best_after_at"], final["best_after"]) == (128, pytest.approx(1.1))
    assert final["second_descent"] == "below"
    assert final["threshold_at"] == 32  # still read from the train error
    lines = "\n".join(describe_lines(final))
    assert lines.startswith("model-wise, final test loss (") and "peak             2.500 at h = 8" in lines
    # the default is unchanged: the test error's peak
    assert summarize(planted()).query("measure == 'final'").iloc[0]["peak_at"] == 16


def test_emc_on_another_metric():
    t = emc_table(planted(), epsilon=0.4, metric="train_loss", all_epochs=True)
    last = t.table[t.table["epoch"] == 100].iloc[0]
    assert last["threshold"] == 16 and last["train_loss"] == pytest.approx(0.35) and last["crossing"] == "8-16"
    assert "train loss <= 0.4" in t.title
    assert emc_table(planted(), epsilon=0.1, all_epochs=True).table.query("epoch == 100").iloc[0]["threshold"] == 32
    with pytest.raises(Exception, match="--epsilon -1"):
        emc_table(planted(), epsilon=-1, metric="train_loss")


def test_summary_emc_and_curve_commands_take_a_metric(tmp_path, cli):
    db = tmp_path / "p.duckdb"
    import_frame(planted().drop(columns="job_id"), db, sweep="planted")
    r = cli("summary", "--db", db, "--metric", "test_loss")
    assert r.exit_code == 0, r.output
    assert "model-wise, final test loss" in r.output and "peak             2.500 at h = 8" in r.output
    assert "best after peak  1.100 at h = 128 (below the first minimum)" in r.output
    r = cli("summary", "--db", db, "--metric", "test_los")
    assert r.exit_code == 2 and "--metric test_los: not a stored metric" in r.output, r.output
    r = cli("emc", "--db", db, "--metric", "train_loss", "--epsilon", "0.4", "--all-epochs")
    assert r.exit_code == 0 and "train loss <= 0.4" in r.output and "8-16" in r.output, r.output
    out = tmp_path / "loss.png"
    r = cli("plot", "curve", "--db", db, "--metric", "test_loss", "--out", out)
    assert r.exit_code == 0 and out.stat().st_size > 10_000, r.output


def test_the_embedded_text_preset_runs_through_the_cli(tmp_path, cli):
    """sweeps/synthetic-transformer.yaml plans as shipped; at tiny size it trains, and summary reads test loss."""
    shipped = ROOT / "sweeps" / "synthetic-transformer.yaml"
    db = tmp_path / "r.duckdb"
    r = cli("plan", shipped, "--db", db, "--dry-run")
    assert r.exit_code == 0, r.output
    grid = yaml.safe_load(shipped.read_text())
    assert grid["model"]["name"] == "transformer" and grid["dataset"]["name"] == "synthetic_translation"
    grid["dataset"].update(pool=200, test=60)
    grid["model"]["layers"] = 1
    grid["train"].update(steps=20, warmup=5, inv_sqrt_steps=5, batch_size=20)
    grid["grid"].update(width=[4, 8, 12], n_train=[100])
    r = cli("plan", write_grid(tmp_path / "tiny.yaml", grid), "--db", db)
    assert r.exit_code == 0, r.output
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0 and "done 3, failed 0" in r.output, r.output
    r = cli("summary", "--db", db, "--metric", "test_loss")
    assert r.exit_code == 0 and "model-wise, final test loss" in r.output, r.output


def _finish_with(db, error, loss):
    """Finish every pending job with synthetic metrics: test error error(w), test loss loss(w)."""
    finish_pending(db, lambda w: {"test_error": error(w), "train_error": 0.5, "test_loss": loss(w)},
                   first={"test_error": 0.9, "train_error": 0.9, "test_loss": 3.0})


def test_refine_follows_the_peak_of_the_metric_asked_for(tmp_path):
    import copy
    import math

    from ddsweep import api
    from tests.conftest import TINY

    grid = copy.deepcopy(TINY)
    grid["grid"] = {"width": {"geom": [2, 300, 6]}, "n_train": [400], "label_noise": [0.2], "seed": [0]}
    db = tmp_path / "r.duckdb"
    api.plan(write_grid(tmp_path / "g.yaml", grid), db)

    def bump(at):
        return lambda w: 0.3 + 0.2 * math.exp(-(math.log(w / at)) ** 2)

    error, loss = bump(100), bump(9)  # the loss peaks at h = 9, the error at h = 100
    for _ in range(8):
        _finish_with(db, error, loss)
        r = api.refine(db, axis="width", budget=8, batch=2, metric="test_loss")
        if not r.proposed:
            break
    assert r.estimate.at in (8, 9, 10) and r.estimate.converged
    assert "test_loss" in r.study  # its own study, beside the test error's

