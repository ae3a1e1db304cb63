"""A worker process: takes packs from its task queue, trains them, reports events.

It never touches the database. Everything it learns goes to the coordinator as an
event (ddsweep.workers.events), sent over its pipe as the event's dict (the transport
a cluster backend can replace).
"""

from __future__ import annotations

import os
import queue
import signal
import time
import traceback

from ddsweep.errors import storage_fault
from ddsweep.workers.events import Event, Fault, Finished, Idle, JobStatus, Progress, Released, Started, Timing, \
    WorkerWarning
from ddsweep.workers.options import WorkOptions

# Progress events (epoch counters for the display and `status`) go out at most this often: a
# small pack's epoch takes ~10 ms, and an event per epoch cost the coordinator a core-second
# per 1,400 epochs that it took from the workers. Every other event sends the held one first.
PROGRESS_EVERY = 0.5


def worker_main(slot: int, device: str, options: WorkOptions, tasks, events, stop,
                launched_at: float | None = None, share: float = 1.0) -> None:
    """Process entry point: loop over packs until a None task arrives.

    `options`: the sweep's (threads, checkpoints, speed settings, pack memory);
    `events` is the send end of a pipe to the coordinator; `stop` a shared bool;
    `launched_at` the coordinator's time.time() when it started this process; `share` the
    part of the device's memory this worker may use (1 / the workers sharing it).
    """
    # Ctrl-C, and SIGTERM to the whole process group (a service manager's stop), are the coordinator's
    # to handle: it has its workers checkpoint and hands their jobs back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    import ddsweep.train.loop  # noqa: F401  (imported now, while the coordinator leases the first pack)

    torch.set_num_threads(options.threads)
    if launched_at is not None:  # the interpreter's start and `import torch`: a sweep's fixed cost
        events.send(Timing(slot=slot, startup_seconds=time.time() - launched_at).to_dict())
    parent = os.getppid()
    try:
        while True:
            try:
                pack = tasks.get(timeout=2.0)
            except queue.Empty:
                if os.getppid() != parent:  # the coordinator died (kill -9): nobody will send a task
                    return
                continue
            if pack is None:  # done: leave at once (every event is sent, every checkpoint synced)
                _leave()
            run_pack(pack, slot, device, lambda event: events.send(event.to_dict()), lambda: stop.value, options,
                     share)
            events.send(Idle(slot=slot).to_dict())
    except (BrokenPipeError, ConnectionError, EOFError):
        return  # the coordinator is gone; its successor resumes our jobs from their checkpoints


