"""The live display of `ddsweep work`: overall jobs and epochs with ETA, one line per worker."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from ddsweep.workers import events


def describe(config: dict, members: int) -> str:
    text = f"{config['sweep']} w={config['width']} n={config['n_train']}"
    return text + (f" x{members} jobs" if members > 1 else f" p={config['label_noise']} s={config['seed']}")


class Display:
    def __init__(self, enabled: bool, slots: int):
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            disable=not enabled, transient=False, refresh_per_second=4)
        self.jobs_task = self.bar.add_task("jobs", total=None)
        self.epochs_task = self.bar.add_task("epochs", total=None)
        self.slot_tasks = [self.bar.add_task(f"  worker {i}: idle", total=None, visible=enabled)
                           for i in range(slots)]
        self.slot_epoch = [0] * slots
        self.cluster_task = None  # a line on the cluster's use (Ray), added on demand

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def set_totals(self, jobs: int, epochs: int) -> None:
        self.bar.update(self.jobs_task, total=jobs)
        self.bar.update(self.epochs_task, total=epochs)

    def assigned(self, slot: int, pack: list[dict]) -> None:
        self.bar.update(self.slot_tasks[slot], description=f"  worker {slot}: {describe(pack[0]['config'], len(pack))}")

    def started(self, slot: int, event: events.Started) -> None:
        self.slot_epoch[slot] = 0
        self.bar.reset(self.slot_tasks[slot], total=event.epochs,
                       description=f"  worker {slot}: {describe(event.config, len(event.job_ids))}")

    def epoch_done(self, slot: int, event: events.Progress) -> None:
        members = len(event.job_ids)
        delta = max(0, event.epoch - self.slot_epoch[slot])
        self.slot_epoch[slot] = event.epoch
        self.bar.update(self.slot_tasks[slot], completed=event.epoch)
        self.bar.advance(self.epochs_task, delta * members)

    def job_finished(self, event: events.Finished) -> None:
        self.bar.advance(self.jobs_task, 1)

    def idle(self, slot: int) -> None:
        self.bar.update(self.slot_tasks[slot], description=f"  worker {slot}: idle")

    def cluster(self, text: str) -> None:
        """The cluster line (`ddsweep work --ray`): workers busy, nodes and GPUs in use."""
        if self.cluster_task is None:
            self.cluster_task = self.bar.add_task(text, total=None, visible=self.enabled)
        else:
            self.bar.update(self.cluster_task, description=text)

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)  # one line: grep-able
