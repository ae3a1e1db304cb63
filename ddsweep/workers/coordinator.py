"""`ddsweep work`: lease jobs, fan packs out to worker processes, store what they report.

The coordinator is the only process of a sweep that opens the database, and it
holds it only for short batched flushes (every `flush_every` seconds and at each
job end), so readers get in between. Events are journaled before they count as
received; a database held by someone else delays flushes, never loses rows.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import re
from multiprocessing.connection import wait as wait_for_connections
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ddsweep.errors import DatabaseBusy, UserError
from ddsweep.store import Store
from ddsweep.store import jobs as store_jobs
from ddsweep.workers.journal import Journal, orphans, read_events
from ddsweep.workers.packing import make_packs
from ddsweep.workers.progress import Display


@dataclass
class Slot:
    index: int
    device: str
    env: dict
    process: mp.Process | None = None
    tasks: object = None  # queue of packs, coordinator -> worker
    reader: object = None  # pipe end of the worker's events, worker -> coordinator
    pack: list[dict] | None = None  # jobs assigned and not finished yet
    done_ids: set = field(default_factory=set)


@dataclass
class WorkResult:
    done: int = 0
    failed: int = 0
    diverged: int = 0
    released: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # summed over packs: seconds in training steps / in evaluation / building the pack; samples trained
    timing: dict = field(default_factory=lambda: {"train_seconds": 0.0, "eval_seconds": 0.0,
                                                   "setup_seconds": 0.0, "train_samples": 0})


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


def resolve_slots(cpus: int | None, gpus: str | None, jobs_per_device: int) -> list[tuple[str, dict]]:
    """(device, extra environment) per worker slot."""
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
        return [("cuda", {"CUDA_VISIBLE_DEVICES": g}) for g in ids for _ in range(jobs_per_device)]
    n = cpus if cpus is not None else max(1, os.cpu_count() or 1)
    if n < 1:
        raise UserError(f"--cpus = {n}: must be at least 1")
    return [("cpu", {}) for _ in range(n * jobs_per_device)]


def work(db: str | Path = "results.duckdb", cpus: int | None = None, gpus: str | None = None,
         jobs_per_device: int = 1, sweep: str | None = None, threads: int = 1, pack_size: int | None = None,
         lease_seconds: float = 120.0, flush_every: float = 2.0, checkpoint_every: float = 30.0,
         show_progress: bool = True, flush_wait: float = 1.0) -> WorkResult:
    """Train every pending job (of `sweep`, or all) with local worker processes; returns counts."""
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    slots = [Slot(i, dev, env) for i, (dev, env) in enumerate(resolve_slots(cpus, gpus, jobs_per_device))]
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    owner = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return Coordinator(store, slots, owner, sweep, threads, pack_size, lease_seconds, flush_every,
                       checkpoint_every, show_progress, flush_wait).run()


class Coordinator:
    def __init__(self, store: Store, slots, owner, sweep, threads, pack_size, lease_seconds, flush_every,
                 checkpoint_every, show_progress, flush_wait):
        self.store, self.slots, self.owner, self.sweep = store, slots, owner, sweep
        self.threads, self.pack_size, self.lease_seconds = threads, pack_size, lease_seconds
        self.flush_every, self.checkpoint_every, self.flush_wait = flush_every, checkpoint_every, flush_wait
        self.checkpoint_dir = str(store.path.with_name(store.path.name + ".ckpt"))
        self.journal_dir = store.path.with_name(store.path.name + ".journal")
        self.ctx = mp.get_context("spawn")
        # A lock-free flag: a worker killed at any moment cannot leave it locked.
        self.stop = self.ctx.RawValue(ctypes.c_bool, False)
        self.queue: list[list[dict]] = []  # leased packs not yet given to a worker
        self.buffer: list[dict] = []  # journaled events not yet in the database
        self.result = WorkResult()
        self.display = Display(enabled=show_progress, slots=len(slots))
        self.busy_warned = False
        self.out_of_jobs = False

    # ------------------------------------------------------------------ main loop

    def run(self) -> WorkResult:
        t0 = time.monotonic()
        self._recover()
        self.journal = Journal(self.journal_dir, self.owner)
        interrupts = 0
        try:
            with self.display:
                self.display.set_totals(*self._scope_totals())
                last_flush = time.monotonic()
                while True:
                    try:
                        self._refill()
                        self._assign()
                        urgent = self._receive(timeout=0.2)
                        self._reap_dead_workers()
                        if urgent or time.monotonic() - last_flush >= self.flush_every:
                            self._flush()
                            last_flush = time.monotonic()
                        if self._finished():
                            break
                    except KeyboardInterrupt:
                        interrupts += 1
                        if interrupts == 1:
                            self.display.note("Stopping: workers checkpoint and hand their jobs back "
                                              "(Ctrl-C again to stop at once)")
                            self.stop.value = True
                            self._release_queue()
                        else:
                            self._kill_workers()
                            break
        finally:
            self._shutdown()
        self.result.seconds = time.monotonic() - t0
        return self.result

    def _finished(self) -> bool:
        busy = any(s.pack for s in self.slots)
        if self.stop.value:
            return not busy
        return not busy and not self.queue and self.out_of_jobs

    # ------------------------------------------------------------------ leasing

    def _recover(self) -> None:
        """Write events left by dead coordinators, and requeue their expired leases."""
        found = orphans(self.journal_dir)
        with self.store.write() as conn:
            for path, _ in found:
                events = read_events(path)
                owner = path.stem
                store_jobs.apply_events(conn, owner, events)
            expired = store_jobs.reclaim_expired(conn, self.lease_seconds)
        for path, lock in found:
            path.unlink(missing_ok=True)
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)
        if expired:
            self.display.note(f"Requeued {expired} job(s) whose coordinator stopped heartbeating")

    def _scope_totals(self) -> tuple[int, int]:
        with self.store.read() as conn:
            sql = ("SELECT count(*), coalesce(sum(epochs - epochs_done), 0) FROM jobs "
                   "WHERE status IN ('pending')")
            args = ()
            if self.sweep:
                sql += " AND sweep = ?"
                args = (self.sweep,)
            jobs, epochs = conn.exec_driver_sql(sql, args).fetchone()
        return int(jobs), int(epochs)

    def _refill(self) -> None:
        """Keep about two packs per slot leased ahead, so workers never wait on the database."""
        if self.stop.value or self.out_of_jobs or len(self.queue) >= 2 * len(self.slots):
            return
        try:
            with self.store.write(wait=self.flush_wait) as conn:
                store_jobs.apply_events(conn, self.owner, self.buffer)
                claimed = store_jobs.claim(conn, self.owner, max_jobs=max(64, 8 * len(self.slots)),
                                           sweep=self.sweep)
                if not claimed:
                    self.out_of_jobs = store_jobs.pending_count(conn, self.sweep) == 0
            self._flushed()
        except DatabaseBusy as e:
            self._warn_busy(e)
            return
        self.queue.extend(make_packs(claimed, self.pack_size, self.slots[0].device))

    def _release_queue(self) -> None:
        for pack in self.queue:
            for job in pack:
                self._record({"kind": "released", "job_id": job["job_id"]})
        self.queue.clear()

    # ------------------------------------------------------------------ workers

    def _start_worker(self, slot: Slot) -> None:
        from ddsweep.workers.worker import worker_main

        # Fresh channels per process: a worker killed mid-write breaks only its own pipe.
        slot.tasks = self.ctx.Queue()
        slot.reader, writer = self.ctx.Pipe(duplex=False)
        saved = {k: os.environ.get(k) for k in slot.env}
        os.environ.update(slot.env)  # spawn copies the environment: pins CUDA_VISIBLE_DEVICES
        try:
            slot.process = self.ctx.Process(
                target=worker_main, name=f"ddsweep-worker-{slot.index}",
                args=(slot.index, slot.device, self.threads, slot.tasks, writer, self.stop,
                      self.checkpoint_dir, self.checkpoint_every), daemon=True)
            slot.process.start()
            writer.close()  # the child holds it now; EOF on reader then means the worker is gone
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.pack is None and self.queue and not self.stop.value:
                if slot.process is None or not slot.process.is_alive():
                    self._start_worker(slot)
                slot.pack, slot.done_ids = self.queue.pop(0), set()
                slot.tasks.put(slot.pack)
                self.display.assigned(slot.index, slot.pack)

    def _reap_dead_workers(self) -> None:
        """A worker that died (kill -9, OOM) hands its unfinished jobs back at once."""
        for slot in self.slots:
            if slot.pack is None or slot.process is None or slot.process.is_alive():
                continue
            code = slot.process.exitcode
            self._receive(timeout=0)  # take whatever it sent before dying
            if slot.pack is None:
                continue
            rest = [j for j in slot.pack if j["job_id"] not in slot.done_ids]
            self.display.note(f"worker {slot.index} died (exit code {code}); "
                              f"requeued {len(rest)} job(s) to resume from their checkpoints")
            slot.pack, slot.process = None, None
            if rest and not self.stop.value:
                self.queue.insert(0, rest)
            elif rest:
                for j in rest:
                    self._record({"kind": "released", "job_id": j["job_id"]})

    def _kill_workers(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.kill()
            if slot.pack:
                for j in slot.pack:
                    if j["job_id"] not in slot.done_ids:
                        self._record({"kind": "released", "job_id": j["job_id"]})
                slot.pack = None
        self._release_queue()

    def _shutdown(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.tasks.put(None)
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=10)
                if slot.process.is_alive():
                    slot.process.kill()
        self._receive(timeout=0)
        self._flush(final=True)
        self.journal.close(remove=not self.buffer)

    # ------------------------------------------------------------------ events

    def _record(self, event: dict) -> None:
        self.journal.append([event])
        self.buffer.append(event)

    def _receive(self, timeout: float) -> bool:
        """Drain the event queue into journal + buffer; True if a job ended (flush soon)."""
        readers = {s.reader: s for s in self.slots if s.reader is not None}
        got = []
        if readers:
            for reader in wait_for_connections(list(readers), timeout):
                try:
                    while reader.poll():
                        got.append(reader.recv())
                except (EOFError, OSError):  # the worker exited (or died mid-message)
                    readers[reader].reader = None
                    reader.close()
        elif timeout:
            time.sleep(timeout)
        if not got:
            return False
        durable = [e for e in got if e["kind"] in ("metrics", "finished", "released", "progress")]
        self.journal.append(durable)  # received = journaled
        self.buffer.extend(durable)
        urgent = False
        for e in got:
            slot = self.slots[e["slot"]] if "slot" in e else None
            kind = e["kind"]
            if kind == "finished":
                urgent = True
                slot.done_ids.add(e["job_id"])
                setattr(self.result, e["status"], getattr(self.result, e["status"]) + 1)
                self.display.job_finished(e)
            elif kind == "released":
                slot.done_ids.add(e["job_id"])
                self.result.released += 1
            elif kind == "idle":
                slot.pack = None
                self.display.idle(slot.index)
            elif kind == "progress":
                self.display.epoch_done(slot.index, e)
            elif kind == "started":
                self.display.started(slot.index, e)
            elif kind == "timing":
                for key in self.result.timing:
                    self.result.timing[key] += e.get(key, 0)
            elif kind == "warning":
                self.result.warnings.append(e["message"])
                self.display.note(e["message"])
        return urgent

    def _flush(self, final: bool = False) -> None:
        if not self.buffer:
            return
        try:
            with self.store.write(wait=self.flush_wait if not final else 5.0) as conn:
                store_jobs.apply_events(conn, self.owner, self.buffer)
            self._flushed()
        except DatabaseBusy as e:
            self._warn_busy(e)
            if final:
                self._final_wait()

    def _flushed(self) -> None:
        self.buffer.clear()
        self.journal.clear()

    def _final_wait(self) -> None:
        """At exit the rows must reach the database: wait for the lock holder, saying so."""
        self.display.note("waiting for the database to be free to write the last results "
                          f"(they are safe in {self.journal.path}; Ctrl-C leaves them for the next `ddsweep work`)")
        try:
            while self.buffer:
                time.sleep(1.0)
                try:
                    with self.store.write(wait=self.flush_wait) as conn:
                        store_jobs.apply_events(conn, self.owner, self.buffer)
                    self._flushed()
                except DatabaseBusy:
                    pass
        except KeyboardInterrupt:
            pass

    def _warn_busy(self, e: Exception) -> None:
        if not self.busy_warned:
            self.busy_warned = True
            msg = f"{e} -- training goes on; results are kept in {self.journal.path} until it is free"
            self.result.warnings.append(msg)
            self.display.note(f"warning: {msg}")
