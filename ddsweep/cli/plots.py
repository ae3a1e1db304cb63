"""Commands that draw: plot heatmap, plot curve, plot bootstrap, report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ddsweep.errors import UserError

from ddsweep.cli.common import AXIS_METAVAR, DB, SELECT_ON, SWEEP, WHERE, SelectOn, app, out, plot_app, user_errors
from ddsweep.paths import output_file


# Figure options, shared by the plot commands (ddsweep.plot.style.FigureOptions says what each does).
DPI = typer.Option(None, "--dpi", help="Resolution of PNG output in dots per inch (default 150).")
SIZE = typer.Option(None, "--size", help="Figure size W,H in inches, e.g. --size 6,4 (default: from the panels).")
TITLE = typer.Option(None, "--title", help="Title text instead of the figure's own.")
NO_TITLE = typer.Option(False, "--no-title", help="No title.")
STYLE = typer.Option("lab", "--style", help="lab (method notes below the plot), paper (smaller serif type, no notes) or talk (large type).")


def _figure_options(dpi, size, title, no_title, style) -> dict:
    from ddsweep.plot.style import options, parse_size

    if no_title and title is not None:
        raise UserError("--title and --no-title: give one of them")
    o = options(dpi, parse_size(size) if size else None, False if no_title else title, style)
    return {"dpi": o.dpi, "size": o.size, "title": o.title, "style": o.style}


@plot_app.command("heatmap")
@user_errors
def plot_heatmap(db: Path = DB, sweep: Optional[str] = SWEEP,
                 x: str = typer.Option("width", "--x", metavar=AXIS_METAVAR, help="Axis across (width, n_train, epoch or another job column)."),
                 y: str = typer.Option("epoch", "--y", metavar=AXIS_METAVAR, help="Axis up (epoch, n_train or another job column)."),
                 metric: str = typer.Option("test_error", "--metric", help="Metric column coloured (any metric column)."),
                 contour: Optional[List[float]] = typer.Option(None, "--contour", help="Train-error level drawn as a contour; repeat for several (default 0.1; 0: none)."),
                 epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch read when neither axis is epoch (default: each job's last)."),
                 facet: str = typer.Option("label_noise", "--facet", help="One panel per value of this axis."),
                 row: Optional[str] = typer.Option(None, "--row", help="One panel row per value of this axis (default: the one other axis that varies)."),
                 log_color: bool = typer.Option(False, "--log-color", help="Logarithmic colour scale."),
                 no_emc: bool = typer.Option(False, "--no-emc", help="Leave out the EMC = n line (maps with an n_train axis)."),
                 where: Optional[List[str]] = WHERE,
                 out_path: Path = typer.Option(Path("heatmap.png"), "--out", help="Output file (.png, .svg, .pdf)."),
                 dpi: Optional[int] = DPI, size: Optional[str] = SIZE, title: Optional[str] = TITLE,
                 no_title: bool = NO_TITLE, style: str = STYLE):
    """Heatmap of a metric over two axes, mean over seeds, one panel per label-noise level.

    Examples:

      ddsweep plot heatmap --x width --y epoch --log-color --out map.png

      ddsweep plot heatmap --metric train_error --contour 0.1 --contour 0.01 --where width=8..64
    """
    output_file(out_path, "--out")  # (before reading anything: one line, nothing written)
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import heatmap

    levels = [0.1] if not contour else contour  # (0: no contour; checked by the plot)
    heatmap(db, sweep=sweep, x=x, y=y, metric=metric, contour=levels, facet=facet, row=row, epoch=epoch,
            log_color=log_color, emc_line=not no_emc, where=parse_where(where), out=out_path,
            **_figure_options(dpi, size, title, no_title, style))
    out.print(f"wrote {out_path}")


@plot_app.command("curve")
@user_errors
def plot_curve(db: Path = DB, sweep: Optional[str] = SWEEP,
               x: str = typer.Option("width", "--x", metavar=AXIS_METAVAR, help="Axis (width, n_train, or epoch)."),
               epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch to read (default: the last)."),
               hue: str = typer.Option("label_noise", "--hue", help="One line per value of this axis."),
               facet: Optional[str] = typer.Option(None, "--facet", help="One panel per value of this axis."),
               noisy_test: bool = typer.Option(False, "--noisy-test", help="Test error on the noisy test distribution: p + e(1 - pC/(C-1))."),
               classes: Optional[int] = typer.Option(None, "--classes", help="Classes C for --noisy-test (default: from the dataset)."),
               no_early_stopping: bool = typer.Option(False, "--no-early-stopping", help="Leave out the optimal-early-stopping curve."),
               select_on: SelectOn = SELECT_ON,
               where: Optional[List[str]] = WHERE,
               metric: str = typer.Option("test_error", "--metric", help="Drawn instead of the test error, with its train twin (test_loss: train_loss)."),
               out_path: Path = typer.Option(Path("curve.png"), "--out", help="Output file (.png, .svg, .pdf)."),
               dpi: Optional[int] = DPI, size: Optional[str] = SIZE, title: Optional[str] = TITLE,
               no_title: bool = NO_TITLE, style: str = STYLE):
    """Test and train error against an axis at the final (or a chosen) epoch, one line per noise level.

    Examples:

      ddsweep plot curve --x width --out curve.png

      ddsweep plot curve --x epoch --where width=43 --out epochwise.png
    """
    output_file(out_path, "--out")  # (before reading anything: one line, nothing written)
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import curve

    curve(db, sweep=sweep, x=x, epoch=epoch, hue=hue, facet=facet, noisy_test=noisy_test, classes=classes,
          early_stopping=not no_early_stopping, where=parse_where(where), out=out_path, select_on=select_on,
          metric=metric, **_figure_options(dpi, size, title, no_title, style))
    out.print(f"wrote {out_path}" + (" (test error on the noisy test distribution)" if noisy_test else ""))


@plot_app.command("bootstrap")
@user_errors
def plot_bootstrap(db: Path = DB, sweep: Optional[str] = SWEEP,
                   facet: Optional[str] = typer.Option(None, "--facet", help="One panel per value of this axis (default: the one other axis that varies, e.g. width)."),
                   where: Optional[List[str]] = WHERE,
                   metric: str = typer.Option("test_error", "--metric", help="Test metric drawn (any metric column, e.g. test_soft_error, the paper's)."),
                   out_path: Path = typer.Option(Path("bootstrap.png"), "--out", help="Output file (.png, .svg, .pdf)."),
                   dpi: Optional[int] = DPI, size: Optional[str] = SIZE, title: Optional[str] = TITLE,
                   no_title: bool = NO_TITLE, style: str = STYLE):
    """Deep Bootstrap: real- vs ideal-world test error (and real train error) against steps, with the gap.

    Examples:

      ddsweep plot bootstrap --metric test_soft_error --out bootstrap.png
    """
    output_file(out_path, "--out")  # (before reading anything: one line, nothing written)
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import bootstrap

    bootstrap(db, sweep=sweep, facet=facet, where=parse_where(where), out=out_path, metric=metric,
              **_figure_options(dpi, size, title, no_title, style))
    out.print(f"wrote {out_path}")


@app.command()
@user_errors
def report(db: Path = DB, sweep: Optional[str] = SWEEP,
           out_path: Path = typer.Option(Path("report.html"), "--out", help="Output file (.html)."),
           epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level for contours, EMC and thresholds."),
           figures: Optional[Path] = typer.Option(None, "--figures", help="Also write each figure as PNG into this folder.")):
    """One self-contained HTML page: grid, job status, maps, curves, EMC table and peak summary.

    Examples:

      ddsweep report --out report.html

      mkdir -p figures && ddsweep report --out report.html --figures figures
    """
    from ddsweep import api

    path = api.report(db, sweep=sweep, out=out_path, epsilon=epsilon, figures_dir=figures)
    out.print(f"wrote {path}")
