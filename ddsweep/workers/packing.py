"""Group leased jobs into packs: jobs sharing tensor shapes train in one step."""

from __future__ import annotations

# Parameter budget of one pack (members x parameters per member): big enough that
# small models amortize per-step overhead, small enough to stay in cache / memory.
PACK_PARAM_BUDGET = {"cpu": 4_000_000, "cuda": 200_000_000}
MAX_MEMBERS = {"cpu": 64, "cuda": 512}
# Memory one pack of conv models may use (parameters, optimizer state, one batch's
# activations, each member's copy of its training images), split among the workers that
# share a device (--jobs-per-device); --pack-memory-gb overrides it. A worker on a
# GPU with less memory makes its packs smaller still (see fitting_members).
PACK_MEMORY_BUDGET = {"cpu": 4 << 30, "cuda": 32 << 30}
# Share of a GPU's memory that a worker's packs plan for: the rest is the CUDA context,
# cuDNN's workspaces, the caching allocator's slack and evaluation's activations.
DEVICE_MEMORY_USABLE = 0.75
# On a CPU a grouped convolution costs about twice as much per sample as the same
# member's dense one (measured: mcnn k=2..16, oneDNN, 1 thread), so conv jobs train one
# per pack there and the worker processes give the parallelism.
MAX_CONV_MEMBERS = {"cpu": 1, "cuda": 512}


def model_params(config: dict, input_dim: int | None = None, classes: int | None = None, device: str = "cpu") -> int:
    """Parameter count of one member at the width it trains at on `device` (an MLP's input and output
    sizes: MNIST-1D's 40 and 10, or an image dataset's C x 32 x 32 and classes, unless given)."""
    from ddsweep.data import image_info, is_vision
    from ddsweep.models import CONV_MODELS, TEXT_MODELS, train_width

    if config["model"]["name"] in TEXT_MODELS:
        return text_arch(config).size
    if config["model"]["name"] in CONV_MODELS:
        from ddsweep.models.arch import arch_for

        return arch_for(config, train_width(config, device)).size

    if is_vision(config["dataset"]["name"]) and (input_dim is None or classes is None):
        from ddsweep.data.vision import IMAGE_SIZE

        info = image_info(config["dataset"])
        input_dim, classes = input_dim or info.channels * IMAGE_SIZE * IMAGE_SIZE, classes or info.classes
    h, depth = train_width(config, device), config["model"]["depth"]
    dims = [input_dim or 40] + [h] * depth + [classes or 10]
    return sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))


def text_arch(config: dict):
    """The transformer of a job config, for its dataset's vocabularies (no torch)."""
    from ddsweep.data.translation import text_shape
    from ddsweep.models.transformer_arch import arch_from_config

    shape = text_shape(config["dataset"])
    return arch_from_config(config, shape.src_vocab, shape.tgt_vocab)


def text_member_bytes(config: dict, device: str) -> int:
    """Estimated memory of one transformer member in training: parameters with gradient, copies and
    Adam's state (~28 bytes each), one batch's activations at twice the mean sentence lengths (a batch
    is cut to its longest sentences; x1.5 for autograd's extras), its rows twice (int32)."""
    from ddsweep.data.translation import text_shape

    shape, arch = text_shape(config["dataset"]), text_arch(config)
    bf16 = config["train"].get("precision", "auto") == "bf16" or (
        device.startswith("cuda") and config["train"].get("precision", "auto") == "auto")
    acts = arch.activations(2 * shape.src_tokens, 2 * shape.tgt_tokens)
    return int(28 * arch.size + 1.5 * (2 if bf16 else 4) * acts * config["train"]["batch_size"]
               + 2 * 4 * shape.row * config["n_train"])


def member_bytes(config: dict, device: str) -> int:
    """Estimated memory of one conv member in training (ddsweep.models.memory), with one pass of
    the job's step: its micro-batch or penalty block where the step is split."""
    from ddsweep.grid import pass_samples
    from ddsweep.models.memory import member_bytes as estimate

    return estimate(config, device, samples=pass_samples(config["train"], config["n_train"]))


def pack_memory_budget(device: str, share: float = 1.0, device_bytes: int | None = None,
                       memory: int | None = None) -> int:
    """Bytes one pack may use on `device`, for a worker given `share` of it; `device_bytes`: the
    device's memory, where known (a worker knows its GPU's); `memory`: the user's budget
    (WorkOptions.pack_memory_bytes), which wins where given."""
    if memory is not None:
        return memory
    budget = PACK_MEMORY_BUDGET["cuda" if device.startswith("cuda") else "cpu"]
    if device_bytes is not None:
        budget = min(budget, DEVICE_MEMORY_USABLE * device_bytes)
    return int(budget * share)


