"""How the coordinator reaches its workers: the Transport protocol.

A transport owns the "slot" side of `ddsweep work`: how many worker slots there are and
on what device, how a worker is started for a slot, how a graceful stop reaches it. The
coordinator (the one process that opens the database) is the same for all of them.
Implementations: LocalTransport (worker processes on this machine, ddsweep.workers.coordinator)
and RayTransport (Ray actors on a cluster, ddsweep.workers.ray_backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ddsweep.workers.options import WorkOptions


@dataclass
class Slot:
    """One worker place of the coordinator, and what it has given that worker."""

    index: int
    device: str
    env: dict
    share: float = 1.0  # of the device's memory (1 / the workers sharing it)
    process: Any = None  # the worker: is_alive(), kill(), join(timeout), exitcode (set by Transport.start)
    tasks: Any = None  # queue of packs, coordinator -> worker
    reader: Any = None  # pipe end of the worker's events, worker -> coordinator
    pack: list[dict] | None = None  # jobs assigned and not finished yet
    done_ids: set = field(default_factory=set)  # jobs of `pack` that ended (or will be retried)
    retry: list[dict] = field(default_factory=list)  # jobs of `pack` to requeue when the worker is free
    node: str | None = None  # where its current pack runs (Ray: the node's address)
    progress: float = 0.0  # share of `pack`'s epochs done (its last progress event)


class Host(Protocol):
    """What a transport uses of the coordinator that starts workers."""

    ctx: Any  # the multiprocessing context (spawn): pipes, queues, processes
    stop: Any  # the shared stop flag (.value)
    owner: str
    options: WorkOptions


@runtime_checkable
class Transport(Protocol):
    kind: str  # "local" or "ray": local PIDs mean something only for "local"

    def slot_specs(self) -> list[tuple[str, dict, float]]:
        """(device, extra environment, share of the device's memory) per worker slot."""

    def start(self, slot: Slot, coordinator: Host) -> None:
        """Start a fresh worker for `slot` and set on it: `process` (is_alive(), kill(), join(timeout),
        exitcode, and optionally `reason`: how it died), `tasks` (put(pack), put(None): no more work)
        and `reader` (a connection whose recv() gives the worker's event dicts, EOF once it is gone)."""

    def stopping(self, slots: list[Slot]) -> None:
        """Graceful stop (the coordinator's `stop` flag is set): make the running packs checkpoint
        at their epoch end and hand their jobs back."""

    def describe(self) -> str:
        """A line on where the workers run, shown at start ('' for nothing to say)."""

    def usage(self, slots: list[Slot]) -> str:
        """A live line on the workers' use ('' for none)."""

    def close(self) -> None:
        """Release what the transport holds (a Ray session started here)."""