def _leave() -> None:
    """Exit without Python's finalization: with torch loaded it takes about 0.7 s on a CPU,
    which every `ddsweep work` would wait for at its end."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_pack(jobs: list[dict], slot: int, device: str, put, should_stop, options: WorkOptions,
             share: float = 1.0) -> None:
    """Train a pack: in parts that fit this worker's `share` of the device's memory (halved again
    after an out-of-memory error), members resuming from different epochs as separate sub-packs."""
    for part in _fitting_parts(jobs, slot, device, share, put, options.pack_memory_bytes):
        groups: dict[int, list[dict]] = {}
        for job in part:
            groups.setdefault(_checkpoint_epoch(job["job_id"], options.checkpoint_dir, slot, put), []).append(job)
        for _, group in sorted(groups.items(), reverse=True):
            if should_stop():  # stopping: sub-packs not started yet go back to the queue
                for job in group:
                    put(Released(slot=slot, job_id=job["job_id"]))
                continue
            rest = _train_group(group, slot, device, put, should_stop, options)
            if rest:
                _free_device_memory()
                _fits[_fit_key(group[0], device)] = len(rest) // 2
                put(WorkerWarning(slot=slot, message=(
                    f"a pack of {len(group)} ran out of {device} memory; training its {len(rest)} unfinished "
                    f"jobs (and later packs like it on this worker) in parts of {len(rest) // 2}, "
                    "each from its last checkpoint")))
                run_pack(rest, slot, device, put, should_stop, options, share)


# Members per pack that fit this worker's device, by (pack key, training width): learned from
# the memory estimate and from out-of-memory errors, so that later packs of the kind split at once.
_fits: dict[tuple, int | None] = {}  # None: no estimate (MLPs), packs train as formed


def _fit_key(job: dict, device: str) -> tuple:
    from ddsweep.models import train_width

    return job.get("pack_key"), train_width(job["config"], device)


def _fitting_parts(jobs: list[dict], slot: int, device: str, share: float, put,
                   memory: int | None = None) -> list[list[dict]]:
    """`jobs` in consecutive parts of at most the members that fit the device (said once per kind)."""
    key = _fit_key(jobs[0], device)
    if key not in _fits and device.startswith("cuda"):
        import torch

        from ddsweep.workers.packing import fitting_members

        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        _fits[key] = fitting_members(jobs[0]["config"], device, share, total, memory)
        if _fits[key] is not None and _fits[key] < len(jobs):
            c = jobs[0]["config"]
            put(WorkerWarning(slot=slot, message=(
                f"{c['model']['name']} width {c['width']}, n_train {c['n_train']}: about {_fits[key]} members fit "
                f"this worker's share of {device} ({share * total / (1 << 30):.0f} GiB), so its packs of "
                f"{len(jobs)} train in parts (--pack-memory-gb overrides the estimate)")))
    size = _fits.get(key) or len(jobs)
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def _free_device_memory() -> None:
    """Give the failed pack's memory back to the device (its tensors died with its frames)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_group(group: list[dict], slot: int, device: str, put, should_stop, options: WorkOptions) -> list[dict]:
    """Train members that resume from the same epoch as one pack, forwarding its events. Returns
    the unfinished jobs where several of them ran out of device memory together (to train in
    smaller packs), else []."""
    import torch

    from ddsweep.train.loop import train_pack

    ids = [j["job_id"] for j in group]
    finished: set[str] = set()
    horizon = max(j["epochs"] for j in group)
    held: list[Progress] = []  # the latest progress event not sent yet
    sent = [0.0]  # when a progress event was last sent

    def emit(event: Event) -> None:
        event.slot = slot
        if isinstance(event, Progress):
            event.job_ids = [j for j in ids if j not in finished]
            now = time.monotonic()
            if now - sent[0] < PROGRESS_EVERY and event.epoch < horizon:
                held[:] = [event]  # superseded by the next one, or sent before the next other event
                return
            sent[0] = now
            held.clear()
        elif held:
            put(held.pop())
        if isinstance(event, Finished):
            finished.add(event.job_id)
            if event.epochs is None:
                event.epochs = horizon  # trained to; a job whose horizon grew meanwhile reopens
        put(event)

    put(Started(slot=slot, job_ids=ids, config=group[0]["config"], epochs=horizon, pid=os.getpid()))
    try:
        outcome = train_pack(group, device, emit, should_stop, options.checkpoint_dir, options.checkpoint_every,
                             options.speed)
    except (BrokenPipeError, ConnectionError):
        raise  # the coordinator is gone
    except Exception as e:
        if held:
            put(held.pop())
        rest = [j for j in group if j["job_id"] not in finished]
        if isinstance(e, torch.OutOfMemoryError) and len(rest) > 1:
            return rest
        fault = storage_fault(e)
        if fault is not None and options.checkpoint_dir and str(options.checkpoint_dir) not in fault:
            fault = f"{options.checkpoint_dir}: {fault}"  # (a write's ENOSPC carries no file name)
        if fault is not None:  # the storage's fault, not the jobs': they go back, and the run stops
            put(Fault(slot=slot, message=f"cannot write {fault} (checkpointing)"))
            for job in rest:
                put(Released(slot=slot, job_id=job["job_id"]))
            return []
        error = traceback.format_exc()
        for job in rest:
            put(Finished(slot=slot, job_id=job["job_id"], status=JobStatus.FAILED, error=error))
        return []
    if outcome == "stopped":
        for jid in ids:
            if jid not in finished:
                put(Released(slot=slot, job_id=jid))
    return []


def _checkpoint_epoch(job_id: str, checkpoint_dir, slot, put) -> int:
    """Epoch of the job's checkpoint; a corrupt one is discarded with a warning (restart at 0)."""
    from ddsweep.train import checkpoint

    try:
        state = checkpoint.read(checkpoint_dir, job_id)
    except ValueError as e:
        put(WorkerWarning(slot=slot, message=f"job {job_id}: {e}; restarting it from scratch"))
        checkpoint.path_for(checkpoint_dir, job_id).unlink(missing_ok=True)
        return 0
    return 0 if state is None else int(state["epoch"])
