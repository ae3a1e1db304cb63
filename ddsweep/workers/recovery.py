"""Leases and recovery: what the coordinator does when a worker or a coordinator dies.

A worker process that dies (kill -9, out of memory, a lost Ray node) hands its unfinished
jobs back at once, a failed attempt each: tried again while `--retries` allow, else
failed (a Ray actor that never started, for want of a live node, hands them back with no
attempt counted). A coordinator that dies leaves its journal and its leases: the next
`ddsweep work` replays the journal (every event it had received; unreadable records
skipped, an unreadable file moved aside), requeues that coordinator's jobs, and requeues
any job whose lease ran out. Half-written checkpoints of dead processes are removed at
the start.

A mixin of ddsweep.workers.coordinator.Coordinator, whose state it reads and changes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ddsweep.errors import DatabaseBusy
from ddsweep.store import jobs as store_jobs
from ddsweep.workers.events import Event, Finished, JobStatus, Retry
from ddsweep.workers.journal import move_aside, orphans, read_journal
from ddsweep.workers.transport import Slot


class Recovery:
    # (the coordinator's state used here; set in Coordinator.__init__)
    slots: list[Slot]
    leased: dict[str, dict]

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

    @staticmethod
    def _forget_orphans(found) -> None:
        for path, lock in found:
            path.unlink(missing_ok=True)
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

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
