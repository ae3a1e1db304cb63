"""Figures from the database: heatmaps (maps), curves, the Deep Bootstrap. PNG/SVG/PDF by file extension."""

from ddsweep.plot.bootstrap import bootstrap
from ddsweep.plot.curve import curve
from ddsweep.plot.heatmap import heatmap

__all__ = ["heatmap", "curve", "bootstrap"]
