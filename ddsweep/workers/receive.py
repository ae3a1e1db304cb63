"""What the coordinator does with the events its workers send: one handler per event type.

`Receiving._receive` drains the workers' pipes, turns a failed attempt that may be
retried into a `retry`, journals the durable events (received = journaled) and buffers
them for the next database flush, then hands each event to its handler in `HANDLERS`
(keyed by event class; events with no handler, metric rows and checkpoints, only go to
the database). A handler updates the coordinator's view of its slots and results and
says whether the event asks for an early flush (a job ended).

A mixin of ddsweep.workers.coordinator.Coordinator, whose state it reads and changes.
"""

from __future__ import annotations

import time
from multiprocessing.connection import wait as wait_for_connections
from typing import Callable

from ddsweep.errors import StorageError
from ddsweep.workers.events import Event, Fault, Finished, Idle, JobStatus, Progress, Released, Retry, Started, \
    Timing, WorkerWarning, event_from_dict
from ddsweep.workers.transport import Slot

IDLE_GRACE = 0.05  # seconds to wait for a worker's "idle" after a job end (a pack's last is followed at once)


class Receiving:
    # (the coordinator's state that the handlers use; set in Coordinator.__init__)
    slots: list[Slot]
    leased: dict[str, dict]
    buffer: list[Event]

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
        got: list[Event] = []
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
            handler = HANDLERS.get(type(e))
            if handler is not None:
                slot = self.slots[e.slot] if e.slot is not None else None
                urgent = handler(self, slot, e) or urgent
        usage = self.transport.usage(self.slots)
        if usage:
            self.display.cluster(usage)
        return urgent

    # ------------------------------------------------------------------ one handler per event type

    def _on_finished(self, slot: Slot, e: Finished) -> bool:
        slot.done_ids.add(e.job_id)
        self.leased.pop(e.job_id, None)
        self.result.count_end(e.status)
        self.display.job_finished(e)
        return True

    def _on_retry(self, slot: Slot, e: Retry) -> bool:
        slot.done_ids.add(e.job_id)
        if e.job_id in self.leased:
            slot.retry.append(self.leased[e.job_id])
        return True

    def _on_released(self, slot: Slot, e: Released) -> bool:
        slot.done_ids.add(e.job_id)
        self.leased.pop(e.job_id, None)
        self.result.released += 1
        return False

    def _on_idle(self, slot: Slot, e: Idle) -> bool:
        slot.pack = None
        self.display.idle(slot.index)
        requeue, slot.retry = slot.retry, []
        self._requeue(requeue)
        return False

    def _on_progress(self, slot: Slot, e: Progress) -> bool:
        slot.progress = e.epoch / max(1, e.epochs)
        self.display.epoch_done(slot.index, e)
        return False

    def _on_started(self, slot: Slot, e: Started) -> bool:
        slot.node = e.node
        self.display.started(slot.index, e)
        return False

    def _on_timing(self, slot: Slot, e: Timing) -> bool:
        for key in self.result.timing:
            self.result.timing[key] += getattr(e, key)
        return False

    def _on_fault(self, slot: Slot, e: Fault) -> bool:
        self._fault(StorageError(e.message))
        return False

    def _on_warning(self, slot: Slot, e: WorkerWarning) -> bool:
        self.result.warnings.append(e.message)
        self.display.note(f"warning: {e.message}")
        return False


# event class -> handler(coordinator, its slot, event) -> whether to flush soon
HANDLERS: dict[type[Event], Callable[[Receiving, Slot, Event], bool]] = {
    Finished: Receiving._on_finished, Retry: Receiving._on_retry, Released: Receiving._on_released,
    Idle: Receiving._on_idle, Progress: Receiving._on_progress, Started: Receiving._on_started,
    Timing: Receiving._on_timing, Fault: Receiving._on_fault, WorkerWarning: Receiving._on_warning,
}


def _drain(reader, slot: Slot, got: list) -> None:
    """Append every event waiting on a worker's pipe to `got`; close the pipe if the worker is gone."""
    try:
        while reader.poll():
            got.append(event_from_dict(reader.recv()))
    except Exception:  # EOF: the worker exited; or a torn message of a worker killed while sending
        slot.reader = None
        reader.close()
