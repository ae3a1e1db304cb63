"""The results database: one DuckDB file, written by one process at a time.

`Store.write()` takes a cross-process file lock before it opens the file read-write
(DuckDB allows one writing process per file, and unlocked open/insert/close
writers were seen to lose committed rows); `Store.read()` opens it read-only and
retries while a writer holds it. Both apply Alembic migrations as needed.
"""

from ddsweep.store.connection import Store

__all__ = ["Store"]
