"""`ddsweep work`: lease jobs, fan packs out to worker processes, store what they report.

The coordinator is the only process of a sweep that opens the database, and it
holds it only for short batched flushes (every `flush_every` seconds and at each
job end), so readers get in between. Events are journaled before they count as
received; a database held by someone else delays flushes, never loses rows.

Leases: every job this coordinator has claimed carries its `lease_owner` and a
`lease_until` that each write renews (and a heartbeat-only write renews while no
events arrive). A worker process that dies hands its jobs back at once (retried up
to `retries` times); a coordinator that dies leaves its journal, which the next
`ddsweep work` replays before it requeues the dead coordinator's jobs. Jobs whose
coordinator cannot be proven dead are reclaimed when their lease runs out.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from ddsweep.errors import (EXIT_JOBS_FAILED, EXIT_OK, EXIT_UNFINISHED, DatabaseBusy, StorageError, UserError,
                            signal_exit_code)
from ddsweep.store import Store
from ddsweep.store import jobs as store_jobs
from ddsweep.workers.events import TIMING_KEYS, Event, JobStatus, Released
from ddsweep.workers.journal import Journal, orphans
from ddsweep.workers.options import WorkOptions
from ddsweep.workers.packing import PLAN_MAX_PACKS, cost, make_packs, plan_slots
from ddsweep.workers.progress import Display
from ddsweep.workers.receive import Receiving
from ddsweep.workers.recovery import Recovery
from ddsweep.workers.transport import LocalTransport, Slot, Transport


@dataclass
class WorkResult:
    done: int = 0
    failed: int = 0
    diverged: int = 0
    released: int = 0
    retried: int = 0  # failed attempts that were tried again (--retries)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # summed over packs: seconds in training steps / in evaluation / building the pack; samples trained;
    # summed over local workers: seconds from their launch to ready to train (interpreter, import torch)
    timing: dict = field(default_factory=lambda: {key: 0 for key in TIMING_KEYS})
    signal: int | None = None  # the first SIGINT/SIGTERM that stopped the run, if any
    scope: dict | None = None  # jobs of the scope per status at the end (None: the database was busy)

    @property
    def exit_code(self) -> int:
        """What `ddsweep work` exits with (ddsweep.errors): 0 only when every job of the scope
        ended done or diverged; 128 + the signal when stopped by one, jobs handed back."""
        if self.signal is not None:
            return signal_exit_code(self.signal)
        scope = self.scope if self.scope is not None else {JobStatus.FAILED: self.failed}
        if scope.get(JobStatus.FAILED):
            return EXIT_JOBS_FAILED
        if scope.get(JobStatus.PENDING) or scope.get(JobStatus.RUNNING):
            return EXIT_UNFINISHED
        return EXIT_OK

    def count_end(self, status: JobStatus) -> None:
        if status == JobStatus.DONE:
            self.done += 1
        elif status == JobStatus.DIVERGED:
            self.diverged += 1
        else:
            self.failed += 1


def work(db: str | Path = "results.duckdb", cpus: int | None = None, gpus: str | None = None,
         jobs_per_device: int = 1, sweep: str | None = None, threads: int = 1, pack_size: int | None = None,
         lease_seconds: float = 120.0, flush_every: float = 5.0, checkpoint_every: float = 30.0,
         show_progress: bool = True, flush_wait: float = 1.0, retries: int = 2, ray: str | None = None,
         gpus_per_job: float = 0.0, cpus_per_job: float = 1.0, checkpoint_dir: str | Path | None = None,
         compile: bool | None = None, cuda_graphs: bool | None = None, dense_members: bool | None = None,
         pack_memory_gb: float | None = None) -> WorkResult:
    """Train every pending job (of `sweep`, or all) with local worker processes; returns counts.

    `lease_seconds`: how long a job stays leased to this coordinator without a heartbeat
    (after that another `ddsweep work` may take it over); `retries`: how many more times a
    job is tried after a failed attempt (an exception, or its worker process died).

    `ray`: a Ray cluster's address (or "local": start one here, or use the one this
    process already has) whose actors train the packs instead of local processes, each
    with `cpus_per_job` CPUs and `gpus_per_job` GPUs; `cpus` then caps the number of
    actors. `checkpoint_dir` (default `<db>.ckpt`) must be reachable from every node.

    GPU speed settings of conv models (ddsweep.models.speed; None: from $DDSWEEP_COMPILE,
    $DDSWEEP_CUDA_GRAPHS, $DDSWEEP_DENSE_MEMBERS, else off / on / automatic) and `pack_memory_gb`
    (None: $DDSWEEP_PACK_MEMORY_GB, else estimated per device). Every option is checked, and
    every DDSWEEP_* variable read, here, before any job is leased (a bad one: UserError).
    """
    options = WorkOptions.from_env(
        compile=compile, cuda_graphs=cuda_graphs, dense_members=dense_members, pack_memory_gb=pack_memory_gb,
        threads=threads, pack_size=pack_size, lease_seconds=lease_seconds, flush_every=flush_every,
        flush_wait=flush_wait, checkpoint_every=checkpoint_every, retries=retries, show_progress=show_progress,
        checkpoint_dir=str(checkpoint_dir or Path(db).with_name(Path(db).name + ".ckpt")))
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    if sweep is not None:
        with store.read() as conn:
            store_jobs.require_sweep(conn, sweep, db)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    owner = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    transport: Transport
    if ray is None:
        transport = LocalTransport(cpus, gpus, jobs_per_device)
    else:
        if gpus is not None:
            raise UserError("--ray and --gpus: on a cluster, give --gpus-per-job F instead")
        from ddsweep.workers.ray_backend import RayTransport

        transport = RayTransport(str(ray), cpus, gpus_per_job, cpus_per_job, jobs_per_device)
    slots = [Slot(i, dev, env, share) for i, (dev, env, share) in enumerate(transport.slot_specs())]
    try:
        coordinator = Coordinator(store, slots, owner, sweep, options, transport)
        return coordinator.run()
    finally:
        transport.close()


class Coordinator(Receiving, Recovery):
    """The event loop of `ddsweep work`: lease jobs, hand packs to worker slots, flush their events.

    Receiving (ddsweep.workers.receive) handles the workers' events, one handler per event
    type; Recovery (ddsweep.workers.recovery) dead workers, dead coordinators and leases."""

    def __init__(self, store: Store, slots: list[Slot], owner: str, sweep: str | None, options: WorkOptions,
                 transport: Transport | None = None):
        self.store, self.slots, self.owner, self.sweep = store, slots, owner, sweep
        if options.checkpoint_dir is None:
            options = replace(options, checkpoint_dir=str(store.path.with_name(store.path.name + ".ckpt")))
        self.options = options
        self.transport: Transport = transport if transport is not None else LocalTransport()
        lease_seconds, flush_every = options.lease_seconds, options.flush_every
        # a write renews the leases; with no events to write, renew them at a third of their length
        self.heartbeat_every = min(lease_seconds / 3, 30.0)
        self.recover_every = max(2.0, min(lease_seconds, 30.0))  # look for dead coordinators' jobs
        self.poll_every = flush_every  # look for newly planned jobs once out of work
        self.journal_dir = store.path.with_name(store.path.name + ".journal")
        self.ctx = mp.get_context("spawn")
        # A lock-free flag: a worker killed at any moment cannot leave it locked.
        self.stop = self.ctx.RawValue(ctypes.c_bool, False)
        self.queue: list[list[dict]] = []  # leased packs not yet given to a worker
        self.leased: dict[str, dict] = {}  # job_id -> job, for every job leased and not ended
        self.buffer: list[Event] = []  # journaled events not yet in the database
        self.journal: Journal | None = None
        self.result = WorkResult()
        self.display = Display(enabled=options.show_progress, slots=len(slots))
        self.busy_warned = False
        self.free_noted = False
        self.busy = False  # the last write attempt found the database held by someone else
        self.out_of_jobs = False
        self.interrupts = 0  # Ctrl-C / SIGTERM received
        self.fault: StorageError | None = None  # the first storage fault: the run stops, every job goes back
        self.handled_interrupts = 0
        now = time.monotonic()
        self.last_try = self.last_write = self.last_recover = self.last_poll = now

    # ------------------------------------------------------------------ main loop

    def run(self) -> WorkResult:
        t0 = time.monotonic()
        saved_handlers = self._install_signal_handlers()
        try:
            self._recover_at_start()
            self.journal = Journal(self.journal_dir, self.owner)
            with self.display:
                self.display.set_totals(*self._scope_totals())
                if self.transport.describe():
                    self.display.note(self.transport.describe())
                    self.display.cluster(self.transport.usage(self.slots))
                self._loop()
                if not self.stop.value:
                    self._note_foreign_leases()
        finally:
            try:
                self._shutdown()
            finally:
                for sig, handler in saved_handlers.items():
                    signal.signal(sig, handler)
        if self.fault is not None:
            raise StorageError(f"{self.fault}; stopped, {self.result.released} job(s) handed back (none failed): "
                               "run `ddsweep work` again once there is space or permission")
        self.result.scope = self._scope_statuses()
        self.result.seconds = time.monotonic() - t0
        return self.result

    def _loop(self) -> None:
        while True:
            try:
                if self._handle_interrupts():
                    return
                self._sync_if_due()
                self._assign()
                urgent = self._receive(timeout=0.2)
                self._reap_dead_workers()
                self._assign()  # a worker that just finished gets its next pack before the database flush
                self._sync_if_due(urgent)
                if self._finished():
                    return
            except KeyboardInterrupt:  # no handler of ours (not the main thread): same as our handler
                self.interrupts += 1
                if self.result.signal is None:
                    self.result.signal = signal.SIGINT

    def _finished(self) -> bool:
        busy = any(s.pack or s.retry for s in self.slots)
        if self.stop.value:
            return not busy
        if busy or self.queue or not self.out_of_jobs:
            return False
        # One last look before leaving: jobs planned (or leases expired) since the last poll.
        return self._sync(claim=True, recover=True) and not self.queue and self.out_of_jobs

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C (or SIGTERM): stop gracefully; a second one: stop at once. Only in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        saved = {}

        def handler(signum, frame):
            self.interrupts += 1
            if self.result.signal is None:
                self.result.signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, handler)
        return saved

    def _handle_interrupts(self) -> bool:
        """Act on new Ctrl-Cs; True when the loop must end now."""
        if self.interrupts == self.handled_interrupts:
            return False
        self.handled_interrupts = self.interrupts
        if self.interrupts == 1:
            self.display.note("Stopping: workers checkpoint and hand their jobs back "
                              "(Ctrl-C again to stop at once)")
            self._set_stop()
            self._release_queue()
            return False
        self.display.note("Stopping at once: workers killed, their jobs handed back "
                          "(they resume from their last checkpoints)")
        self._set_stop()
        self._kill_workers()
        return True

    # ------------------------------------------------------------------ the database

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.display.note(f"warning: {message}")

    def _scope_statuses(self) -> dict | None:
        try:
            with self.store.read(wait=5.0) as conn:
                return store_jobs.status_counts(conn, self.sweep)
        except DatabaseBusy:
            return None

    def _scope_totals(self) -> tuple[int, int]:
        with self.store.read() as conn:
            sql = ("SELECT count(*), coalesce(sum(epochs - epochs_done), 0) FROM jobs "
                   f"WHERE status = {JobStatus.PENDING.sql}")
            args = ()
            if self.sweep:
                sql += " AND sweep = ?"
                args = (self.sweep,)
            jobs, epochs = conn.exec_driver_sql(sql, args).fetchone()
        return int(jobs), int(epochs)

    def _sync_if_due(self, urgent: bool = False) -> None:
        """Open the database if something is due: events to flush, leases to renew, jobs to claim."""
        now = time.monotonic()
        if self.busy and now - self.last_try < self.options.flush_every:
            return  # someone holds the database: try again in a while, training goes on
        want_jobs = (not self.stop.value and len(self.queue) < 2 * len(self.slots)
                     and (not self.out_of_jobs or now - self.last_poll >= self.poll_every))
        recover = now - self.last_recover >= self.recover_every
        due = (want_jobs or recover or (self.buffer and (urgent or now - self.last_try >= self.options.flush_every))
               or (self.leased and now - self.last_write >= self.heartbeat_every))
        if due:
            self._sync(claim=want_jobs, recover=recover)

    def _sync(self, claim: bool, recover: bool, wait: float | None = None) -> bool:
        """One short transaction: write the buffered events, renew our leases, maybe recover and claim."""
        self.last_try = time.monotonic()
        found = orphans(self.journal_dir, exclude=self.journal.path) if recover else []
        note, claimed = "", []
        written = len(self.buffer)
        try:
            with self.store.write(wait=self.options.flush_wait if wait is None else wait) as conn:
                store_jobs.apply_events(conn, self.owner, self.buffer, self.options.lease_seconds)
                if recover:
                    note = self._recover(conn, found)
                if claim:
                    claimed = store_jobs.claim(conn, self.owner, max_jobs=max(64, 8 * len(self.slots)),
                                               sweep=self.sweep, lease_seconds=self.options.lease_seconds)
                    if not claimed:
                        self.out_of_jobs = store_jobs.pending_count(conn, self.sweep) == 0
        except (DatabaseBusy, StorageError) as e:
            for _, lock in found:
                lock.release()
            if isinstance(e, StorageError):
                self._fault(e)
            else:
                self._warn_busy(e)
            return False
        self._forget_orphans(found)
        now = time.monotonic()
        self.last_write = now
        if recover:
            self.last_recover = now
        if claim:
            self.last_poll = now
        if self.busy and self.busy_warned and written and not self.free_noted:
            self.free_noted = True  # said once, like the warning
            self.display.note(f"database free again: wrote {written} event(s) held in the journal")
        self.busy = False
        self.buffer.clear()
        try:
            self.journal.clear()
        except StorageError as e:
            self._fault(e)
        if note:
            self.display.note(note)
        for job in claimed:
            self.leased[job["job_id"]] = job
        self.queue.extend(make_packs(claimed, self.options.pack_size, self.slots[0].device, self.slots[0].share,
                                     self.options.pack_memory_bytes))
        return True

    def _warn_busy(self, e: Exception) -> None:
        self.busy = True
        if not self.busy_warned:
            self.busy_warned = True
            msg = f"{e} -- training goes on; results are kept in {self.journal.path} until it is free"
            self.result.warnings.append(msg)
            self.display.note(f"warning: {msg}")

    def _final_flush(self) -> None:
        """At exit the rows must reach the database: wait for the lock holder, saying so."""
        if not self.buffer:
            return
        if self._sync(claim=False, recover=False, wait=5.0) or self.fault is not None:
            return  # (after a storage fault the events stay in the journal, if it could keep them)
        self.display.note("waiting for the database to be free to write the last results "
                          f"(they are safe in {self.journal.path}; Ctrl-C leaves them for the next `ddsweep work`)")
        seen = self.interrupts
        try:
            while self.buffer and self.interrupts == seen:
                time.sleep(0.5)
                self._sync(claim=False, recover=False)
        except KeyboardInterrupt:
            pass

    # ------------------------------------------------------------------ workers

    def _start_worker(self, slot: Slot) -> None:
        self.transport.start(slot, self)

    def _set_stop(self) -> None:
        self.stop.value = True
        self.transport.stopping(self.slots)

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.pack is None and not slot.retry and self.queue and not self.stop.value:
                if slot.process is None or not slot.process.is_alive():
                    self._start_worker(slot)
                    if slot.process is None:  # no room for it now (a Ray cluster that lost a node)
                        continue
                slot.pack, slot.done_ids, slot.progress = self.queue.pop(self._pick(slot)), set(), 0.0
                slot.tasks.put(slot.pack)
                self.display.assigned(slot.index, slot.pack)

    def _pick(self, slot: Slot) -> int:
        """Index in the queue of the pack a free slot takes: the first of its share when the
        queued packs are split to end all slots about together (ddsweep.workers.packing.plan_slots)."""
        if len(self.queue) == 1 or len(self.queue) > PLAN_MAX_PACKS:
            return 0  # the queue is largest first
        costs = [cost(p) for p in self.queue]
        busy = [cost(s.pack) * (1.0 - s.progress) if s.pack is not None else 0.0 for s in self.slots]
        mine = plan_slots(costs, busy)[slot.index]
        return mine[0] if mine else min(range(len(costs)), key=costs.__getitem__)  # never idle

    def _requeue(self, jobs: list[dict]) -> None:
        if not jobs:
            return
        if self.stop.value:
            self._release(jobs)
        else:
            self.queue.insert(0, jobs)

    def _release(self, jobs: list[dict]) -> None:
        for job in jobs:
            self._record(Released(job_id=job["job_id"]))
            self.leased.pop(job["job_id"], None)
            self.result.released += 1

    def _kill_workers(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.kill()
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=5)
        self._receive(timeout=0)  # what they sent before the kill still counts
        for slot in self.slots:
            rest = [j for j in (slot.pack or []) if j["job_id"] not in slot.done_ids] + slot.retry
            self._release(rest)
            slot.pack, slot.retry, slot.process = None, [], None
        self._release_queue()

    def _release_queue(self) -> None:
        for pack in self.queue:
            self._release(pack)
        self.queue.clear()

    def _shutdown(self) -> None:
        """Stop the workers (those still busy checkpoint first), hand back what is left, write the rest."""
        if any(s.pack for s in self.slots):  # leaving early (an error): let busy workers checkpoint
            self._set_stop()
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                try:
                    slot.tasks.put(None)
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(s.process is not None and s.process.is_alive()
                                                  for s in self.slots):
            self._receive(timeout=0.2)
            if self.interrupts > self.handled_interrupts:  # Ctrl-C while waiting: stop at once
                break
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
        if self.journal is None:
            return
        self._receive(timeout=0)
        for slot in self.slots:
            self._release([j for j in (slot.pack or []) if j["job_id"] not in slot.done_ids] + slot.retry)
            slot.pack, slot.retry = None, []
        self._release_queue()
        self._final_flush()
        try:
            self.journal.close(remove=not self.buffer)
        except OSError:
            pass  # an unwritable folder: the next `ddsweep work` finds the (empty) journal and removes it

    # ------------------------------------------------------------------ storage faults

    def _fault(self, e: StorageError) -> None:
        """A storage fault (journal, checkpoints or database unwritable): stop cleanly, hand every job back."""
        if self.fault is not None:
            return
        self.fault = e  # said once, as the run's error, when it has stopped
        self._set_stop()
        self._release_queue()
