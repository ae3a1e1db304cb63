"""From metric rows to the tables the maps are drawn from (seed means, final epochs)."""

from ddsweep.analysis.frames import at_epoch, final_epoch, pick_sweep, seed_mean

__all__ = ["at_epoch", "final_epoch", "pick_sweep", "seed_mean"]
