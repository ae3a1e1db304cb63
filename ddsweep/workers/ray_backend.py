"""The Ray transport of `ddsweep work --ray ADDRESS`: worker slots as Ray actors.

The coordinator stays the one process that opens the database; only the "slot"
(start a worker, hand it a pack, receive its events, notice its death, kill it)
changes. Each slot is one Ray actor (`RayWorker`) holding `--cpus-per-job` CPUs and
`--gpus-per-job` GPUs of the cluster; `run(pack)` is a streaming generator that
yields the worker's events (metric rows every epoch, progress, job ends) while the
pack trains. A pump thread here forwards them into a local pipe, so the
coordinator's event loop, journal and flushes are the same as for local processes.

An actor that dies (its process killed, its node lost) ends its stream with an
error: the coordinator requeues its unfinished jobs (a failed attempt each, as for
a local worker) and they resume from their checkpoints in a fresh actor; the dead
actor is `ray.kill`ed first, so never two live copies of a job write.

This module imports Ray lazily and never imports torch (the actors do, on the nodes).
"""

from __future__ import annotations

import os
import queue
import threading

from ddsweep.errors import UserError
from ddsweep.workers.events import Idle, Started

INSTALL_HINT = "pip install 'ddsweep[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray: Ray is not installed here; {INSTALL_HINT}") from None
    return ray


class RayWorker:
    """A worker slot on the cluster (wrapped with ray.remote at run time; imports torch there)."""

    def __init__(self, slot: int, device: str, options, share: float = 1.0):
        import torch

        torch.set_num_threads(options.threads)
        self.slot, self.device, self.options = slot, device, options
        self.share = share
        self.stopping = False
        try:
            import ray

            self.node = ray.util.get_node_ip_address()
        except Exception:
            self.node = None

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        """Graceful stop: the running pack checkpoints at its epoch end and hands its jobs back."""
        self.stopping = True

    def run(self, pack: list[dict]):
        """Train `pack`, yielding its events' dicts as they happen (a Ray streaming generator)."""
        from ddsweep.workers.worker import run_pack

        events: queue.Queue = queue.Queue()
        end = object()
        failure: list[BaseException] = []

        def put(event):
            if isinstance(event, Started):
                event.node = self.node
            events.put(event.to_dict())

        def target():
            try:
                run_pack(pack, self.slot, self.device, put, lambda: self.stopping, self.options, self.share)
            except BaseException as e:  # reported as the actor's failure: its jobs are requeued
                failure.append(e)
            finally:
                events.put(end)

        thread = threading.Thread(target=target, name=f"ddsweep-pack-{self.slot}", daemon=True)
        thread.start()
        while True:
            event = events.get()
            if event is end:
                break
            yield event
        thread.join()
        if failure:
            raise failure[0]


class RayProcess:
    """Coordinator side of one actor; quacks like the local slot's process and task queue."""

    def __init__(self, ray, actor, index: int, writer, transport: "RayTransport | None" = None):
        self.ray, self.actor, self.index, self.writer = ray, actor, index, writer
        self.transport = transport
        self.lock = threading.Lock()
        self.alive = True
        self.ran = False  # the actor has sent an event: it was placed on a node and started
        self.never_ran = False  # ended before it ever ran (no node had room): its jobs were not at fault
        self.exitcode = None
        self.reason: str | None = None
        self.exiting = False
        self.pump: threading.Thread | None = None

    # the process side
    def is_alive(self) -> bool:
        """Alive; an actor still waiting for a node is given up when the live nodes have no room
        for it (a node was lost), so that its pack goes to a worker that runs."""
        if self.alive and not self.ran and self.transport is not None and self.transport.overcommitted():
            self.never_ran = True
            self._end("no live node of the Ray cluster has room for it (a node was lost)")
        return self.alive

    def kill(self) -> None:
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:
            pass
        if self.pump is None or not self.pump.is_alive():
            self._end("killed")

    def join(self, timeout: float | None = None) -> None:
        if self.pump is not None:
            self.pump.join(timeout)

    # the task-queue side
    def put(self, pack) -> None:
        if pack is None:  # no more work: the actor goes once its pack (if any) is done
            with self.lock:
                self.exiting = True
                busy = self.pump is not None and self.pump.is_alive()
            if not busy:
                self._end(None, code=0)
            return
        stream = self.actor.run.options(num_returns="streaming").remote(pack)
        self.pump = threading.Thread(target=self._pump, args=(stream,), name=f"ddsweep-ray-pump-{self.index}",
                                     daemon=True)
        self.pump.start()

    def _pump(self, stream) -> None:
        try:
            for ref in stream:
                event = self.ray.get(ref)
                self.ran = True
                self.writer.send(event)
            self.writer.send(Idle(slot=self.index).to_dict())
        except Exception as e:  # the actor died (process killed, node lost) or its pack raised
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self._end(f"Ray actor died: {type(e).__name__}: {first[:200]}")
            return
        with self.lock:
            exiting = self.exiting
        if exiting:
            self._end(None, code=0)

    def _end(self, reason: str | None, code=None) -> None:
        with self.lock:
            if not self.alive:
                return
            self.alive = False
            self.reason, self.exitcode = reason, code
        try:
            self.ray.kill(self.actor, no_restart=True)  # never two live copies of a job
        except Exception:
            pass
        try:
            self.writer.close()
        except OSError:
            pass


