"""A durable, append-only log of events the coordinator received but has not stored yet.

Events count as received only once appended and fsynced here, so a coordinator
that dies, or a database held by a stray process, loses nothing: the next flush
(or the next `ddsweep work`, for a dead coordinator's journal) writes them.
Applying an event twice is harmless: metric rows are keyed by (job_id, epoch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock, Timeout


class Journal:
    def __init__(self, directory: str | Path, owner: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        safe = owner.replace(":", "_").replace("/", "_")
        self.path = self.dir / f"{safe}.jsonl"
        self._lock = FileLock(str(self.path) + ".lock")
        self._lock.acquire(timeout=0)  # held for our lifetime: marks the journal as live
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, events: list[dict], sync: bool = True) -> None:
        """Append events; `sync=False` leaves them to the OS (they survive the coordinator's death,
        not the machine's): for progress counters, which workers send every half second and which
        nothing needs kept."""
        if not events:
            return
        self._file.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def clear(self) -> None:
        """Everything appended so far is in the database."""
        self._file.truncate(0)
        self._file.seek(0)
        os.fsync(self._file.fileno())

    def close(self, remove: bool) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)
        self._lock.release()
        if remove:
            Path(self._lock.lock_file).unlink(missing_ok=True)


def read_events(path: Path) -> list[dict]:
    """Events of a journal file; a torn last line (killed mid-write) is skipped."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return events


def orphans(directory: str | Path, exclude: Path | None = None) -> list[tuple[Path, FileLock]]:
    """Journals whose coordinator is gone, each with its lock now held by us (not `exclude`, our own).

    A journal exists from before its coordinator's first lease to its clean exit, and its
    lock is held all that time, so a journal whose lock we can take proves its owner dead.
    """
    found = []
    d = Path(directory)
    if not d.exists():
        return found
    for path in sorted(d.glob("*.jsonl")):
        if exclude is not None and path == Path(exclude):
            continue
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a live coordinator owns it
        found.append((path, lock))
    return found
