"""Commands that read the results as numbers: emc, summary, refine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ddsweep import tables
from ddsweep.cli.common import DB, FORMAT, SELECT_ON, SWEEP, WHERE, SelectOn, app, choices, note, out, show, user_errors
from ddsweep.errors import UserError
from ddsweep.refinement.propose import TARGETS
from ddsweep.tables import Format

Target = choices("Target", TARGETS)


@app.command()
@user_errors
def emc(db: Path = DB, sweep: Optional[str] = SWEEP,
        epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level that counts as fitted."),
        factor: float = typer.Option(2.0, "--factor", help="Critical regime: n within this factor of EMC."),
        epoch: Optional[List[int]] = typer.Option(None, "--epoch", help="Epochs to show (repeatable; default: see below)."),
        all_epochs: bool = typer.Option(False, "--all-epochs", help="Every evaluated epoch."),
        where: Optional[List[str]] = WHERE,
        metric: str = typer.Option("train_error", "--metric", help="What counts as fitted: this metric <= epsilon (any stored metric, e.g. train_loss)."),
        fmt: Optional[Format] = FORMAT):
    """Effective model complexity per width and epoch (with several n_train), else the interpolation threshold.

    Default epochs: the last one with a sample axis; without one, every epoch at
    which the threshold width changes. csv, tsv and json add the numbers behind the
    shown text (emc, bound, threshold); notes go to stderr there.

    Examples:

      ddsweep emc --db results.duckdb --all-epochs

      ddsweep emc --metric train_loss --epsilon 0.5 --format json
    """
    from ddsweep import api
    from ddsweep.analysis.frames import parse_where

    r = api.emc(db, sweep, epsilon=epsilon, factor=factor, epochs=epoch, all_epochs=all_epochs,
                where=parse_where(where), metric=metric)
    fmt = tables.chosen(fmt)
    shown = r.table
    if fmt in (Format.table, Format.markdown):  # (for reading: the numbers as the shown text has them)
        shown = shown.drop(columns=[c for c in ("emc", "bound", "threshold") if c in shown.columns])
    else:
        note(r.title, fmt)  # (on stderr: the table stays parseable)
    show([(r.title, shown)], fmt)
    for line in r.notes:
        note(f"note: {line}", fmt)
    if r.folded:
        note(f"{r.folded} epochs with an unchanged threshold folded into the row before (--all-epochs lists each)", fmt)


@app.command()
@user_errors
def summary(db: Path = DB, sweep: Optional[str] = SWEEP,
            epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level for the interpolation threshold."),
            epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch to read (default: each job's last)."),
            select_on: SelectOn = SELECT_ON,
            where: Optional[List[str]] = WHERE,
            metric: str = typer.Option("test_error", "--metric", help="The curve's metric: any stored metric, e.g. test_loss."),
            fit: float = typer.Option(0.01, "--fit", help="Deep Bootstrap: the real world has fitted its samples once its train error is below this."),
            fmt: Optional[Format] = typer.Option(None, "--format", case_sensitive=False, show_default=False,
                                                 help="The numbers as a table: table, csv, tsv, json or markdown "
                                                 "(default: the summary in words).")):
    """First minimum, peak and second descent of each model-/sample-wise curve, vs the interpolation threshold;
    on a sweep with both worlds, the Deep Bootstrap numbers of each real/ideal pair.

    Examples:

      ddsweep summary --db results.duckdb

      ddsweep summary --where "width>=8" --metric test_loss --format csv
    """
    from ddsweep import api
    from ddsweep.analysis.bootstrap import NoWorldPairs, describe_all
    from ddsweep.analysis.frames import parse_where
    from ddsweep.analysis.peaks import describe_lines

    chosen = parse_where(where)
    try:
        boot = api.bootstrap_summary(db, sweep, where=chosen, fit=fit)
    except NoWorldPairs:
        boot = None
    try:
        peaks = api.summary(db, sweep, epsilon=epsilon, epoch=epoch, where=chosen, select_on=select_on,
                            metric=metric)
    except UserError:
        if boot is None:
            raise
        peaks = None  # (no model-/sample-wise curve: a bootstrap sweep over a few widths)
    if fmt is not None:  # the frames ddsweep.summary() and ddsweep.api.bootstrap_summary() return
        show([(title, df) for title, df in (("peaks", peaks), ("Deep Bootstrap", boot)) if df is not None], fmt)
        return
    for _, r in peaks.iterrows() if peaks is not None else ():
        for line in describe_lines(r):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    if boot is not None:
        out.print("Deep Bootstrap (real world - ideal world, seed means):", highlight=False, markup=False)
        for line in describe_all(boot):
            out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
@user_errors
def refine(db: Path = DB, sweep: Optional[str] = SWEEP,
           axis: str = typer.Option("width", "--axis", help="Grid axis to refine (width, n_train, lr, ...)."),
           target: Target = typer.Option("peak", "--target", help="peak: the test-error peak; threshold: the smallest value with train error <= epsilon."),
           budget: int = typer.Option(8, "--budget", help="New axis values in total (over all refine calls)."),
           batch: int = typer.Option(2, "--batch", help="New values proposed per round (at most this many pending at a time)."),
           early_stopped: bool = typer.Option(False, "--early-stopped", help="Peak of the early-stopped test error (minimum over epochs) instead of the final one."),
           epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level of the threshold."),
           log: Optional[bool] = typer.Option(None, "--log/--linear", help="Sample the axis in log / linear space (default: log when the grid is geometric)."),
           where: Optional[List[str]] = WHERE,
           metric: str = typer.Option("test_error", "--metric", help="The peak of this metric (any stored metric, e.g. test_loss)."),
           select_on: SelectOn = typer.Option("test", "--select-on", help="Set whose error (or loss) chooses the next points: "
                                         "test, or val (the validation split of a dataset with val: N)."),
           auto: bool = typer.Option(False, "--auto", help="Alternate refine and work until the budget is spent."),
           cpus: Optional[int] = typer.Option(None, "--cpus", help="With --auto: CPU worker processes."),
           gpus: Optional[str] = typer.Option(None, "--gpus", help="With --auto: GPU ids, e.g. 0,1.")):
    """Propose new axis values near the peak (or threshold) from the finished results; plan them as jobs.

    Examples:

      ddsweep refine --axis width --budget 8 --batch 2

      ddsweep refine --target threshold --auto --cpus 2
    """
    from ddsweep import api
    from ddsweep.analysis.frames import parse_where
    from ddsweep.refinement import describe

    extra = {k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None}
    if extra and not auto:
        raise UserError(f"--{' and --'.join(extra)}: only with --auto (otherwise run `ddsweep work`)")

    def show(r):
        for line in describe(r):
            out.print(line, highlight=False, markup=False, soft_wrap=True)

    done_rounds = []

    def on_round(r):
        done_rounds.append(r)
        out.print(f"-- round {len(done_rounds)}", highlight=False)
        show(r)

    r = api.refine(db, sweep, axis=axis, target=target, budget=budget, batch=batch, early_stopped=early_stopped,
                   epsilon=epsilon, log=log, where=parse_where(where), auto=auto, metric=metric, select_on=select_on,
                   on_round=on_round if auto else None, **extra)
    if auto:
        short = {"width": "h", "n_train": "n"}.get(r.axis, r.axis)
        at = f"{short} = {r.estimate.at:g}" if r.estimate.at is not None else "not found"
        out.print(f"refined {r.used} new value(s) of {r.axis} in {len(r.rounds)} round(s), {r.trained} job(s) "
                  f"trained in {r.seconds:.1f}s; {r.target}: {at}", highlight=False, soft_wrap=True)
    else:
        show(r)
        if r.proposed:
            out.print(f"next: ddsweep work --db {db}, then ddsweep refine again", highlight=False)
    out.print(f"study: {r.storage}", highlight=False, soft_wrap=True)
