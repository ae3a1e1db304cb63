"""From metric rows to the tables the maps are drawn from: seed means, final epochs,
early stopping, EMC and interpolation thresholds, double-descent peaks.

Everything here is a pure function of pandas DataFrames shaped like
`ddsweep.load_metrics()` (one row per job and evaluated epoch, with the job's axes):
frames in, frames out; no database (ddsweep.store.results reads it), no torch.
"""

from ddsweep.analysis.frames import (at_epoch, early_stopped, epoch_curves, final_epoch, final_means,
                                     free_axes, linked_axes, noisy_test_error, seed_mean, varying_axes)

__all__ = ["at_epoch", "early_stopped", "epoch_curves", "final_epoch", "final_means", "free_axes",
           "linked_axes", "noisy_test_error", "seed_mean", "varying_axes"]
