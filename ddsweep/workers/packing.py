"""Group leased jobs into packs: jobs sharing tensor shapes train in one step."""

from __future__ import annotations

# Parameter budget of one pack (members x parameters per member): big enough that
# small models amortize per-step overhead, small enough to stay in cache / memory.
PACK_PARAM_BUDGET = {"cpu": 4_000_000, "cuda": 200_000_000}
MAX_MEMBERS = {"cpu": 64, "cuda": 512}


def model_params(config: dict, input_dim: int = 40, classes: int = 10, device: str = "cpu") -> int:
    """Parameter count of one member (MLP) at the width it trains at on `device`."""
    from ddsweep.models import train_width

    h, depth = train_width(config, device), config["model"]["depth"]
    dims = [input_dim] + [h] * depth + [classes]
    return sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))


def auto_pack_size(config: dict, device: str) -> int:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return max(1, min(MAX_MEMBERS[kind], PACK_PARAM_BUDGET[kind] // max(1, model_params(config, device=device))))


def cost(pack: list[dict]) -> float:
    """Rough work of a pack (for largest-first scheduling): members x params x samples x epochs."""
    c = pack[0]["config"]
    return len(pack) * model_params(c) * c["n_train"] * max(j["epochs"] for j in pack)


def make_packs(jobs: list[dict], pack_size: int | None, device: str) -> list[list[dict]]:
    """Packs of jobs with equal pack keys and training widths, largest first (the slowest start early)."""
    from ddsweep.models import train_width

    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        groups.setdefault((job["pack_key"], train_width(job["config"], device)), []).append(job)
    packs = []
    for members in groups.values():
        size = pack_size or auto_pack_size(members[0]["config"], device)
        packs.extend(members[i:i + size] for i in range(0, len(members), size))
    return sorted(packs, key=cost, reverse=True)
