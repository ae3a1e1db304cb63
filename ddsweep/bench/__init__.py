"""`python -m ddsweep.bench`: ddsweep against the plain training loop, measured in one run.

Modules: harness (the ddsweep arm and the machine's matmul rates, shared), mlp (the
MNIST-1D MLP cases, the default), vision (the conv nets on CIFAR-shaped data: --model),
store (the results database at 20M metric rows: --store), passes (a step's batch in micro-batches or
penalty blocks against the unsplit step: --passes).
"""

from __future__ import annotations

import sys


def main(argv=None) -> list[dict]:
    """The MLP benchmark, with --model the conv nets', with --store the database's (each module's --help
    lists its options)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--passes" in argv:
        from ddsweep.bench.passes import main as passes_main

        return passes_main(argv)
    if "--store" in argv:
        from ddsweep.bench.store import main as store_main

        return store_main(argv)
    if any(a == "--model" or a.startswith("--model=") for a in argv):
        from ddsweep.bench.vision import main as vision_main

        return vision_main(argv)
    from ddsweep.bench.mlp import main as mlp_main

    return mlp_main(argv)
