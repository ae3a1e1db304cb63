"""How `ddsweep work` shares queued packs among its worker slots (ddsweep.workers.packing.plan_slots)."""

import random

from ddsweep.workers.packing import plan_slots


def lpt(costs, loads):
    """Largest first onto the least loaded slot: the plain greedy the planner starts from."""
    loads = list(loads)
    for c in sorted(costs, reverse=True):
        j = min(range(len(loads)), key=loads.__getitem__)
        loads[j] += c
    return max(loads)


def makespan(plan, costs, loads):
    return max(load + sum(costs[i] for i in share) for load, share in zip(loads, plan))


def test_default_grid_packs_on_two_workers_end_together():
    # seconds each pack of the default grid took over its 500 epochs on this project's machine
    # (widths 300, 227, 2..32, 75..99, 172, 130, 43..56)
    costs = [22.2, 15.7, 13.8, 12.5, 10.8, 8.1, 7.1]
    plan = plan_slots(costs, [0.0, 0.0])
    assert sorted(i for share in plan for i in share) == list(range(len(costs)))
    assert abs(lpt(costs, [0, 0]) - 47.4) < 1e-9  # largest first leaves one worker idle for 2.7 s
    assert abs(makespan(plan, costs, [0, 0]) - 45.5) < 1e-9  # the best split of these seven
    assert all(share == sorted(share, key=lambda i: -costs[i]) for share in plan)  # largest first within a slot


def test_work_already_running_counts():
    costs = [22.2, 15.7, 13.8, 12.5, 10.8, 8.1, 7.1]
    plan = plan_slots(costs, [30.0, 0.0])  # slot 0 has 30 s left of the pack it is training
    assert abs(makespan(plan, costs, [30.0, 0.0]) - 60.4) < 1e-9
    assert 0 in plan[1]  # the largest queued pack goes to the free slot


def test_never_worse_than_largest_first_and_every_pack_once():
    rng = random.Random(0)
    for _ in range(300):
        n, slots = rng.randint(1, 14), rng.randint(1, 5)
        costs = [rng.uniform(1, 100) for _ in range(n)]
        loads = [rng.choice([0.0, rng.uniform(0, 80)]) for _ in range(slots)]
        plan = plan_slots(costs, loads)
        assert len(plan) == slots and sorted(i for share in plan for i in share) == list(range(n))
        assert makespan(plan, costs, loads) <= lpt(costs, loads) + 1e-9
