"""The options of `ddsweep work`: built once (by ddsweep.api.work / the CLI), checked, passed down.

The coordinator, every worker process (or Ray actor) and the training loop read their
settings from one frozen WorkOptions, never from the environment: the DDSWEEP_* variables
(ddsweep.env) are read when it is built, and `recorded()` is what each finished job keeps
in `jobs.run_options`, so a figure can say how its runs were trained. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddsweep.errors import UserError
from ddsweep.models.speed import SpeedSettings


@dataclass(frozen=True)
class WorkOptions:
    threads: int = 1  # torch threads per worker
    pack_size: int | None = None  # jobs per pack; None: automatic (ddsweep.workers.packing)
    lease_seconds: float = 120.0  # a job stays leased this long without a heartbeat
    flush_every: float = 5.0  # seconds between database writes (and at each job's end)
    flush_wait: float = 1.0  # seconds a flush waits for a busy database before training goes on
    checkpoint_dir: str | None = None  # None: <db>.ckpt (set by `work`)
    checkpoint_every: float = 30.0  # seconds between checkpoints (0: every epoch)
    retries: int = 2  # more attempts after a failed one
    show_progress: bool = True
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    pack_memory_gb: float | None = None  # GiB a pack of conv models may use; None: from the device

    @classmethod
    def from_env(cls, compile: bool | None = None, cuda_graphs: bool | None = None,
                 dense_members: bool | None = None, pack_memory_gb: float | None = None,
                 **options) -> WorkOptions:
        """Options with the speed settings and pack memory given, else from their DDSWEEP_* variables,
        else the defaults; checked (UserError: one line naming the bad option or variable)."""
        from ddsweep import env

        env.check_all()  # every variable, also those read later (the dataset locations)
        speed = SpeedSettings.from_env(compile, cuda_graphs, dense_members)
        if pack_memory_gb is None:
            pack_memory_gb = env.value("DDSWEEP_PACK_MEMORY_GB")
        made = cls(speed=speed, pack_memory_gb=pack_memory_gb, **options)
        made.check()
        return made

    def check(self) -> None:
        if self.threads < 1:
            raise UserError(f"--threads = {self.threads}: must be at least 1")
        if self.pack_size is not None and self.pack_size < 1:
            raise UserError(f"--pack-size = {self.pack_size}: must be at least 1")
        if not self.lease_seconds > 0:
            raise UserError(f"--lease = {self.lease_seconds}: must be more than 0 seconds")
        if self.retries < 0:
            raise UserError(f"--retries = {self.retries}: must be 0 or more")
        if not self.flush_every > 0:
            raise UserError(f"--flush-every = {self.flush_every}: must be more than 0 seconds")
        if self.checkpoint_every < 0:
            raise UserError(f"--checkpoint-every = {self.checkpoint_every}: must be 0 (every epoch) or more")
        if self.pack_memory_gb is not None and not 0 < self.pack_memory_gb < float("inf"):
            raise UserError(f"--pack-memory-gb = {self.pack_memory_gb}: must be a number of GiB above 0 (e.g. 20)")

    @property
    def pack_memory_bytes(self) -> int | None:
        return None if self.pack_memory_gb is None else int(self.pack_memory_gb * (1 << 30))

    def recorded(self, device: str) -> dict:
        """What a finished job keeps of how it was trained (`jobs.run_options`, JSON)."""
        from ddsweep import __version__

        return {"ddsweep": __version__, "device": device, "threads": self.threads, "pack_size": self.pack_size,
                "compile": self.speed.compile, "cuda_graphs": self.speed.cuda_graphs,
                "dense_members": self.speed.dense_members, "pack_memory_gb": self.pack_memory_gb}
