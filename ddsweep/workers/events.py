"""The worker protocol: every message a worker sends its coordinator, and the states of a job.

A worker (a local process or a Ray actor) trains packs and reports what happens as
events; the coordinator journals the durable ones, then writes them to the database
(ddsweep.store.jobs.apply_events). This module is the one place they are defined.

On the wire (the pipe from a worker, the stream of a Ray actor) and in the journal an
event is the plain dict of `to_dict()`: `{"kind": "finished", "job_id": ..., ...}`,
one JSON object per journal line; `event_from_dict` reads it back (keys it does not
know are ignored, missing optional ones take their defaults, so journals written by
an older ddsweep still replay).

Every event carries the `slot` (worker index) that sent it, set by the worker; events
the coordinator makes itself (released, retry, a failed attempt's end) carry the slot
they concern, or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import ClassVar


class JobStatus(str, Enum):
    """A job's state: the `jobs.status` column holds these strings."""

    PENDING = "pending"
    RUNNING = "running"  # leased to a coordinator (training, or queued there)
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"

    def __str__(self) -> str:  # formats as its database string, in SQL and messages alike
        return self.value

    __format__ = str.__format__

    @property
    def sql(self) -> str:
        """The status as an SQL string literal: `'done'` (a fixed word, safe to format into SQL)."""
        return f"'{self.value}'"


TERMINAL = (JobStatus.DONE, JobStatus.FAILED, JobStatus.DIVERGED)  # finished: a job's end says which
RETRYABLE = (JobStatus.FAILED, JobStatus.DIVERGED)  # `ddsweep retry` requeues these
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def sql_list(statuses) -> str:
    """`'done', 'failed'`: statuses for an SQL IN (...) list (the values are fixed strings)."""
    return ", ".join(JobStatus(s).sql for s in statuses)


@dataclass(kw_only=True)
class Event:
    """Base of every worker message; `kind` names it on the wire."""

    kind: ClassVar[str] = ""
    durable: ClassVar[bool] = False  # changes the database: journaled (fsynced) before it counts as received
    slot: int | None = None

    def to_dict(self) -> dict:
        """The wire and journal form (shallow: metric rows are shared, not copied)."""
        out = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:  # an absent key reads back as None
                out[f.name] = value.value if isinstance(value, Enum) else value
        return out


@dataclass(kw_only=True)
class Metrics(Event):
    """Metric rows of evaluated epochs (the columns of ddsweep.store.jobs.METRIC_COLUMNS)."""

    kind: ClassVar[str] = "metrics"
    durable: ClassVar[bool] = True
    rows: list[dict]


@dataclass(kw_only=True)
class Progress(Event):
    """A pack finished `epoch` of `epochs`; `job_ids`: its members still training."""

    kind: ClassVar[str] = "progress"
    durable: ClassVar[bool] = True  # journaled without fsync (counters nothing needs kept)
    epoch: int
    epochs: int
    step: int = 0
    job_ids: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Finished(Event):
    """A job ended: done (trained to `epochs`), diverged, or failed (`error` says why)."""

    kind: ClassVar[str] = "finished"
    durable: ClassVar[bool] = True
    job_id: str
    status: JobStatus
    error: str | None = None
    epochs: int | None = None  # the horizon it was trained to (a job whose horizon grew meanwhile reopens)
    failures: int | None = None  # failed attempts so far (set by the coordinator)
    attempts: int | None = None
    run_options: dict | None = None  # how it was trained (WorkOptions.recorded; set by the coordinator)

    def __post_init__(self):
        self.status = JobStatus(self.status)


@dataclass(kw_only=True)
class Released(Event):
    """A job handed back unfinished (stopping): pending again, resumes from its checkpoint."""

    kind: ClassVar[str] = "released"
    durable: ClassVar[bool] = True
    job_id: str


@dataclass(kw_only=True)
class Retry(Event):
    """A failed attempt that is tried again (made by the coordinator): the job stays leased."""

    kind: ClassVar[str] = "retry"
    durable: ClassVar[bool] = True
    job_id: str
    error: str | None = None
    failures: int
    attempts: int


@dataclass(kw_only=True)
class Started(Event):
    """A worker began a (sub-)pack of `job_ids`; `node`: where (Ray)."""

    kind: ClassVar[str] = "started"
    job_ids: list[str]
    config: dict
    epochs: int
    pid: int | None = None
    node: str | None = None


@dataclass(kw_only=True)
class Checkpointed(Event):
    """A pack's members saved their checkpoints at `epoch`."""

    kind: ClassVar[str] = "checkpoint"
    job_ids: list[str]
    epoch: int


@dataclass(kw_only=True)
class Timing(Event):
    """Seconds spent (summed into WorkResult.timing): a pack's, or a worker's start-up."""

    kind: ClassVar[str] = "timing"
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    setup_seconds: float = 0.0
    train_samples: int = 0
    startup_seconds: float = 0.0


TIMING_KEYS = tuple(f.name for f in fields(Timing) if f.name != "slot")


@dataclass(kw_only=True)
class WorkerWarning(Event):
    """Something the user should know (printed and kept in WorkResult.warnings)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(kw_only=True)
class Fault(Event):
    """The storage failed under a worker (disk full, folder unwritable: ddsweep.errors.storage_fault):
    its jobs are handed back and the run stops."""

    kind: ClassVar[str] = "fault"
    message: str


@dataclass(kw_only=True)
class Idle(Event):
    """The worker finished its pack and waits for the next."""

    kind: ClassVar[str] = "idle"


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in (
    Metrics, Progress, Finished, Released, Retry, Started, Checkpointed, Timing, WorkerWarning, Fault, Idle)}
_FIELDS = {kind: {f.name for f in fields(cls)} for kind, cls in EVENT_TYPES.items()}


def event_from_dict(data: dict) -> Event:
    """The event of a wire/journal dict; raises ValueError for an unknown kind."""
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown worker event kind {kind!r}")
    known = _FIELDS[kind]
    return cls(**{k: v for k, v in data.items() if k in known})
