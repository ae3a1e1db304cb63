"""Figures from the database: heatmaps (maps) and curves. PNG/SVG/PDF by file extension."""

from ddsweep.plot.curve import curve
from ddsweep.plot.heatmap import heatmap

__all__ = ["heatmap", "curve"]
