"""Running jobs: the coordinator (the one process that writes the database) and its workers.

Workers never open the database. They train packs and send events (metric rows,
progress, job ends) over a queue; the coordinator journals them durably, then
writes them in short batched transactions under the store's write lock.
"""

__all__ = ["work", "WorkResult"]


def __getattr__(name):
    # Lazy: worker processes import ddsweep.workers.worker, and must not pull in the
    # coordinator's database stack (sqlalchemy, duckdb) next to torch.
    if name in __all__:
        from ddsweep.workers import coordinator

        return getattr(coordinator, name)
    raise AttributeError(name)
