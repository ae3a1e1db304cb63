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
import re
from multiprocessing.connection import wait as wait_for_connections
import os
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
from ddsweep.workers.events import TIMING_KEYS, Event, Fault, Finished, Idle, JobStatus, Progress, Released, \
    Retry, Started, Timing, WorkerWarning, event_from_dict
from ddsweep.workers.journal import Journal, move_aside, orphans, read_journal
from ddsweep.workers.options import WorkOptions
from ddsweep.workers.packing import PLAN_MAX_PACKS, cost, make_packs, plan_slots
from ddsweep.workers.progress import Display
from ddsweep.workers.transport import Slot, Transport

IDLE_GRACE = 0.05  # seconds to wait for a worker's "idle" after a job end (a pack's last is followed at once)


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
        scope = self.scope if self.scope is not None else {"failed": self.failed}
        if scope.get("failed"):
            return EXIT_JOBS_FAILED
        if scope.get("pending") or scope.get("running"):
            return EXIT_UNFINISHED
        return EXIT_OK

    def count_end(self, status: JobStatus) -> None:
        if status == JobStatus.DONE:
            self.done += 1
        elif status == JobStatus.DIVERGED:
            self.diverged += 1
        else:
            self.failed += 1


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


class LocalTransport:
    """Slots as local worker processes: a task queue in, a pipe of events out, a shared stop flag.
    (A ddsweep.workers.transport.Transport.)"""

    kind = "local"

    def __init__(self, cpus: int | None = None, gpus: str | None = None, jobs_per_device: int = 1):
        self.specs = resolve_slots(cpus, gpus, jobs_per_device)

    def slot_specs(self) -> list[tuple[str, dict, float]]:
        return self.specs

    def start(self, slot: Slot, coordinator: "Coordinator") -> None:
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


