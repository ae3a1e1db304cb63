"""Label noise and subsets follow the paper: rate p, always a wrong class, nested, width-independent."""

import torch

from ddsweep.data import load_dataset
from ddsweep.data.noise import noisy_labels, training_subset
from ddsweep.grid import expand, parse_grid
from ddsweep.train.loop import training_set
from tests.conftest import TINY

DATASET = {"name": "mnist1d", "pool": 1200, "test": 600, "seed": 42}


def test_rate_and_always_incorrect():
    y = torch.randint(0, 10, (20000,))
    idx = torch.arange(20000)
    for p in (0.05, 0.15, 0.5):
        labels, flipped = noisy_labels(DATASET, y, idx, p, seed=3, num_classes=10)
        rate = flipped.float().mean().item()
        assert abs(rate - p) < 4 * (p * (1 - p) / 20000) ** 0.5  # binomial, 4 sigma
        assert bool((labels[flipped] != y[flipped]).all())  # a flipped label is never the true one
        assert bool((labels[~flipped] == y[~flipped]).all())
        # the wrong class is uniform over the other 9
        offsets = ((labels[flipped] - y[flipped]) % 10).bincount(minlength=10)[1:].float()
        assert offsets.min() > 0.7 * offsets.mean()


def test_subsets_nest_and_noise_is_drawn_once():
    small = training_subset(DATASET, 1200, 300, seed=1)
    large = training_subset(DATASET, 1200, 900, seed=1)
    assert torch.equal(large[:300], small)
    y = torch.randint(0, 10, (1200,))
    a, fa = noisy_labels(DATASET, y, small, 0.2, 1, 10)
    b, fb = noisy_labels(DATASET, y, large, 0.2, 1, 10)
    assert torch.equal(a, b[:300]) and torch.equal(fa, fb[:300])
    c, _ = noisy_labels(DATASET, y, small, 0.2, 2, 10)
    assert not torch.equal(a, c)  # another seed, another draw


def test_identical_across_widths_and_test_labels_clean():
    data = load_dataset(DATASET)
    jobs = [j for j in expand(parse_grid(TINY)) if j.config["label_noise"] == 0.2]
    assert {j.config["width"] for j in jobs} == {4, 16}
    sets = [training_set(j.config, data) for j in jobs]
    for other in sets[1:]:
        for a, b in zip(sets[0], other):
            assert torch.equal(a, b)
    assert sets[0][2].any()
    assert torch.equal(load_dataset(DATASET).y_test, data.y_test)  # test labels: untouched


def test_draws_do_not_depend_on_key_order():
    shuffled = {"seed": 42, "test": 600, "pool": 1200, "name": "mnist1d"}
    assert torch.equal(training_subset(DATASET, 1200, 300, 1), training_subset(shuffled, 1200, 300, 1))
    y = torch.randint(0, 10, (1200,))
    idx = torch.arange(1200)
    assert torch.equal(noisy_labels(DATASET, y, idx, 0.3, 1, 10)[0], noisy_labels(shuffled, y, idx, 0.3, 1, 10)[0])
