"""Running jobs: the coordinator (the one process that writes the database) and its workers.

Workers never open the database. They train packs and send events (metric rows,
progress, job ends) over a queue; the coordinator journals them durably, then
writes them in short batched transactions under the store's write lock.
"""

from ddsweep.workers.coordinator import WorkResult, work

__all__ = ["work", "WorkResult"]
