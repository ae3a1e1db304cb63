"""Figures from the database or a metric frame: heatmaps (maps), curves, the Deep Bootstrap.

Each function returns a matplotlib Figure, takes a database path or a frame as
`ddsweep.load_metrics` returns it, draws into a given `ax=` (one panel), and writes a
file (PNG/SVG/PDF by extension) only when `out` is given. The *_data functions
compute what a figure draws without drawing it.
"""

from ddsweep.plot.bootstrap import bootstrap, bootstrap_data
from ddsweep.plot.curve import curve, curve_data
from ddsweep.plot.heatmap import heatmap, heatmap_data
from ddsweep.plot.style import STYLES, FigureOptions

__all__ = ["heatmap", "curve", "bootstrap", "heatmap_data", "curve_data", "bootstrap_data", "FigureOptions",
           "STYLES"]
