"""A durable, append-only log of events the coordinator received but has not stored yet.

Events count as received only once appended and fsynced here, so a coordinator
that dies, or a database held by a stray process, loses nothing: the next flush
(or the next `ddsweep work`, for a dead coordinator's journal) writes them.
Applying an event twice is harmless: metric rows are keyed by (job_id, epoch).

Each record is one line, `<CRC-32 of the JSON, 8 hex digits> <JSON>` (the JSON: the event's
`to_dict()`, ddsweep.workers.events, in UTF-8), so a record that
changed on disk is told from a good one. Records are written by orjson (8x faster than
the json module: at 100,000 metric rows a second the encoding was most of the
coordinator's time); an event holding a non-finite float (a diverged run's NaN loss,
which orjson would write as null) or a value orjson does not know is written by the
json module instead (NaN, Infinity), so NaN stays apart from a missing value. Both kinds
of line, and those of older versions, read back the same. Reading skips every unreadable record (not
UTF-8, a checksum that does not match, not JSON, not an event) and goes on with the
next; the caller warns once per file, naming the lines. Lines without a checksum (plain
JSON) were written by a ddsweep from before checksums and are read as they are.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import orjson
from filelock import FileLock, Timeout

from ddsweep.errors import StorageError, storage_fault
from ddsweep.workers.events import TERMINAL, Event, Finished, Metrics, Progress, Released, Retry, event_from_dict


class Journal:
    """A coordinator's journal file; a storage fault writing it is a StorageError naming the file."""

    def __init__(self, directory: str | Path, owner: str):
        self.dir = Path(directory)
        safe = owner.replace(":", "_").replace("/", "_")
        self.path = self.dir / f"{safe}.jsonl"
        with _faults(self.path):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.path) + ".lock")
            self._lock.acquire(timeout=0)  # held for our lifetime: marks the journal as live
            self._file = open(self.path, "ab")

    def append(self, events: list[Event], sync: bool = True) -> None:
        """Append events; `sync=False` leaves them to the OS (they survive the coordinator's death,
        not the machine's): for progress counters, which workers send every half second and which
        nothing needs kept."""
        if not events:
            return
        with _faults(self.path):
            self._file.write(b"".join(map(encode, events)))
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def clear(self) -> None:
        """Everything appended so far is in the database."""
        with _faults(self.path):
            self._file.truncate(0)
            self._file.seek(0)
            os.fsync(self._file.fileno())

    def close(self, remove: bool) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # (a failed flush of a full disk: said when it happened)
        if remove:
            self.path.unlink(missing_ok=True)
        self._lock.release()
        if remove:
            Path(self._lock.lock_file).unlink(missing_ok=True)


@contextmanager
def _faults(path: Path):
    try:
        yield
    except OSError as e:
        fault = storage_fault(e)
        if fault is None:
            raise
        raise StorageError(f"cannot write the journal {path}: {e.strerror or e}") from None


def encode(event: Event) -> bytes:
    """One journal record: the CRC-32 of the event's JSON (UTF-8), a space, the JSON, a newline."""
    data = event.to_dict()
    body = None
    if _finite(data):
        try:
            body = orjson.dumps(data)
        except TypeError:  # (a type orjson does not serialize, e.g. a numpy scalar: the json module's way)
            pass
    if body is None:
        body = json.dumps(data, separators=(",", ":")).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _finite(data: dict) -> bool:
    """False when a metric row holds a float that is not finite (or when their sum is not: a false
    alarm only costs the slower encoding). One C-level pass: a loop in Python cost more than orjson."""
    rows = data.get("rows")
    if not rows:
        return True
    return math.isfinite(sum(filter(float.__instancecheck__, chain.from_iterable(map(dict.values, rows)))))


@dataclass
class JournalContents:
    events: list[Event] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, why it was unreadable)

    def warning(self, path) -> str:
        """One line naming the file and the records skipped ('' when none was)."""
        if not self.skipped:
            return ""
        shown = ", ".join(f"line {n} ({why})" for n, why in self.skipped[:5])
        more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return (f"journal {path}: skipped {len(self.skipped)} unreadable record(s): {shown}{more}; "
                f"replayed the other {len(self.events)}")


def read_journal(path: Path) -> JournalContents:
    """The events of a journal file, skipping unreadable records; raises OSError if the file cannot be read."""
    out = JournalContents()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            event = decode(raw)
            if isinstance(event, str):
                out.skipped.append((number, event))
            else:
                out.events.append(event)
    return out


def decode(raw: bytes) -> Event | str:
    """The event of one record, or why it cannot be read."""
    if not raw.endswith(b"\n"):
        return "cut off mid-write"
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if not text.startswith("{"):  # (plain JSON: a journal from before checksums)
        crc, _, text = text.partition(" ")
        try:
            good = len(crc) == 8 and int(crc, 16) == zlib.crc32(text.encode("utf-8"))
        except ValueError:
            good = False
        if not good:
            return "checksum mismatch"
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # (NaN and Infinity, written by the json module: orjson reads strict JSON only)
            event = json.loads(text)
        except ValueError:
            return "not JSON"
    problem = _event_problem(event)
    if problem:
        return problem
    try:
        return event_from_dict(event)
    except (TypeError, ValueError):  # a field missing or of the wrong kind
        return "not an event"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _event_problem(e) -> str:
    """'' for an event the store can apply (the kinds the coordinator journals), else what is wrong."""
    if not isinstance(e, dict) or not isinstance(e.get("kind"), str):
        return "not an event"
    kind = e["kind"]
    if kind == Metrics.kind:
        rows = e.get("rows")
        if not isinstance(rows, list) or not all(
                isinstance(r, dict) and isinstance(r.get("job_id"), str) and _is_int(r.get("epoch"))
                and not any(isinstance(v, (dict, list)) for v in r.values())
                for r in rows):
            return "metrics event without valid rows"
        return ""
    if kind == Progress.kind:
        ok = (isinstance(e.get("job_ids"), list) and all(isinstance(j, str) for j in e["job_ids"])
              and _is_int(e.get("epoch")))
        return "" if ok else "progress event without job ids and epoch"
    if not isinstance(e.get("job_id"), str):
        return f"{kind} event without a job id"
    if kind == Finished.kind:
        return "" if e.get("status") in TERMINAL else "finished event without a status"
    if kind == Retry.kind:
        return "" if _is_int(e.get("failures")) and _is_int(e.get("attempts")) else "retry event without counts"
    if kind == Released.kind:
        return ""
    return f"unknown event kind {kind!r}"


def move_aside(path: Path) -> Path:
    """Rename an unreadable journal out of the way (kept for a person to look at); returns the new name."""
    for n in range(1000):
        target = path.with_name(path.name + (".unreadable" if n == 0 else f".unreadable{n}"))
        if not target.exists():
            os.replace(path, target)
            return target
    raise OSError(f"{path}: too many unreadable journals beside it")


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
