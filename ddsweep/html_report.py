"""`ddsweep report`: one self-contained HTML page about a sweep.

The grid, the job status, every map and curve that applies to the sweep's axes, the
EMC / interpolation-threshold table and the peak summary; figures are embedded as
base64 PNG at twice the page's width in pixels (sharp on high-density screens, shown
full width), so the page is one file that opens anywhere (no network, no scripts).
Tables right-align numbers, each column at one precision, and leave out columns
with no values.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.analysis.emc import emc_table
from ddsweep.analysis.frames import free_axes, varying_axes
from ddsweep.analysis.peaks import describe, summarize
from ddsweep.axes import CELL_AXES
from ddsweep.errors import UserError
from ddsweep.plot.curve import curve_figure
from ddsweep.plot.heatmap import heatmap_figure
from ddsweep.plot.style import png_bytes

MAX_LEVELS = 4  # panels per extra axis in the report's figures
PAGE_PX = 1068  # the page's content width in CSS pixels (max-width 1100px less padding)
FIGURE_INCHES = 10  # narrower figures are widened to this (their layout redone), then shown full width


@dataclass
class Figure:
    slug: str
    title: str
    caption: str
    png: bytes | None = None
    skipped: str | None = None


def build_report(db, sweep: str | None = None, out="report.html", epsilon: float = 0.1,
                 figures_dir=None, dpi: int | None = None) -> Path:
    """Write the report for `sweep` to `out` (.html); with figures_dir, also each figure as PNG there."""
    from ddsweep import __version__
    from ddsweep.store import results

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: a report is an .html file")
    name, df = results.load_sweep(db, sweep)
    jobs = results.status(db, name)
    grid_path, grid_yaml = results.stored_grid(db, name) or (None, None)

    figures = figures_for(df, name, epsilon, dpi)
    emc = _section(lambda: emc_table(df, epsilon=epsilon))
    peaks = _section(lambda: summarize(df, epsilon=epsilon))

    if figures_dir:
        d = Path(figures_dir)
        d.mkdir(parents=True, exist_ok=True)
        for f in figures:
            if f.png:
                (d / f"{f.slug}.png").write_bytes(f.png)

    parts = [_HEAD.format(title=html.escape(f"ddsweep report: {name}"))]
    parts.append(f"<h1>ddsweep report: {html.escape(name)}</h1>")
    parts.append(f"<p class='meta'>database <code>{html.escape(str(db))}</code> &middot; generated "
                 f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by ddsweep {__version__} &middot; "
                 f"{df['job_id'].nunique()} runs, {len(df):,} metric rows</p>")
    parts.append("<nav>" + " &middot; ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("grid", "grid"), ("status", "jobs"), ("maps", "maps"), ("curves", "curves"), ("emc", "EMC"),
        ("summary", "peaks"))) + "</nav>")

    parts.append("<h2 id='grid'>Grid</h2>")
    parts.append(_table(_axes_table(df)))
    if grid_yaml:
        parts.append(f"<details><summary>grid file {html.escape(str(grid_path or ''))}</summary>"
                     f"<pre>{html.escape(grid_yaml)}</pre></details>")

    parts.append("<h2 id='status'>Jobs</h2>")
    parts.append(_table(jobs))

    for anchor, heading, kind in (("maps", "Maps", "map"), ("curves", "Curves", "curve")):
        parts.append(f"<h2 id='{anchor}'>{heading}</h2>")
        chosen = [f for f in figures if f.slug.startswith(kind)]
        for f in chosen:
            parts.append(_figure_html(f))
        if not chosen:
            parts.append("<p>none applies to this sweep's axes</p>")

    parts.append("<h2 id='emc'>EMC and the interpolation threshold</h2>")
    if isinstance(emc, str):
        parts.append(f"<p class='skip'>{html.escape(emc)}</p>")
    else:
        parts.append(f"<p>{html.escape(emc.title)}</p>")
        for note in emc.notes:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        t = emc.table.drop(columns=[c for c in ("emc", "bound", "threshold") if c in emc.table.columns])
        parts.append(_table(t))
        if emc.folded:
            parts.append(f"<p class='note'>{emc.folded} epochs with an unchanged threshold are folded into the "
                         "row before (epoch .. last_epoch); <code>ddsweep emc --all-epochs</code> lists each.</p>")

    parts.append("<h2 id='summary'>Peaks</h2>")
    if isinstance(peaks, str):
        parts.append(f"<p class='skip'>{html.escape(peaks)}</p>")
    else:
        parts.append("<ul>" + "".join(f"<li>{html.escape(describe(r))}</li>" for _, r in peaks.iterrows()) + "</ul>")
        parts.append(_table(summary_table(peaks)))
    parts.append("</body></html>\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(out)
    return out


def summary_table(peaks: pd.DataFrame) -> pd.DataFrame:
    """`summarize` as a compact table: one row per curve, positions next to values."""
    from ddsweep.analysis.peaks import _fmt_level, _isnan, _tri

    def at(r, what):
        v, x = r[what], r[f"{what}_at"]
        name = {"width": "h", "n_train": "n"}[r["axis"]]
        return "" if _isnan(v) else f"{v:.3f} at {name} = {x:g}"

    rows = []
    for _, r in peaks.iterrows():
        fixed = ", ".join(_fmt_level(k, r[k]) for k in ("label_noise", "n_train", "width", "lr", "batch_size")
                          if k in r and k != r["axis"] and not _isnan(r[k]))
        thr = r["threshold_at"]
        name = {"width": "h", "n_train": "n"}[r["axis"]]
        thr_text = "" if _isnan(thr) else {"": f"{name} = {thr:g}", "<": f"{name} <= {thr:g}" if r["axis"] == "width"
                                            else f"EMC < {thr:g}", ">": f"{name} > {thr:g}" if r["axis"] == "width"
                                            else f"EMC > {thr:g}"}[r["threshold_bound"]]
        near = {True: "yes", False: "no", None: ""}[_tri(r["peak_near_threshold"])]
        noise = ("" if _tri(r["within_noise"]) is None else
                 f"{'WITHIN noise' if r['within_noise'] else 'above noise'} ({r['gap']:.3f} vs 2 s.e. {2 * r['se_gap']:.3f})")
        rows.append({"curve": r["curve"], "measure": r["measure"], "at": f"{fixed}; epoch {r['epoch']}",
                     "first minimum": at(r, "first_min"), "peak": at(r, "peak"),
                     "best after peak": at(r, "best_after"), "vs first min": r["second_descent"],
                     f"threshold (train err <= {r['epsilon']:g})": thr_text, "peak within 1 step": near,
                     "noise": noise or ("unknown (1 seed)" if r["seeds"] < 2 else "")})
    return pd.DataFrame(rows)


def _section(fn):
    try:
        return fn()
    except UserError as e:
        return f"not available: {e}"


def _levels(df: pd.DataFrame, axis: str, k: int = MAX_LEVELS) -> list:
    """Up to k values of an axis, spread evenly over its range of grid positions."""
    v = sorted(df[axis].dropna().unique())
    if len(v) <= k:
        return v
    return [v[i] for i in sorted(set(np.linspace(0, len(v) - 1, k).round().astype(int)))]


def figures_for(df: pd.DataFrame, name: str, epsilon: float = 0.1, dpi: int | None = None) -> list[Figure]:
    """Every map and curve that applies to the sweep's axes (at most MAX_LEVELS panels per extra axis).
    dpi None: each figure at twice the page width in pixels (between 144 and 300 dpi)."""
    varying = varying_axes(df)
    has_w = "width" in varying
    has_n = "n_train" in varying
    extra = free_axes(df, ("width", "n_train", "label_noise"))  # (one axis per linked group)
    # hold axes beyond the drawn ones at a few values (first extra axis) or their most common value (others)
    base_where = {}
    for a in extra[1:]:
        base_where[a] = [df[a].mode().iloc[0]]
    specs = []
    contour = [epsilon]
    if has_w:
        specs.append(("map-width-epoch-test", "Test error over width and epoch",
                      "Seed-mean test error (log colour scale) with the train-error contour at epsilon and, "
                      "epoch-wise, the double-descent ridge.",
                      lambda w: heatmap_figure(df, name, x="width", y="epoch", metric="test_error", contour=contour,
                                               log_color=True, where=w), ["n_train"] + extra[:1]))
        specs.append(("map-width-epoch-train", "Train error over width and epoch",
                      "Seed-mean train error on the noisy labels; the contour marks where it reaches epsilon.",
                      lambda w: heatmap_figure(df, name, x="width", y="epoch", metric="train_error",
                                               contour=contour, where=w), ["n_train"] + extra[:1]))
    if has_w and has_n:
        specs.append(("map-width-ntrain-test", "Test error over width and n at the last epoch",
                      "Seed-mean test error at each job's last epoch; the dashed line is EMC = n.",
                      lambda w: heatmap_figure(df, name, x="width", y="n_train", metric="test_error",
                                               contour=contour, log_color=True, where=w), extra[:1]))
    if has_n:
        specs.append(("map-ntrain-epoch-test", "Test error over n and epoch",
                      "Seed-mean test error; the dashed line is EMC = n at each epoch.",
                      lambda w: heatmap_figure(df, name, x="n_train", y="epoch", metric="test_error",
                                               contour=contour, log_color=True, where=w), ["width"] + extra[:1]))
    if has_w and df["width"].nunique() >= 2:
        specs.append(("curve-width", "Model-wise: error vs width",
                      "At each job's last epoch, with the optimal-early-stopping curve (minimum over epochs "
                      "of the seed-mean test error).",
                      lambda w: curve_figure(df, name, x="width", where=w), ["n_train"] + extra[:1]))
        if (df["label_noise"] > 0).any():
            specs.append(("curve-width-noisy", "Model-wise, on the noisy test distribution",
                          "The same curves with test error converted to the noisy test distribution.",
                          lambda w: curve_figure(df, name, x="width", where=w, noisy_test=True),
                          ["n_train"] + extra[:1]))
    if has_n:
        specs.append(("curve-ntrain", "Sample-wise: error vs n",
                      "At each job's last epoch, with the optimal-early-stopping curve.",
                      lambda w: curve_figure(df, name, x="n_train", where=w), ["width"] + extra[:1]))
    specs.append(("curve-epoch", "Epoch-wise: error vs epoch",
                  "Whole runs, one line per width.",
                  lambda w: curve_figure(df, name, x="epoch", where=w, hue="width" if has_w else "label_noise",
                                         facet="label_noise" if has_w and "label_noise" in varying else None),
                  ["n_train"] + extra[:1]))

    figures = []
    for slug, title, caption, make, limited in specs:
        where = dict(base_where)
        notes = []
        for a in limited:
            if a in varying and df[a].nunique() > MAX_LEVELS:
                where[a] = _levels(df, a)
                notes.append(f"{a} shown at {', '.join(f'{v:g}' for v in where[a])} of {df[a].nunique()} values")
        if slug == "curve-epoch" and has_w and has_n:
            where["n_train"] = [df["n_train"].max()]
            notes.append(f"n_train = {df['n_train'].max():g}")
        for a, v in base_where.items():
            notes.append(f"{a} held at {v[0]}")
        try:
            fig = make(where)
            w, h = fig.get_size_inches()
            if w < FIGURE_INCHES:  # full width at the type size of a wide figure, not a small one blown up
                fig.set_size_inches(FIGURE_INCHES, h * min(FIGURE_INCHES / w, 1.3))
            png = png_bytes(fig, dpi=dpi or int(np.clip(round(2 * PAGE_PX / fig.get_figwidth()), 144, 300)))
            figures.append(Figure(slug, title, caption + (f" ({'; '.join(notes)})" if notes else ""), png))
        except UserError as e:
            figures.append(Figure(slug, title, caption, skipped=str(e)))
    return figures


def _figure_html(f: Figure) -> str:
    if f.png is None:
        return f"<h3>{html.escape(f.title)}</h3><p class='skip'>skipped: {html.escape(f.skipped or '')}</p>"
    data = base64.b64encode(f.png).decode("ascii")
    return (f"<figure id='{f.slug}'><h3>{html.escape(f.title)}</h3>"
            f"<img src='data:image/png;base64,{data}' alt='{html.escape(f.title)}'>"
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def _axes_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for a in list(CELL_AXES) + ["seed"]:
        if a not in df.columns:
            continue
        v = sorted(df[a].dropna().unique())
        shown = [f"{x:g}" if isinstance(x, (float, int, np.integer, np.floating)) else str(x) for x in v]
        text = ", ".join(shown) if len(shown) <= 24 else f"{', '.join(shown[:10])}, ..., {', '.join(shown[-4:])}"
        rows.append({"axis": a, "values": len(v), "grid": text})
    epochs = sorted(df["epoch"].unique())
    rows.append({"axis": "evaluated epochs", "values": len(epochs),
                 "grid": f"{epochs[0]} .. {epochs[-1]}" if epochs else ""})
    return pd.DataFrame(rows)


def _table(df: pd.DataFrame) -> str:
    """An HTML table: columns with no value left out, numbers right-aligned at one precision per column."""
    df = df[[c for c in df.columns if df[c].map(_has_value).any()]]
    cols = []
    for c in df.columns:
        numeric = df[c].map(lambda v: not _has_value(v) or isinstance(v, (int, float, np.integer, np.floating))
                            and not isinstance(v, bool)).all()
        right = numeric or df[c].map(lambda v: not _has_value(v) or bool(_NUMBER_TEXT.match(str(v)))).all()
        cols.append((c, _number_format(df[c]) if numeric else str, right))
    head = "".join(f"<th{' class=num' if r else ''}>{html.escape(str(c))}</th>" for c, _, r in cols)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for (c, f, r), v in zip(cols, row):
            text = f(v) if _has_value(v) else ""
            cells.append(f"<td{' class=num' if r else ''}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='t'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


# Text that is a number, a bound or a range ("> 300", "227-300", "<= 0.1"): aligned as numbers are.
_NUMBER_TEXT = re.compile(r"^\s*[<>=]*\s*[-+]?[\d.,]+(e[-+]?\d+)?(\s*-\s*[\d.,]+)?\s*$", re.I)


def _has_value(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return False
    if isinstance(v, (float, np.floating)):
        return not np.isnan(v)
    return str(v) != ""


def _number_format(s: pd.Series):
    """One format for a numeric column: whole numbers as such, else 3 significant digits of its largest value
    (0.087 next to 0.900; 213 next to 45)."""
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if not v.size or np.all(v == np.round(v)):
        return lambda x: f"{int(x)}" if float(x).is_integer() else f"{x:g}"
    top = np.abs(v).max()
    decimals = int(np.clip(2 - np.floor(np.log10(top)), 0, 6)) if top > 0 else 0
    return lambda x: f"{float(x):.{decimals}f}"


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; margin-bottom: .2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em;
       margin-top: 2em; }}
h3 {{ font-size: 1.05em; margin: 1.2em 0 .4em; }}
.meta, .note, figcaption {{ color: #555; font-size: .92em; }} .skip {{ color: #a33; }}
nav a {{ color: #2a5db0; }} code, pre {{ font: 13px ui-monospace, Menlo, Consolas, monospace; }}
pre {{ background: #f6f6f6; padding: .8em; overflow-x: auto; }}
figure {{ margin: 1em 0 2em; }} img {{ width: 100%; height: auto; border: 1px solid #eee; }}
table.t {{ border-collapse: collapse; font-size: .88em; margin: .5em 0; }}
table.t th, table.t td {{ padding: .25em .6em; border-bottom: 1px solid #e4e4e4; text-align: left; }}
table.t th {{ background: #f3f3f3; }}
table.t .num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>"""
