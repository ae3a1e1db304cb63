"""EMC, interpolation thresholds and peak summaries on synthetic tables with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from ddsweep.analysis.emc import critical_n, emc_over_n, emc_table, threshold_over_width
from ddsweep.analysis.frames import early_stopped, noisy_test_error, t975
from ddsweep.analysis.peaks import analyse_curve, describe_lines, extremes, find_peak, pooled_se, summarize
from ddsweep.errors import UserError
from ddsweep.exchange import import_frame
from tests.synthetic import model_wise, table

WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128]
# a planted peak at h = 16 after a first minimum at h = 4 (with a small wiggle at h = 2 on the way down),
# a second descent to 0.22 at h = 128 (below the first minimum); the training set is fitted from h = 32 on
PLANTED_TEST = [0.50, 0.40, 0.30, 0.38, 0.45, 0.33, 0.25, 0.22]
PLANTED_TRAIN = [0.60, 0.50, 0.40, 0.30, 0.12, 0.05, 0.0, 0.0]


# ----------------------------------------------------------------------------- EMC


def test_emc_interpolates_in_log_n_and_bounds_outside_the_grid():
    ns = [1000, 2000, 4000, 8000]
    value, bound = emc_over_n(ns, [0.0, 0.05, 0.15, 0.3], 0.1)
    assert bound == "" and value == pytest.approx(2000 * math.sqrt(2), rel=1e-12)
    assert emc_over_n(ns, [0.0, 0.0, 0.0, 0.05], 0.1) == (8000.0, ">")
    assert emc_over_n(ns, [0.2, 0.3, 0.4, 0.5], 0.1) == (1000.0, "<")
    assert emc_over_n(ns, [0.1, 0.2, 0.3, 0.4], 0.1) == (1000.0, "")  # exactly eps counts as fitted
    # not monotone: the largest fitted n counts
    value, bound = emc_over_n(ns, [0.0, 0.2, 0.05, 0.25], 0.1)
    assert bound == "" and value == pytest.approx(math.exp(math.log(4000) + 0.25 * math.log(2)))
    assert critical_n(2000 * math.sqrt(2), "", ns, 2.0) == [2000.0, 4000.0]
    assert critical_n(8000, ">", ns, 2.0) == []


def _sample_sweep(seeds=(0, 1), noise_amp=0.0):
    """EMC known per width: h=4 fits no n, h=16 fits up to between 2000 and 4000, h=64 fits all."""
    ns = [1000, 2000, 4000, 8000]
    final = {4: [0.2, 0.3, 0.4, 0.5], 16: [0.0, 0.05, 0.15, 0.3], 64: [0.0, 0.0, 0.0, 0.02]}
    cells = {}
    for w, errs in final.items():
        for n, err in zip(ns, errs):
            cells[(w, n, 0.2)] = lambda e, err=err: (0.3, {0: 0.9, 10: 0.5, 100: err}[e])
    # symmetric seed noise: the seed mean is exact
    noise = (lambda w, n, p, s, e: (0.0, noise_amp * (1 if s == 0 else -1))) if noise_amp else None
    return table(cells, seeds=seeds, noise=noise)


def test_emc_table_with_a_sample_axis():
    df = _sample_sweep(noise_amp=0.01)
    r = emc_table(df, epsilon=0.1, factor=2)
    assert r.mode == "sample"
    t = r.table.set_index("width")
    assert list(t.index) == [4, 16, 64]
    assert (t["epoch"] == 100).all()  # the last epoch by default
    assert t.loc[4, "bound"] == "<" and t.loc[4, "EMC"] == "< 1,000"
    assert t.loc[16, "bound"] == "" and t.loc[16, "emc"] == pytest.approx(2000 * math.sqrt(2), rel=1e-9)
    assert t.loc[16, "EMC"] == "2,828" and t.loc[16, "critical n"] == "2,000, 4,000"
    assert t.loc[64, "bound"] == ">" and t.loc[64, "EMC"] == "> 8,000"
    assert (t["seeds"] == 2).all()
    # at epoch 10 every train error is 0.5: nothing fitted anywhere
    r10 = emc_table(df, epochs=[10])
    assert (r10.table["bound"] == "<").all()
    assert len(emc_table(df, all_epochs=True).table) == 3 * 3
    with pytest.raises(UserError, match="not an evaluated epoch"):
        emc_table(df, epochs=[7])


def test_interpolation_threshold_per_epoch_folds_unchanged_epochs():
    widths = [2, 4, 8, 16, 32]
    # smallest width with train error <= 0.1: epoch 10 -> 32, 20 -> 16, 40 -> 8, 80 -> 8, 160 -> 4; epoch 0 -> none
    first_fit = {0: None, 10: 32, 20: 16, 40: 8, 80: 8, 160: 4}
    cells = {}
    for w in widths:
        def fn(e, w=w):
            f = first_fit[e]
            return 0.3, (0.05 if f is not None and w >= f else 0.4)
        cells[(w, 1000, 0.1)] = fn
    df = table(cells, epochs=list(first_fit))
    r = emc_table(df, epsilon=0.1)
    assert r.mode == "threshold"
    t = r.table
    assert t["epoch"].tolist() == [0, 10, 20, 40, 160]
    assert t["last_epoch"].tolist() == [0, 10, 20, 80, 160]
    assert t["threshold"].tolist() == [32, 32, 16, 8, 4]
    assert t["bound"].tolist() == [">", "", "", "", ""]
    assert t["crossing"].tolist() == ["> 32", "16-32", "8-16", "4-8", "2-4"]
    assert r.folded == 1
    full = emc_table(df, all_epochs=True).table
    assert full["epoch"].tolist() == [0, 10, 20, 40, 80, 160]
    assert threshold_over_width(widths, [0.0] * 5, 0.1) == (2.0, "<")


# ----------------------------------------------------------------------------- peaks


def test_find_peak_prefers_the_most_prominent_interior_maximum():
    assert find_peak([0.5, 0.4, 0.3, 0.2]) == (None, math.nan) or find_peak([0.5, 0.4, 0.3, 0.2])[0] is None
    i, prom = find_peak(PLANTED_TEST)
    assert i == 4 and prom == pytest.approx(0.45 - 0.30)
    # a taller bump wins over an earlier one
    y = [0.6, 0.40, 0.55, 0.45, 0.60, 0.42]
    assert find_peak(y)[0] == 4
    e = extremes(y)
    assert (e["first_min"], e["peak"], e["best_after"]) == (1, 4, 5)


def test_summary_planted_peak_exact():
    df = model_wise(PLANTED_TEST, PLANTED_TRAIN, WIDTHS, n=1000, p=0.2)
    s = summarize(df, epsilon=0.1)
    final = s[s["measure"] == "final"].iloc[0]
    assert final["curve"] == "model-wise" and final["epoch"] == 100 and final["points"] == 8
    assert (final["first_min_at"], final["first_min"]) == (4, pytest.approx(0.30))
    assert (final["peak_at"], final["peak"]) == (16, pytest.approx(0.45))
    assert (final["best_after_at"], final["best_after"]) == (128, pytest.approx(0.22))
    assert final["second_descent"] == "below"
    assert final["threshold_at"] == 32 and final["threshold_bound"] == ""
    assert final["peak_near_threshold"] is True
    assert final["gap"] == pytest.approx(0.15)
    assert final["within_noise"] is None  # one seed: noise unknown
    # early-stopped: epoch 10 is final + 0.05 everywhere, so the best epoch is the last: same curve
    es = s[s["measure"] == "early-stopped"].iloc[0]
    assert (es["peak_at"], es["peak"]) == (16, pytest.approx(0.45))
    text = "\n".join(describe_lines(final))
    assert "peak             0.450 at h = 16" in text and "h = 32: the peak is within one grid step" in text


def test_second_descent_above_the_first_minimum_and_a_peak_far_from_the_threshold():
    test = [0.50, 0.30, 0.35, 0.45, 0.40, 0.38, 0.36, 0.35]
    train = [0.5, 0.4, 0.3, 0.2, 0.15, 0.12, 0.11, 0.05]  # fitted only at h = 128: 3 steps from the peak at 8
    s = summarize(model_wise(test, train, WIDTHS), epsilon=0.1)
    r = s[s["measure"] == "final"].iloc[0]
    assert (r["first_min_at"], r["peak_at"], r["best_after_at"]) == (2, 8, 128)
    assert r["second_descent"] == "above"
    assert r["threshold_at"] == 128 and r["peak_near_threshold"] is False


def test_early_stopped_curve_without_a_peak():
    early = [0.45, 0.40, 0.35, 0.30, 0.28, 0.26, 0.25, 0.24]  # monotone: early stopping removes the peak
    df = model_wise(PLANTED_TEST, PLANTED_TRAIN, WIDTHS, test_early=early)
    es = early_stopped(df, ["width"]).set_index("width")
    assert es["test_error"].tolist() == pytest.approx([min(a, b, 0.9) for a, b in zip(early, PLANTED_TEST)])
    s = summarize(df)
    r = s[s["measure"] == "early-stopped"].iloc[0]
    assert math.isnan(r["peak"]) and r["first_min_at"] == 128 and r["first_min"] == pytest.approx(0.22)
    assert "no peak" in "\n".join(describe_lines(r))


def test_noisy_seeds_peak_above_noise_exact_standard_error():
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.01, size=(len(WIDTHS), 4))
    offsets -= offsets.mean(axis=1, keepdims=True)  # planted means stay exact
    idx = {w: i for i, w in enumerate(WIDTHS)}
    noise = lambda w, n, p, s, e: (offsets[idx[w], s] if e == 100 else 0.0, 0.0)  # noqa: E731
    df = model_wise(PLANTED_TEST, PLANTED_TRAIN, WIDTHS, seeds=(0, 1, 2, 3), noise=noise)
    r = summarize(df).query("measure == 'final'").iloc[0]
    assert (r["first_min_at"], r["peak_at"], r["best_after_at"]) == (4, 16, 128)
    assert r["peak"] == pytest.approx(0.45, abs=1e-12)
    pooled = np.mean(offsets.var(axis=1, ddof=1))  # equal seeds per cell: the plain mean of variances
    se = math.sqrt(pooled * (1 / 4 + 1 / 4))
    assert r["se_gap"] == pytest.approx(se, rel=1e-9)
    assert r["seeds"] == 4 and r["within_noise"] is False


def test_noisy_seeds_peak_within_noise():
    test = [0.50, 0.40, 0.30, 0.303, 0.305, 0.29, 0.28, 0.27]  # a 0.005 bump
    train = [0.6, 0.5, 0.4, 0.3, 0.2, 0.05, 0.0, 0.0]
    offsets = np.tile([0.05, -0.05, 0.03, -0.03], (len(WIDTHS), 1))
    idx = {w: i for i, w in enumerate(WIDTHS)}
    noise = lambda w, n, p, s, e: (offsets[idx[w], s] if e == 100 else 0.0, 0.0)  # noqa: E731
    r = summarize(model_wise(test, train, WIDTHS, seeds=(0, 1, 2, 3), noise=noise)).query("measure == 'final'").iloc[0]
    assert r["peak_at"] == 16 and r["gap"] == pytest.approx(0.005)
    var = np.var([0.05, -0.05, 0.03, -0.03], ddof=1)
    assert r["se_gap"] == pytest.approx(math.sqrt(var / 2))
    assert r["within_noise"] is True
    assert "WITHIN NOISE" in "\n".join(describe_lines(r))


def test_pooled_se_is_unknown_with_one_seed():
    assert math.isnan(pooled_se([math.nan] * 3, [1, 1, 1], 0, 2))
    res = analyse_curve([1, 2, 3], [0.3, 0.5, 0.2], [math.nan] * 3, [1, 1, 1], 3.0, "")
    assert res["peak_at"] == 2 and res["peak_near_threshold"] is True and res["within_noise"] is None


def test_sample_wise_summary_peak_at_emc():
    ns = [500, 1000, 2000, 4000, 8000]
    test = [0.30, 0.33, 0.40, 0.32, 0.25]
    train = [0.0, 0.02, 0.08, 0.2, 0.3]  # largest fitted n: 2000 (EMC between 2000 and 4000)
    cells = {(64, n, 0.1): (lambda e, te=te, tr=tr: (te, tr)) for n, te, tr in zip(ns, test, train)}
    df = table(cells, epochs=(0, 50))
    s = summarize(df)
    r = s[(s["curve"] == "sample-wise") & (s["measure"] == "final")].iloc[0]
    assert r["axis"] == "n_train" and r["width"] == 64
    assert (r["first_min_at"], r["peak_at"], r["best_after_at"]) == (500, 2000, 8000)
    assert r["threshold_at"] == 2000 and r["threshold_bound"] == "" and r["peak_near_threshold"] is True
    assert r["second_descent"] == "below"
    assert not (s["curve"] == "model-wise").any()  # one width: no model-wise curve


def test_summary_needs_an_axis_with_three_values():
    df = model_wise([0.3, 0.2], [0.1, 0.0], [4, 8])
    with pytest.raises(UserError, match="at least 3 values"):
        summarize(df)


def test_noisy_test_transform_and_t_quantiles():
    assert noisy_test_error(0.0, 0.2, 10) == pytest.approx(0.2)
    # an always-wrong classifier on clean labels is right on a noisy label with probability p/(C-1)
    assert noisy_test_error(1.0, 0.2, 10) == pytest.approx(1 - 0.2 / 9)
    assert noisy_test_error(0.9, 0.2, 10) == pytest.approx(0.9)  # chance stays chance
    assert t975([2, 5, 100]).tolist() == pytest.approx([12.706, 2.776, 1.96])
    assert math.isnan(t975([1])[0])


# ----------------------------------------------------------------------------- through the database and CLI


def _planted_db(tmp_path):
    db = tmp_path / "planted.duckdb"
    df = model_wise(PLANTED_TEST, PLANTED_TRAIN, WIDTHS, n=1000, p=0.2).drop(columns="job_id")
    import_frame(df, db, sweep="planted")
    extra = _sample_sweep().drop(columns="job_id")
    import_frame(extra, db, sweep="samples")
    return db


def test_emc_and_summary_commands_on_a_database(tmp_path, cli):
    db = _planted_db(tmp_path)
    r = cli("summary", "--db", db, "--sweep", "planted")
    assert r.exit_code == 0, r.output
    assert "peak             0.450 at h = 16" in r.output
    assert "first minimum    0.300 at h = 4" in r.output
    assert "best after peak  0.220 at h = 128 (below the first minimum)" in r.output
    assert "at h = 32: the peak is within one grid step of it" in r.output
    r = cli("emc", "--db", db, "--sweep", "samples")
    assert r.exit_code == 0, r.output
    assert "2,828" in r.output and "> 8,000" in r.output and "< 1,000" in r.output
    r = cli("emc", "--db", db, "--sweep", "planted", "--all-epochs")
    assert r.exit_code == 0 and "32" in r.output
    r = cli("summary", "--db", db)  # two sweeps: must choose
    assert r.exit_code == 2 and "--sweep" in r.output
    r = cli("emc", "--db", db, "--sweep", "samples", "--epsilon", "1.5")
    assert r.exit_code == 2 and "--epsilon" in r.output
    from ddsweep import api

    s = api.summary(db, "planted")
    assert s.query("measure == 'final'").iloc[0]["peak_at"] == 16


def test_sql_views_match_pandas(tmp_path):
    from ddsweep import api

    db = tmp_path / "v.duckdb"
    offsets = {0: 0.02, 1: -0.01, 2: -0.01}
    df = model_wise(PLANTED_TEST, PLANTED_TRAIN, WIDTHS, seeds=(0, 1, 2),
                    noise=lambda w, n, p, s, e: (offsets[s], 0.0)).drop(columns="job_id")
    import_frame(df, db, sweep="v")
    cur = api.query("select width, epoch, seeds, test_error, test_error_sem from curves "
                    "where epoch = 100 order by width", db)
    assert cur["seeds"].tolist() == [3] * 8
    assert cur["test_error"].tolist() == pytest.approx(PLANTED_TEST)
    sem = np.std([0.02, -0.01, -0.01], ddof=1) / math.sqrt(3)
    assert cur["test_error_sem"].tolist() == pytest.approx([sem] * 8)
    thr = api.query("select epoch, threshold_width from interpolation_thresholds order by epoch", db)
    assert thr.set_index("epoch").loc[100, "threshold_width"] == 32
    db2 = tmp_path / "s.duckdb"
    import_frame(_sample_sweep().drop(columns="job_id"), db2, sweep="s")
    g = api.query("select width, largest_fitted_n, smallest_unfitted_n from emc_grid where epoch = 100 "
                  "order by width", db2)
    assert g["largest_fitted_n"].tolist()[1:] == [2000, 8000]
    assert pd.isna(g["largest_fitted_n"].iloc[0])
    assert g["smallest_unfitted_n"].tolist()[:2] == [1000, 4000]
