"""The GPU speed settings of conv packs (ddsweep.models.conv): they change how fast a pack steps,
never what it computes (beyond float rounding; see tests/test_conv_speed.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedSettings:
    compile: bool = False  # torch.compile the network (about 30 s per shape: pays in long runs)
    cuda_graphs: bool = True  # replay a CUDA graph per batch shape for each training step
    dense_members: bool | None = None  # wide members one after another as dense networks; None: automatic

    @classmethod
    def from_env(cls, compile: bool | None = None, cuda_graphs: bool | None = None,
                 dense_members: bool | None = None) -> SpeedSettings:
        """Settings given here, else from $DDSWEEP_COMPILE, $DDSWEEP_CUDA_GRAPHS, $DDSWEEP_DENSE_MEMBERS,
        else the defaults; a bad variable is a UserError naming it."""
        from ddsweep import env

        def pick(given, name, default):
            if given is not None:
                return given
            from_env = env.value(name)
            return default if from_env is None else from_env

        return cls(compile=pick(compile, "DDSWEEP_COMPILE", cls.compile),
                   cuda_graphs=pick(cuda_graphs, "DDSWEEP_CUDA_GRAPHS", cls.cuda_graphs),
                   dense_members=pick(dense_members, "DDSWEEP_DENSE_MEMBERS", None))
