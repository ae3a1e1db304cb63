"""How the coordinator reaches its workers: the Transport protocol, and local worker processes.

A transport owns the "slot" side of `ddsweep work`: how many worker slots there are and
on what device, how a worker is started for a slot, how a graceful stop reaches it. The
coordinator (the one process that opens the database) is the same for all of them.
Implementations: LocalTransport (worker processes on this machine, below) and
RayTransport (Ray actors on a cluster, ddsweep.workers.ray_backend).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ddsweep.errors import UserError
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


def cuda_device_count() -> int:
    """GPUs torch can see, asked in a child process (this one never imports torch)."""
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True)
    try:
        return int(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def resolve_slots(cpus: int | None, gpus: str | None, jobs_per_device: int) -> list[tuple[str, dict, float]]:
    """(device, extra environment, share of the device's memory) per worker slot."""
    if cpus is not None and gpus is not None:
        raise UserError("--cpus and --gpus: give one of them")
    if jobs_per_device < 1:
        raise UserError(f"--jobs-per-device = {jobs_per_device}: must be at least 1")
    if gpus is not None:
        count = cuda_device_count()
        if count == 0:
            raise UserError(f"--gpus {gpus}: no CUDA device is available here; use --cpus N to train on the CPU")
        ids = [g.strip() for g in str(gpus).split(",") if g.strip()]
        for g in ids:
            if not g.isdigit() or int(g) >= count:
                raise UserError(f"--gpus {gpus}: no GPU {g!r} (this machine has {count}: 0..{count - 1})")
        return [("cuda", {"CUDA_VISIBLE_DEVICES": g}, 1 / jobs_per_device) for g in ids for _ in range(jobs_per_device)]
    n = cpus if cpus is not None else max(1, os.cpu_count() or 1)
    if n < 1:
        raise UserError(f"--cpus = {n}: must be at least 1")
    return [("cpu", {}, 1.0) for _ in range(n * jobs_per_device)]


class LocalTransport:
    """Slots as local worker processes: a task queue in, a pipe of events out, a shared stop flag.
    (A ddsweep.workers.transport.Transport.)"""

    kind = "local"

    def __init__(self, cpus: int | None = None, gpus: str | None = None, jobs_per_device: int = 1):
        self.specs = resolve_slots(cpus, gpus, jobs_per_device)

    def slot_specs(self) -> list[tuple[str, dict, float]]:
        return self.specs

    def start(self, slot: Slot, coordinator: Host) -> None:
        from ddsweep.workers.worker import worker_main

        # Fresh channels per process: a worker killed mid-write breaks only its own pipe.
        slot.tasks = coordinator.ctx.Queue()
        slot.reader, writer = coordinator.ctx.Pipe(duplex=False)
        saved = {k: os.environ.get(k) for k in slot.env}
        os.environ.update(slot.env)  # spawn copies the environment: pins CUDA_VISIBLE_DEVICES
        # The child starts with Ctrl-C ignored (an ignored signal stays ignored across exec):
        # the coordinator alone decides what a Ctrl-C does, even while the child is importing.
        sigint = None
        if threading.current_thread() is threading.main_thread():
            sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            slot.process = coordinator.ctx.Process(
                target=worker_main, name=f"ddsweep-worker-{slot.index}",
                args=(slot.index, slot.device, coordinator.options, slot.tasks, writer, coordinator.stop,
                      time.time(), slot.share),
                daemon=True)
            slot.process.start()
            writer.close()  # the child holds it now; EOF on reader then means the worker is gone
        finally:
            if sigint is not None:
                signal.signal(signal.SIGINT, sigint)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stopping(self, slots) -> None:
        """Graceful stop: nothing to send, the workers read the shared flag."""

    def describe(self) -> str:
        return ""

    def usage(self, slots) -> str:
        return ""

    def close(self) -> None:
        pass
