"""Adaptive refinement of one axis of a sweep: find the peak (or the threshold) with few runs.

Three layers, each usable on its own:

1. **Proposal logic** (pure; no database, no Optuna): `locate` reads the current
   estimate off the finished cells -- the double-descent peak (the most prominent
   interior local maximum of the seed-mean test error, exactly as `ddsweep summary`
   finds it) or the interpolation threshold (the smallest axis value whose seed-mean
   train error is <= epsilon) -- together with the open interval that must hold the
   true one: the peak's two grid neighbours, or the last unfitted and first fitted
   value. `propose` splits the widest gap inside that bracket (gaps between finished
   and pending values; in log space on a log axis) at its midpoint, rounded to the
   axis's resolution (integers; 3 significant digits on float axes), and repeats for
   a batch. Nothing already run, pending or failed is proposed again. `simulate`
   drives it with a function you evaluate directly.
2. **Optuna layer**: the proposals come from an Optuna sampler (`RefineSampler`,
   whose `sample_independent` calls `propose`) through ask/tell on a study kept in
   Optuna's journal file storage beside the database
   (`results.duckdb.optuna/<sweep>-<axis>-<target>.log`). Each refine first re-syncs
   every cell of the database into the study (finished: COMPLETE with its value;
   pending: RUNNING; failed: FAIL; RUNNING trials whose jobs finished are told their
   value) and rebuilds the study from the database when the two disagree, so the
   file can be deleted at any time.
3. **Database wiring** (`refine`, in wiring.py): reads the sweep's stored grid and results under
   the write lock, asks the study, and plans each proposal as the jobs `ddsweep plan`
   would make for the stored grid with the axis replaced by the proposed values.

Imports Optuna lazily and never torch (this process opens the database).

Modules: propose (layer 1), study (layer 2), wiring (layer 3).
"""

from ddsweep.refinement.propose import (EPSILON, FLOAT_DIGITS, TARGETS, Axis, Estimate, is_geometric, locate,
                                        propose, simulate)
from ddsweep.refinement.study import Cell, NoProposal, ask, make_sampler, study_dir, study_name, sync_study
from ddsweep.refinement.wiring import REFINABLE, RefineResult, check_args, describe, refine, refine_auto

__all__ = [
    "EPSILON", "FLOAT_DIGITS", "REFINABLE", "TARGETS", "Axis", "Cell", "Estimate", "NoProposal", "RefineResult",
    "ask", "check_args", "describe", "is_geometric", "locate", "make_sampler", "propose", "refine", "refine_auto",
    "simulate", "study_dir", "study_name", "sync_study",
]