def auto_pack_size(config: dict, device: str, share: float = 1.0, memory: int | None = None) -> int:
    from ddsweep.models import CONV_MODELS, TEXT_MODELS

    kind = "cuda" if device.startswith("cuda") else "cpu"
    size = min(MAX_MEMBERS[kind], PACK_PARAM_BUDGET[kind] // max(1, model_params(config, device=device)))
    if config["model"]["name"] in CONV_MODELS:
        size = min(size, MAX_CONV_MEMBERS[kind], fitting_members(config, device, share, memory=memory))
    elif config["model"]["name"] in TEXT_MODELS:
        size = min(size, fitting_members(config, device, share, memory=memory))
    return max(1, size)


def fitting_members(config: dict, device: str, share: float = 1.0, device_bytes: int | None = None,
                    memory: int | None = None) -> int | None:
    """How many members like `config` train together in a pack's memory budget (this worker's
    `share` of a device of `device_bytes`, where known, or `memory` bytes where the user gave
    a budget); None where no estimate applies (MLPs)."""
    from ddsweep.models import CONV_MODELS, TEXT_MODELS

    name = config["model"]["name"]
    if name not in CONV_MODELS and name not in TEXT_MODELS:
        return None
    need = text_member_bytes(config, device) if name in TEXT_MODELS else member_bytes(config, device)
    return max(1, pack_memory_budget(device, share, device_bytes, memory) // max(1, need))


# A CPU step of a pack of K MLPs with P parameters each costs about STEP_US + MEMBER_US K +
# PARAM_US K P microseconds, its share of evaluation and per-epoch work included (fitted to
# the wall time of each pack of the default grid over its 500 epochs and 53 evaluations, one
# thread per worker, within 3%: ten width-32 members cost about as much as one width-227 model).
STEP_US, MEMBER_US, PARAM_US = 175.0, 26.0, 0.0086


def cost(pack: list[dict]) -> float:
    """Rough work of a pack, for largest-first scheduling: for MLPs the step-cost model above
    times steps (per-step overheads dominate narrow packs); for conv models members x
    multiply-adds per sample x samples x epochs."""
    from ddsweep.models import CONV_MODELS, TEXT_MODELS

    c = pack[0]["config"]
    epochs = max(j["epochs"] for j in pack)
    if c["model"]["name"] in TEXT_MODELS:
        from ddsweep.data.translation import text_shape

        shape = text_shape(c["dataset"])
        return len(pack) * text_arch(c).macs(shape.src_tokens, shape.tgt_tokens) * c["n_train"] * epochs
    if c["model"]["name"] in CONV_MODELS:
        from ddsweep.models.arch import arch_for

        return len(pack) * arch_for(c).macs * c["n_train"] * epochs
    from ddsweep.grid import epoch_steps

    K, batch = len(pack), min(c["train"]["batch_size"], c["n_train"])
    steps = epoch_steps(c["n_train"], batch) * epochs
    return steps * (STEP_US + MEMBER_US * K + PARAM_US * K * model_params(c) * batch / 100)


def make_packs(jobs: list[dict], pack_size: int | None, device: str, share: float = 1.0,
               memory: int | None = None) -> list[list[dict]]:
    """Packs of jobs with equal pack keys and training widths, largest first (the slowest start early);
    `share`: of the device, for each worker (1 / jobs per device); `memory`: see pack_memory_budget."""
    from ddsweep.models import train_width

    groups: dict[tuple, list[dict]] = {}
    for job in jobs:
        groups.setdefault((job["pack_key"], train_width(job["config"], device)), []).append(job)
    packs = []
    for members in groups.values():
        size = pack_size or auto_pack_size(members[0]["config"], device, share, memory)
        packs.extend(members[i:i + size] for i in range(0, len(members), size))
    return sorted(packs, key=cost, reverse=True)


# Above this many queued packs, taking them largest first is as good as a plan (and cheaper).
PLAN_MAX_PACKS = 48


def plan_slots(costs: list[float], loads: list[float]) -> list[list[int]]:
    """Which packs (indices of `costs`) each slot should train, largest first, the slots already
    having `loads` of work: largest-first onto the least loaded slot, then moves and swaps off the
    most loaded slot while they shorten it. (Largest-first alone can leave a slot idle for most of
    a pack's length at the end: on the default grid's 7 packs and 2 workers, 2 s of 47.)"""
    loads = list(loads)
    plan: list[list[int]] = [[] for _ in loads]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        j = min(range(len(loads)), key=loads.__getitem__)
        plan[j].append(i)
        loads[j] += costs[i]
    for _ in range(10 * len(costs)):
        hi = max(range(len(loads)), key=loads.__getitem__)
        best = _best_move(costs, plan, loads, hi)
        if best is None:
            break
        _, lo, i, k = best
        plan[hi].remove(i)
        plan[lo].append(i)
        d = costs[i]
        if k is not None:
            plan[lo].remove(k)
            plan[hi].append(k)
            d -= costs[k]
        loads[hi] -= d
        loads[lo] += d
    return [sorted(p, key=lambda i: -costs[i]) for p in plan]


def _best_move(costs, plan, loads, hi):
    """The move of pack i off slot `hi` to slot lo (swapping pack k back, or None) that leaves
    the longer of the two shortest, if it is shorter than `hi` now: (longer, lo, i, k), or None."""
    best = None
    for lo in (j for j in range(len(loads)) if j != hi):
        for i in plan[hi]:
            for k in [None, *plan[lo]]:
                d = costs[i] - (costs[k] if k is not None else 0.0)
                longer = max(loads[hi] - d, loads[lo] + d)
                if d > 0 and longer < loads[hi] * (1 - 1e-9) and (best is None or longer < best[0]):
                    best = (longer, lo, i, k)
    return best