class RayTransport:
    """Slots as Ray actors on a cluster (or a local one started here); a ddsweep.workers.transport.Transport."""

    kind = "ray"

    def __init__(self, address: str, cpus: int | None, gpus_per_job: float, cpus_per_job: float,
                 jobs_per_device: int = 1):
        if gpus_per_job < 0:
            raise UserError(f"--gpus-per-job = {gpus_per_job}: must be 0 or more")
        if not cpus_per_job > 0:
            raise UserError(f"--cpus-per-job = {cpus_per_job}: must be more than 0")
        if cpus is not None and cpus < 1:
            raise UserError(f"--cpus = {cpus}: must be at least 1")
        ray = import_ray()
        self.ray = ray
        self.gpus_per_job, self.cpus_per_job = gpus_per_job, cpus_per_job
        self.started_here = False
        if not ray.is_initialized():
            try:
                if address in ("local", ""):
                    # (address="local": start one here, never join one that `ray start` left running)
                    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except ConnectionError as e:
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster there ({e}); "
                                "start one with `ray start --head`, or use --ray local") from None
            self.started_here = True
        resources = ray.cluster_resources()
        self.nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.total_cpus, self.total_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if gpus_per_job > 0:
            if self.total_gpus < gpus_per_job:
                self.close()
                raise UserError(f"--gpus-per-job {gpus_per_job}: the Ray cluster has {self.total_gpus:g} GPU(s)")
            n = min(int(self.total_gpus // gpus_per_job + 1e-9), int(self.total_cpus // cpus_per_job + 1e-9))
        else:
            n = int(self.total_cpus // cpus_per_job + 1e-9)
        if cpus is not None:
            n = min(n, cpus * jobs_per_device) if n else 0
        if n < 1:
            self.close()
            raise UserError(f"--cpus-per-job {cpus_per_job}: the Ray cluster has {self.total_cpus:g} CPU(s), "
                            "not enough for one worker")
        self.device = "cuda" if gpus_per_job > 0 else "cpu"
        self.slot_count = n
        self.actor_class = ray.remote(RayWorker)
        self.generation = 0
        self.processes: list[RayProcess] = []
        self._capacity: tuple[float, int] = (-1e9, n)  # (when measured, actors the live nodes can host)

    def capacity(self) -> int:
        """Actors the cluster's live nodes can host (measured at most once a second)."""
        import time

        measured, n = self._capacity
        if time.monotonic() - measured < 1.0:
            return n
        cpus = gpus = 0.0
        for node in self.ray.nodes():
            if node.get("Alive"):
                cpus += float(node.get("Resources", {}).get("CPU", 0))
                gpus += float(node.get("Resources", {}).get("GPU", 0))
        n = int(cpus // self.cpus_per_job + 1e-9)
        if self.gpus_per_job > 0:
            n = min(n, int(gpus // self.gpus_per_job + 1e-9))
        self._capacity = (time.monotonic(), n)
        return n

    def overcommitted(self) -> bool:
        """More live actors than the live nodes can host: one of them waits for a node that is gone."""
        self.processes = [p for p in self.processes if p.alive]
        return len(self.processes) > self.capacity()

    def slot_specs(self) -> list[tuple[str, dict, float]]:
        """(device, extra environment, share of the device's memory) per actor."""
        share = min(1.0, self.gpus_per_job) if self.gpus_per_job > 0 else 1.0
        return [(self.device, {}, share) for _ in range(self.slot_count)]

    def describe(self) -> str:
        return (f"Ray cluster: {self.nodes} node(s), {self.total_cpus:g} CPU(s), {self.total_gpus:g} GPU(s); "
                f"{self.slot_count} worker(s) of {self.cpus_per_job:g} CPU(s)"
                + (f" and {self.gpus_per_job:g} GPU(s)" if self.gpus_per_job else "") + " each")

    def start(self, slot, coordinator) -> None:
        """A fresh actor for `slot`, with a fresh pipe for its events; none (slot.process None) while
        the live nodes have no room for another (after a node was lost: fewer workers, none waiting)."""
        if len([p for p in self.processes if p.alive]) >= self.capacity():
            slot.process = None
            return
        slot.reader, writer = coordinator.ctx.Pipe(duplex=False)
        self.generation += 1
        actor = self.actor_class.options(
            num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_restarts=0, max_concurrency=2,
            name=f"ddsweep-{coordinator.owner}-{slot.index}-{self.generation}", namespace="ddsweep",
            # the coordinator is the owner: if it goes, so do its actors
            lifetime=None,
        ).remote(slot.index, slot.device, coordinator.options, slot.share)
        slot.process = RayProcess(self.ray, actor, slot.index, writer, transport=self)
        self.processes.append(slot.process)
        slot.tasks = slot.process
        if coordinator.stop.value:
            self.stopping([slot])

    def stopping(self, slots) -> None:
        """Graceful stop: tell every live actor (the local path shares a flag instead)."""
        for slot in slots:
            p = slot.process
            if isinstance(p, RayProcess) and p.alive:
                try:
                    p.actor.stop.remote()
                except Exception:
                    pass

    def usage(self, slots) -> str:
        busy = [s for s in slots if s.pack is not None]
        nodes = {s.node for s in busy if s.node}
        text = f"ray: {len(busy)}/{len(slots)} worker(s) busy on {len(nodes)}/{self.nodes} node(s)"
        if self.gpus_per_job:
            text += f", {len(busy) * self.gpus_per_job:g}/{self.total_gpus:g} GPU(s) in use"
        else:
            text += f", {len(busy) * self.cpus_per_job:g}/{self.total_cpus:g} CPU(s) in use"
        return text

    def close(self) -> None:
        if self.started_here:
            try:
                self.ray.shutdown()
            except Exception:
                pass
            self.started_here = False
