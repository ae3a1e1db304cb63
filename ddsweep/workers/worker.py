"""A worker process: takes packs from its task queue, trains them, reports events.

It never touches the database. Everything it learns goes to the coordinator as a
small dict on the event queue (the transport a cluster backend can replace).
"""

from __future__ import annotations

import os
import queue
import signal
import time
import traceback

# Progress events (epoch counters for the display and `status`) go out at most this often: a
# small pack's epoch takes ~10 ms, and an event per epoch cost the coordinator a core-second
# per 1,400 epochs that it took from the workers. Every other event sends the held one first.
PROGRESS_EVERY = 0.5


def worker_main(slot: int, device: str, threads: int, tasks, events, stop, checkpoint_dir: str,
                checkpoint_every: float, launched_at: float | None = None) -> None:
    """Process entry point: loop over packs until a None task arrives.

    `events` is the send end of a pipe to the coordinator; `stop` a shared bool;
    `launched_at` the coordinator's time.time() when it started this process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    import torch

    import ddsweep.train.loop  # noqa: F401  (imported now, while the coordinator leases the first pack)

    torch.set_num_threads(threads)
    if launched_at is not None:  # the interpreter's start and `import torch`: a sweep's fixed cost
        events.send({"kind": "timing", "slot": slot, "startup_seconds": time.time() - launched_at})
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
            run_pack(pack, slot, device, events.send, lambda: stop.value, checkpoint_dir, checkpoint_every)
            events.send({"kind": "idle", "slot": slot})
    except (BrokenPipeError, ConnectionError, EOFError):
        return  # the coordinator is gone; its successor resumes our jobs from their checkpoints


def _leave() -> None:
    """Exit without Python's finalization: with torch loaded it takes about 0.7 s on a CPU,
    which every `ddsweep work` would wait for at its end."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_pack(jobs: list[dict], slot: int, device: str, put, should_stop, checkpoint_dir, checkpoint_every) -> None:
    """Train a pack; members resuming from different epochs train as separate sub-packs."""
    from ddsweep.train.loop import train_pack

    groups: dict[int, list[dict]] = {}
    for job in jobs:
        groups.setdefault(_checkpoint_epoch(job["job_id"], checkpoint_dir, slot, put), []).append(job)
    for _, group in sorted(groups.items(), reverse=True):
        ids = [j["job_id"] for j in group]
        if should_stop():  # stopping: sub-packs not started yet go back to the queue
            for jid in ids:
                put({"kind": "released", "slot": slot, "job_id": jid})
            continue
        finished: set[str] = set()
        horizon = max(j["epochs"] for j in group)
        held: list[dict] = []  # the latest progress event not sent yet
        sent = [0.0]  # when a progress event was last sent

        def emit(event, ids=ids, finished=finished, horizon=horizon, held=held, sent=sent):
            event["slot"] = slot
            if event["kind"] == "progress":
                event["job_ids"] = [j for j in ids if j not in finished]
                now = time.monotonic()
                if now - sent[0] < PROGRESS_EVERY and event["epoch"] < horizon:
                    held[:] = [event]  # superseded by the next one, or sent before the next other event
                    return
                sent[0] = now
                held.clear()
            elif held:
                put(held.pop())
            if event["kind"] == "finished":
                finished.add(event["job_id"])
                event.setdefault("epochs", horizon)  # trained to; a job whose horizon grew meanwhile reopens
            put(event)

        put({"kind": "started", "slot": slot, "job_ids": ids, "config": group[0]["config"],
             "epochs": horizon, "pid": os.getpid()})
        try:
            outcome = train_pack(group, device, emit, should_stop, checkpoint_dir, checkpoint_every)
        except (BrokenPipeError, ConnectionError):
            raise  # the coordinator is gone
        except Exception:
            error = traceback.format_exc()
            if held:
                put(held.pop())
            for jid in ids:
                if jid not in finished:
                    put({"kind": "finished", "slot": slot, "job_id": jid, "status": "failed", "error": error})
            continue
        if outcome == "stopped":
            for jid in ids:
                if jid not in finished:
                    put({"kind": "released", "slot": slot, "job_id": jid})


def _checkpoint_epoch(job_id: str, checkpoint_dir, slot, put) -> int:
    """Epoch of the job's checkpoint; a corrupt one is discarded with a warning (restart at 0)."""
    from ddsweep.train import checkpoint

    try:
        state = checkpoint.read(checkpoint_dir, job_id)
    except ValueError as e:
        put({"kind": "warning", "slot": slot, "message": f"job {job_id}: {e}; restarting it from scratch"})
        checkpoint.path_for(checkpoint_dir, job_id).unlink(missing_ok=True)
        return 0
    return 0 if state is None else int(state["epoch"])