class Coordinator:
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

    def _recover_at_start(self) -> None:
        """Write the events of dead coordinators' journals, requeue their jobs and expired leases."""
        if self.transport.kind == "local":  # (PIDs of other nodes' writers mean nothing here)
            _remove_stale_temporaries(self.options.checkpoint_dir)
        found = orphans(self.journal_dir)
        try:
            with self.store.write() as conn:
                requeued = self._recover(conn, found)
        except BaseException:
            for _, lock in found:
                lock.release()
            raise
        self._forget_orphans(found)
        self.last_recover = time.monotonic()
        if requeued:
            self.display.note(requeued)

    def _recover(self, conn, found) -> str:
        """In one transaction: replay orphan journals, requeue dead and expired leases; a note or ''."""
        dead = 0
        for path, _ in found:
            owner = path.stem
            store_jobs.apply_events(conn, owner, self._replay(path))
            dead += store_jobs.reclaim_owner(conn, owner)
        expired = store_jobs.reclaim_expired(conn, self.options.lease_seconds)
        if dead or expired:
            self.out_of_jobs = False
        notes = []
        if dead:
            notes.append(f"requeued {dead} job(s) of a stopped `ddsweep work` (replayed its journal)")
        if expired:
            notes.append(f"requeued {expired} job(s) whose lease expired")
        return "; ".join(notes)

    def _replay(self, path: Path) -> list[Event]:
        """A dead coordinator's journaled events; unreadable records are skipped, an unreadable
        file moved aside (its jobs are requeued all the same and resume from their checkpoints)."""
        try:
            contents = read_journal(path)
        except OSError as e:
            aside = move_aside(path)
            self._warn(f"journal {path} of a stopped `ddsweep work` cannot be read ({e.strerror or e}): "
                       f"moved aside to {aside}; its jobs resume from their checkpoints")
            return []
        if not contents.skipped:
            return contents.events
        # A skipped record may have held metric rows of a job that ended: such jobs are not marked
        # ended but requeued; they resume from their last checkpoint, which re-sends every row.
        events = [e for e in contents.events
                  if not (isinstance(e, Finished) and e.status in (JobStatus.DONE, JobStatus.DIVERGED))]
        reopened = len(contents.events) - len(events)
        self._warn(contents.warning(path) + (f"; {reopened} job end(s) in it are not trusted: those jobs resume "
                                             "from their checkpoints, which re-send their rows" if reopened else ""))
        return events

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.display.note(f"warning: {message}")

    @staticmethod
    def _forget_orphans(found) -> None:
        for path, lock in found:
            path.unlink(missing_ok=True)
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

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

    def _note_foreign_leases(self) -> None:
        try:
            with self.store.read(wait=5.0) as conn:
                n, left = store_jobs.leased_elsewhere(conn, self.owner, self.sweep)
        except DatabaseBusy:
            return
        if n:
            when = f" (the first lease ends in {left:.0f}s)" if left is not None else ""
            self.display.note(f"{n} job(s) are leased by another `ddsweep work`; if it is gone, they are "
                              f"requeued when their leases end{when}: run `ddsweep work` again then")

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

    def _failed_attempt(self, job: dict, error: str) -> Retry | Finished:
        """The event for a failed attempt of a leased job: a retry while retries are left, else failed."""
        job["failures"] = job.get("failures", 0) + 1
        if job["failures"] <= self.options.retries and not self.stop.value:
            job["attempts"] = job.get("attempts", 1) + 1
            self.result.retried += 1
            first = error.strip().splitlines()[-1] if error.strip() else "failed"
            self.display.note(f"job {job['job_id']}: attempt {job['attempts'] - 1} failed ({first[:200]}); "
                              f"retrying ({job['failures']} of {self.options.retries} retries used)")
            return Retry(job_id=job["job_id"], error=error, failures=job["failures"], attempts=job["attempts"])
        return Finished(job_id=job["job_id"], status=JobStatus.FAILED, error=error, failures=job["failures"],
                        attempts=job.get("attempts"))

    def _reap_dead_workers(self) -> None:
        """A worker that died (kill -9, OOM) hands its unfinished jobs back at once: a failed attempt each."""
        for slot in self.slots:
            if slot.process is None or slot.process.is_alive():
                continue
            if slot.pack is None and not slot.retry:
                continue
            code = slot.process.exitcode
            reason = getattr(slot.process, "reason", None)  # a Ray actor's says how it died
            never_ran = getattr(slot.process, "never_ran", False)  # (a Ray actor no node had room for)
            self._receive(timeout=0)  # take whatever it sent before dying
            rest = [j for j in (slot.pack or []) if j["job_id"] not in slot.done_ids]
            requeue, slot.retry = slot.retry, []
            slot.pack, slot.process = None, None
            if not rest:
                self._requeue(requeue)
                continue
            why = reason or _exit_reason(code)
            if self.stop.value:
                self._release(rest)
            elif never_ran:  # not the jobs' fault: back to the queue, no attempt counted
                requeue.extend(rest)
                self.display.note(f"worker {slot.index} could not start ({why}); its jobs go to another worker")
            else:
                error = (f"worker process died ({why}) while training this job "
                         f"(pack of {len(slot.done_ids) + len(rest)}); it resumes from its last checkpoint")
                failed = 0
                for job in rest:
                    event = self._failed_attempt(job, error)
                    event.slot = slot.index
                    self._record(self._stamped(event))
                    if isinstance(event, Retry):
                        requeue.append(job)
                    else:
                        self.leased.pop(job["job_id"], None)
                        self.result.failed += 1
                        failed += 1
                self.display.note(f"worker {slot.index} died ({why}); {len(requeue)} job(s) requeued "
                                  "to resume from their checkpoints"
                                  + (f", {failed} failed (no retries left)" if failed else ""))
            self._requeue(requeue)
            self.last_try = 0.0  # write the news soon

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

    # ------------------------------------------------------------------ events

    def _stamped(self, event: Event) -> Event:
        """A job's end, with how it was trained (kept in `jobs.run_options`)."""
        if isinstance(event, Finished) and event.slot is not None:
            event.run_options = self.options.recorded(self.slots[event.slot].device)
        return event

    def _record(self, event: Event) -> None:
        self._journal([event])
        self.buffer.append(event)

    def _journal(self, events: list[Event], sync: bool = True) -> None:
        try:
            self.journal.append(events, sync=sync)
        except StorageError as e:
            self._fault(e)

    def _fault(self, e: StorageError) -> None:
        """A storage fault (journal, checkpoints or database unwritable): stop cleanly, hand every job back."""
        if self.fault is not None:
            return
        self.fault = e  # said once, as the run's error, when it has stopped
        self._set_stop()
        self._release_queue()

    def _await_idle(self, readers: dict, got: list) -> None:
        """A pack's job ends come (one by one) just before its worker's "idle": after a job end,
        wait briefly for the idle, so that _assign hands the worker its next pack before the
        database flush that the job ends set off (measured: ~60 ms per pack otherwise; a job
        ending mid-pack, e.g. diverged, costs the coordinator up to IDLE_GRACE)."""
        deadline = time.monotonic() + IDLE_GRACE
        for reader, slot in readers.items():
            mine = [e for e in got if e.slot == slot.index]
            ended = any(isinstance(e, Finished) for e in mine)
            idle = any(isinstance(e, Idle) for e in mine)
            while (ended and not idle and slot.reader is not None
                   and reader.poll(max(0.0, deadline - time.monotonic()))):
                n = len(got)
                _drain(reader, slot, got)
                idle = any(isinstance(e, Idle) for e in got[n:])

    def _receive(self, timeout: float) -> bool:
        """Drain the workers' pipes into journal + buffer; True if a job ended (flush soon)."""
        readers = {s.reader: s for s in self.slots if s.reader is not None}
        got = []
        if readers:
            for reader in wait_for_connections(list(readers), timeout):
                _drain(reader, readers[reader], got)
            self._await_idle(readers, got)
        elif timeout:
            time.sleep(timeout)
        if not got:
            return False
        events: list[Event] = []
        for e in got:
            job = self.leased.get(e.job_id) if isinstance(e, Finished) else None
            if job is not None and e.status == JobStatus.FAILED:  # a failed attempt: retry it while we may
                event = self._failed_attempt(job, e.error or "")
                event.slot = e.slot
                events.append(self._stamped(event))
            else:
                events.append(self._stamped(e))
        durable = [e for e in events if e.durable]
        # received = journaled (and synced, unless all it holds is progress counters)
        self._journal(durable, sync=any(not isinstance(e, Progress) for e in durable))
        self.buffer.extend(durable)
        urgent = False
        for e in events:
            slot = self.slots[e.slot] if e.slot is not None else None
            if isinstance(e, Finished):
                urgent = True
                slot.done_ids.add(e.job_id)
                self.leased.pop(e.job_id, None)
                self.result.count_end(e.status)
                self.display.job_finished(e)
            elif isinstance(e, Retry):
                urgent = True
                slot.done_ids.add(e.job_id)
                if e.job_id in self.leased:
                    slot.retry.append(self.leased[e.job_id])
            elif isinstance(e, Released):
                slot.done_ids.add(e.job_id)
                self.leased.pop(e.job_id, None)
                self.result.released += 1
            elif isinstance(e, Idle):
                slot.pack = None
                self.display.idle(slot.index)
                requeue, slot.retry = slot.retry, []
                self._requeue(requeue)
            elif isinstance(e, Progress):
                slot.progress = e.epoch / max(1, e.epochs)
                self.display.epoch_done(slot.index, e)
            elif isinstance(e, Started):
                slot.node = e.node
                self.display.started(slot.index, e)
            elif isinstance(e, Timing):
                for key in self.result.timing:
                    self.result.timing[key] += getattr(e, key)
            elif isinstance(e, Fault):
                self._fault(StorageError(e.message))
            elif isinstance(e, WorkerWarning):
                self.result.warnings.append(e.message)
                self.display.note(f"warning: {e.message}")
        usage = self.transport.usage(self.slots)
        if usage:
            self.display.cluster(usage)
        return urgent


def _drain(reader, slot: Slot, got: list) -> None:
    """Append every event waiting on a worker's pipe to `got`; close the pipe if the worker is gone."""
    try:
        while reader.poll():
            got.append(event_from_dict(reader.recv()))
    except Exception:  # EOF: the worker exited; or a torn message of a worker killed while sending
        slot.reader = None
        reader.close()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _remove_stale_temporaries(checkpoint_dir) -> int:
    """Remove half-written checkpoints (`<job>.tmp<pid>`) of processes that are gone; returns how many.

    (Here, not in ddsweep.train.checkpoint: the coordinator never imports torch.)
    """
    removed = 0
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return 0
    for tmp in d.glob("*.tmp*"):
        pid = tmp.suffix[len(".tmp"):]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is alive (maybe another coordinator's worker)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
