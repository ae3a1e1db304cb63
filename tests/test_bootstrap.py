"""The Deep Bootstrap on images: CIFAR-5m shards, the ideal world on any pool, soft error, the summary.

The tests write small shards in CIFAR-5m's released format (cifar5m_part<i>.npz with X
uint8 [N, 32, 32, 3] and Y [N]) whose every image carries its own global index in its
first three bytes, so that which samples a run trained on can be read off the images.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

import ddsweep
from ddsweep.data import load_dataset
from ddsweep.data.writers import write_cifar, write_cifar5m
from ddsweep.data.noise import noisy_labels, training_subset
from ddsweep.errors import GridError
from ddsweep.grid import expand, parse_grid
from ddsweep.train.loop import train_pack
from tests.conftest import jobs_of, rows_of, write_grid

TOTAL, HELD, PARTS = 1500, 120, 3  # samples in the shards, the held-out test slice, shards


def indexed_images(first: int, n: int, rng) -> np.ndarray:
    """Random uint8 images [n, 32, 32, 3] whose first three bytes spell first + i (base 256)."""
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ids = np.arange(first, first + n)
    x[:, 0, 0, 0], x[:, 0, 0, 1], x[:, 0, 0, 2] = ids % 256, ids // 256 % 256, ids // 65536
    return x


def ids_of(images: torch.Tensor) -> torch.Tensor:
    """The index an image carries ([..., 3, 32, 32] uint8 -> [...])."""
    px = images[..., :, 0, 0].long()
    return px[..., 0] + 256 * px[..., 1] + 65536 * px[..., 2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar5m")
    rng = np.random.default_rng(5)
    return write_cifar5m(root, indexed_images(0, TOTAL, rng), rng.integers(0, 10, TOTAL), parts=PARTS)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    rng = np.random.default_rng(6)
    x = indexed_images(0, 700, rng).transpose(0, 3, 1, 2)
    xt = indexed_images(100_000, 60, rng).transpose(0, 3, 1, 2)
    return write_cifar(root, x, rng.integers(0, 10, 700), xt, rng.integers(0, 10, 60))


TRAIN = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 25, "epochs": 3}


def boot_grid(dataset: dict, model: str = "mcnn", **overrides) -> dict:
    grid = {
        "name": f"boot-{model}",
        "dataset": dataset,
        "model": {"name": model},
        "train": dict(TRAIN),
        "eval": {"every": 1},
        "grid": {"width": [2], "n_train": [100], "label_noise": [0.2], "world": ["real", "ideal"], "seed": [0]},
    }
    grid.update(overrides)
    return grid


# ----------------------------------------------------------------------------- CIFAR-5m shards


def test_shards_read_as_numpy_reads_them(shards, cifar10):
    spec = {"name": "cifar5m", "root": str(shards), "test": HELD}
    data = load_dataset(spec)
    parts = [np.load(shards / f"cifar5m_part{i}.npz") for i in range(PARTS)]
    x = np.concatenate([p["X"] for p in parts])
    y = np.concatenate([p["Y"] for p in parts])
    assert len(data.y_pool) == TOTAL - HELD and data.x_pool.shape == (TOTAL - HELD, 3, 32, 32)
    idx = torch.tensor([0, 499, 500, 1001, TOTAL - HELD - 1, 7])  # across every shard boundary
    assert torch.equal(data.pool_rows(idx, "cpu"), torch.from_numpy(x[idx.numpy()]).permute(0, 3, 1, 2))
    assert torch.equal(data.y_pool, torch.from_numpy(y[:TOTAL - HELD]).long())
    assert torch.equal(data.x_test, torch.from_numpy(x[TOTAL - HELD:]).permute(0, 3, 1, 2))  # the held-out tail
    assert torch.equal(data.y_test, torch.from_numpy(y[TOTAL - HELD:]).long())
    assert data.input_dim == 3072 and data.num_classes == 10
    # the test set of real CIFAR-10 instead: the whole shards are the pool
    other = load_dataset({"name": "cifar5m", "root": str(shards),
                          "test_from": {"name": "cifar10", "root": str(cifar10), "verify": False}})
    assert len(other.y_pool) == TOTAL and set(ids_of(other.x_test).tolist()) == set(range(100_000, 100_060))


def _shard_cases(tmp_path):
    rng = np.random.default_rng(0)
    x, y = indexed_images(0, 40, rng), rng.integers(0, 10, 40)

    def gap(root):
        write_cifar5m(root, x, y, parts=3)
        (root / "cifar5m_part1.npz").unlink()

    def save(root, **arrays):
        np.savez(root / "cifar5m_part0.npz", **arrays)

    def truncated(root):
        write_cifar5m(root, x, y, parts=1)
        p = root / "cifar5m_part0.npz"
        p.write_bytes(p.read_bytes()[:5000])

    return {
        "no shard": (lambda root: None, "no cifar5m_part0.npz"),
        "gap": (gap, "cifar5m_part1.npz: missing"),
        "compressed": (lambda root: write_cifar5m(root, x, y, parts=1, compressed=True),
                       "cifar5m_part0.npz: X: stored compressed"),
        "no Y": (lambda root: save(root, X=x), "cifar5m_part0.npz: Y: missing"),
        "dtype": (lambda root: save(root, X=x.astype(np.float32), Y=y), "cifar5m_part0.npz: X: dtype float32"),
        "shape": (lambda root: save(root, X=x[:, :, :, :1], Y=y), "cifar5m_part0.npz: X: shape [40, 32, 32, 1]"),
        "length": (lambda root: save(root, X=x, Y=y[:39]), "cifar5m_part0.npz: Y: shape [39], expected [40]"),
        "labels": (lambda root: save(root, X=x, Y=y + 5), "cifar5m_part0.npz: Y: labels from"),
        "not a zip": (lambda root: (root / "cifar5m_part0.npz").write_bytes(b"not a zip" * 100),
                      "cifar5m_part0.npz: not an .npz"),
        "truncated": (truncated, "cifar5m_part0.npz"),
    }


def test_bad_shards_are_one_line_at_plan_time(tmp_path, cli, shards):
    db = tmp_path / "r.duckdb"
    good = write_grid(tmp_path / "good.yaml", boot_grid({"name": "cifar5m", "root": str(shards), "test": HELD}))
    assert cli("plan", good, "--db", db).exit_code == 0
    before = ddsweep.query("select job_id, status from jobs order by job_id", db)
    for i, (case, (make, expected)) in enumerate(_shard_cases(tmp_path).items()):
        root = tmp_path / f"bad{i}"
        root.mkdir()
        make(root)
        g = write_grid(tmp_path / f"bad{i}.yaml", boot_grid({"name": "cifar5m", "root": str(root), "test": 10},
                                                            name=f"bad{i}"))
        r = cli("plan", g, "--db", db)
        assert r.exit_code == 2, (case, r.output)
        assert expected in r.output and len(r.output.strip().splitlines()) == 1, (case, r.output)
    assert ddsweep.query("select job_id, status from jobs order by job_id", db).equals(before)  # unchanged


@pytest.mark.parametrize("dataset, problem", [
    ({"test": TOTAL}, "holds out every sample"),
    ({"test": 10, "test_from": {"name": "cifar10"}}, "dataset.test = 10: give either test"),
    ({"test_from": {"name": "svhn"}}, "dataset.test_from.name = 'svhn': CIFAR-5m's test set can come from cifar10"),
    ({"test_from": {"name": "cifar10", "colour": 1}}, "unknown key colour"),
    ({"seed": 3}, "dataset.seed = 3: MNIST-1D's generation knob"),
    ({"download": True}, "download does not apply"),
])
def test_cifar5m_grid_errors(shards, dataset, problem):
    g = boot_grid({"name": "cifar5m", "root": str(shards), **dataset})
    with pytest.raises(GridError, match=problem):
        expand(parse_grid(g, "g.yaml"), "g.yaml")


def test_cifar5m_config_and_identity(shards, cifar10):
    from ddsweep.data import dataset_config, dataset_identity

    held = dataset_config({"name": "cifar5m", "root": str(shards)})
    assert held == {"name": "cifar5m", "root": str(shards), "test": 10_000}
    c = dataset_config({"name": "cifar5m", "root": str(shards),
                        "test_from": {"name": "cifar10", "root": str(cifar10), "verify": True}})
    assert c == {"name": "cifar5m", "root": str(shards), "test_from": {"name": "cifar10", "root": str(cifar10)}}
    assert dataset_identity(c) == {"name": "cifar5m", "test_from": {"name": "cifar10"}}  # locations do not count


# ----------------------------------------------------------------------------- the ideal world on a pool


def _recorded(monkeypatch):
    import ddsweep.data.ideal as ideal

    seen = []
    take = ideal.PoolStream.take

    def recording(self, start, count):
        x, y = take(self, start, count)
        seen.append((self, start, x, y))
        return x, y

    monkeypatch.setattr(ideal.PoolStream, "take", recording)
    return seen


@pytest.mark.parametrize("source", ["cifar5m", "cifar10"])
def test_ideal_world_draws_fresh_samples_only(source, shards, cifar10, monkeypatch):
    """Every fresh sample once, none of the real training subset, none of the test set; noisy labels
    by the real world's rule (the same draw per pool sample); on CIFAR-5m and on CIFAR-10's own pool."""
    if source == "cifar5m":
        dataset, pool, test_ids = {"name": "cifar5m", "root": str(shards), "test": HELD}, TOTAL - HELD, \
            set(range(TOTAL - HELD, TOTAL))
    else:
        dataset, pool, test_ids = {"name": "cifar10", "root": str(cifar10), "verify": False}, 700, \
            set(range(100_000, 100_060))
    seen = _recorded(monkeypatch)
    g = boot_grid(dataset, train={"optimizer": "sgd", "lr": 0.05, "batch_size": 50, "epochs": 4},
                  grid={"width": [1], "n_train": [100], "label_noise": [0.3], "world": ["ideal"], "seed": [0, 1]})
    jobs = jobs_of(g)
    train_pack(jobs, emit=lambda e: None)
    data = load_dataset(jobs[0]["config"]["dataset"])
    assert len(data.y_pool) == pool
    for job in jobs:
        c = job["config"]
        mine = [s for s in seen if _seed_of(s[0], c, data)]
        assert [s[1] for s in mine] == [0, 100, 200, 300]  # one epoch of n_train fresh samples each
        drawn = torch.cat([ids_of(s[2]) for s in mine])
        assert len(drawn) == 400 and len(drawn.unique()) == 400  # no sample twice
        real = set(training_subset({k: v for k, v in c["dataset"].items() if k not in ("root", "verify")},
                                   pool, 100, c["seed"]).tolist())
        assert not set(drawn.tolist()) & real and not set(drawn.tolist()) & test_ids
        # the labels: the real world's noise rule on these pool samples, 30% flipped to a wrong class
        ident = {k: v for k, v in c["dataset"].items() if k not in ("root", "verify")}
        want, flipped = noisy_labels(ident, data.y_pool, drawn, 0.3, c["seed"], 10)
        assert torch.equal(torch.cat([s[3] for s in mine]), want)
        assert 0.15 < flipped.float().mean() < 0.45 and (want[flipped] != data.y_pool[drawn][flipped]).all()


def _seed_of(stream, config, data) -> bool:
    from ddsweep.data.noise import pool_order

    ident = {k: v for k, v in config["dataset"].items() if k not in ("root", "verify")}
    return torch.equal(stream.stream[:50], pool_order(ident, len(data.y_pool), config["seed"])[100:150])


@pytest.mark.parametrize("dataset, n_train, horizon, allowed", [
    ("cifar5m", 100, {"epochs": 13}, "allows 48 steps (12 epochs of 4)"),  # 1380 - 100 = 1280 fresh: 12.8 epochs
    # planning counts CIFAR-10's pool as the real archive's 50000 (it does not read the files)
    ("cifar10", 20000, {"steps": 1000}, "allows 800 steps (1 epoch of 800)"),  # 30000 fresh: 1.5 epochs
])
def test_too_few_fresh_samples_is_one_line(dataset, n_train, horizon, allowed, shards, cifar10, tmp_path, cli):
    spec = {"name": "cifar5m", "root": str(shards), "test": HELD} if dataset == "cifar5m" else \
        {"name": "cifar10", "root": str(cifar10), "verify": False}
    train = {"optimizer": "sgd", "lr": 0.05, "batch_size": 25, **horizon}
    g = write_grid(tmp_path / "g.yaml", boot_grid(spec, train=train,
                                                  grid={"width": [2], "n_train": [n_train], "world": ["real", "ideal"]}))
    db = tmp_path / "r.duckdb"
    r = cli("plan", g, "--db", db)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert allowed in r.output and "fresh samples" in r.output
    assert not db.exists() or ddsweep.query("select count(*) as n from jobs", db).n[0] == 0
    # the same grid one epoch shorter plans
    fits = {"epochs": 12} if dataset == "cifar5m" else {"steps": 800}
    g = write_grid(tmp_path / "g2.yaml", boot_grid(spec, train={**train, **fits} if "steps" in train else
                                                   {**{k: v for k, v in train.items() if k != "epochs"}, **fits},
                                                   grid={"width": [2], "n_train": [n_train],
                                                         "world": ["real", "ideal"]}))
    assert cli("plan", g, "--db", db).exit_code == 0


def test_pool_ideal_pack_equals_alone(shards):
    g = boot_grid({"name": "cifar5m", "root": str(shards), "test": HELD, "augment": True}, "mcnn",
                  train={"optimizer": "sgd", "lr": 0.05, "batch_size": 25, "epochs": 2},
                  grid={"width": [2], "n_train": [50], "label_noise": [0.2], "world": ["real", "ideal"],
                        "seed": [0, 1]})
    jobs = jobs_of(g)
    packed = []
    train_pack(jobs, emit=packed.append)
    packed = rows_of(packed)
    for job in jobs:
        alone = []
        train_pack([job], emit=alone.append)
        for key, r in rows_of(alone).items():
            for m in ("train_loss", "test_loss", "train_error", "test_error"):
                assert packed[key][m] == pytest.approx(r[m], rel=1e-4, abs=1e-6), (key, m)


# ----------------------------------------------------------------------------- the bootstrap summary


def _synthetic(real_test, ideal_test, real_train, steps, seeds=(0,), width=8, jitter=0.0) -> pd.DataFrame:
    """Metric rows of one real/ideal pair: the given seed-mean curves (seed s adds +-jitter, mean unchanged)."""
    rows = []
    for world, test in (("real", real_test), ("ideal", ideal_test)):
        for i, s in enumerate(seeds):
            sign = (1 if i % 2 == 0 else -1) if len(seeds) > 1 else 0
            for step, t, tr in zip(steps, test, real_train):
                rows.append({"job_id": f"{world}-{width}-{s}", "world": world, "seed": s, "width": width,
                             "label_noise": 0.0, "n_train": 100, "epoch": step // 10, "step": step,
                             "test_error": t + sign * jitter, "test_soft_error": t + 0.1,
                             "train_error": tr if world == "real" else 0.5})
    return pd.DataFrame(rows)


def test_bootstrap_summary_known_answers():
    from ddsweep.analysis.bootstrap import bootstrap_summary, describe_all

    steps = [0, 10, 20, 40, 80, 160]
    real_train = [0.9, 0.5, 0.2, 0.02, 0.009, 0.0]  # below 1% first at step 80
    real = [0.90, 0.60, 0.40, 0.35, 0.34, 0.33]
    ideal = [0.90, 0.62, 0.37, 0.30, 0.25, 0.20]  # gaps 0, -0.02, +0.03, +0.05 | +0.09, +0.13
    a = _synthetic(real, ideal, real_train, steps, seeds=(0, 1), width=8, jitter=0.01)
    never = [0.9, 0.6, 0.4, 0.3, 0.2, 0.1]  # never below 1%
    b = _synthetic([0.9, 0.7, 0.5, 0.5, 0.5, 0.5], [0.9, 0.6, 0.5, 0.45, 0.42, 0.4], never, steps, width=32)
    table = bootstrap_summary(pd.concat([a, b]))
    t = {(r.width, r.metric): r for r in table.itertuples()}
    assert set(t) == {(8, "test_error"), (8, "test_soft_error"), (32, "test_error"), (32, "test_soft_error")}
    r = t[(8, "test_error")]
    assert r.fit_step == 80 and r.max_gap_step == 40 and r.max_gap == pytest.approx(0.05)
    assert r.end_step == 160 and r.end_gap == pytest.approx(0.13) and r.seeds == 2
    assert (r.real_end, r.ideal_end) == (pytest.approx(0.33), pytest.approx(0.20))
    s = t[(8, "test_soft_error")]  # soft error is test error + 0.1 in both worlds here: the same gaps
    assert s.max_gap == pytest.approx(0.05) and s.end_gap == pytest.approx(0.13) and s.real_end == pytest.approx(0.43)
    r = t[(32, "test_error")]  # never fitted: the largest gap over every step, +0.10 at step 10
    assert pd.isna(r.fit_step) and r.max_gap_step == 10 and r.max_gap == pytest.approx(0.10)
    assert r.end_gap == pytest.approx(0.10) and r.real_train_end == pytest.approx(0.1)
    lines = describe_all(table)
    assert any("width=8: test_error real - ideal: the real world's train error first < 1% at step 80; "
               "largest gap before it +0.050 (step 40); at the end (step 160) +0.130" in line for line in lines)
    assert any("width=32" in line and "never fell below 1%" in line for line in lines)
    # a negative gap larger in size than any positive one is the largest gap
    c = _synthetic(real, [0.90, 0.70, 0.37, 0.33, 0.25, 0.20], real_train, steps)
    assert bootstrap_summary(c).set_index("metric").loc["test_error", "max_gap"] == pytest.approx(-0.10)


def test_bootstrap_summary_needs_both_worlds():
    from ddsweep.analysis.bootstrap import bootstrap_summary
    from ddsweep.errors import UserError

    df = _synthetic([0.5, 0.4], [0.5, 0.4], [0.5, 0.1], [0, 10])
    with pytest.raises(UserError, match="needs runs in both worlds"):
        bootstrap_summary(df[df.world == "real"])


# ----------------------------------------------------------------------------- soft error, MLP on images, CLI


def test_soft_error_equals_a_hand_computation():
    """1 - mean softmax probability of the label: noisy labels for train, clean for test, on fixed weights."""
    from types import SimpleNamespace

    from ddsweep.models.mlp import PackedMLP
    from ddsweep.train.loop import _evaluate

    model = PackedMLP(2, 3, 4, 3, depth=1)
    for k in range(2):
        model.init_member(k, torch.Generator().manual_seed(k))
    g = torch.Generator().manual_seed(9)
    x_train, y_train = torch.randn(2, 5, 3, generator=g), torch.randint(0, 3, (2, 5), generator=g)
    x_test, y_test = torch.randn(7, 3, generator=g), torch.randint(0, 3, (7,), generator=g)
    members = [SimpleNamespace(clean=y_train[k], flipped=torch.zeros(5, dtype=torch.bool)) for k in range(2)]
    rows = _evaluate(model, members, x_train, y_train, SimpleNamespace(x_test=x_test, y_test=y_test), "cross_entropy")
    w, b = model.matrices(model.flat)
    for k, row in enumerate(rows):
        for x, y, key in ((x_train[k], y_train[k], "train_soft_error"), (x_test, y_test, "test_soft_error")):
            z = (torch.relu(x.double() @ w[0][k].double() + b[0][k].double()) @ w[1][k].double() + b[1][k].double())
            z = z.numpy()
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            want = 1 - np.mean([p[i, y[i]] for i in range(len(y))])
            assert row[key] == pytest.approx(want, abs=1e-6) and 0 <= row[key] <= 1


def test_image_mlp_flattens_and_normalises_per_channel():
    from ddsweep.models.mlp import PackedImageMLP, PackedMLP

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    img = PackedImageMLP(2, 3 * 32 * 32, 5, 10, depth=2, mean=mean, std=std)
    plain = PackedMLP(2, 3 * 32 * 32, 5, 10, depth=2)
    for k in range(2):
        img.init_member(k, torch.Generator().manual_seed(k))
    plain.flat.copy_(img.flat)
    x = torch.randint(0, 256, (2, 6, 3, 32, 32), dtype=torch.uint8)
    by_hand = ((x.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).reshape(2, 6, -1)
    torch.testing.assert_close(img(x), plain(by_hand), rtol=1e-5, atol=1e-5)
    y = torch.randint(0, 10, (2, 6))
    torch.testing.assert_close(img.loss_and_grad(x, y, "cross_entropy"), plain.loss_and_grad(by_hand, y, "cross_entropy"),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(img.grad, plain.grad, rtol=1e-4, atol=1e-6)


def test_mlp_on_images_pack_equals_alone(shards):
    g = boot_grid({"name": "cifar5m", "root": str(shards), "test": HELD}, "mlp",
                  train={"optimizer": "sgd", "lr": 0.05, "batch_size": 25, "epochs": 2, "augment": True},
                  grid={"width": [8, 16], "n_train": [50], "label_noise": [0.2], "world": ["real", "ideal"],
                        "seed": [0]})
    jobs = jobs_of(g)
    assert {j["config"]["dataset"].get("augment") for j in jobs} == {True}
    packed = []
    train_pack(jobs, emit=packed.append)
    packed = rows_of(packed)
    assert len(packed) == 4 * 3
    for job in jobs:
        alone = []
        train_pack([job], emit=alone.append)
        for key, r in rows_of(alone).items():
            for m in ("train_loss", "test_loss", "test_soft_error", "train_soft_error"):
                assert packed[key][m] == pytest.approx(r[m], rel=1e-4, abs=1e-6), (key, m)


def test_augment_is_a_train_axis(shards):
    base = {"name": "cifar5m", "root": str(shards), "test": HELD}
    jobs = expand(parse_grid(boot_grid(base, grid={"width": [2], "n_train": [50], "augment": [False, True]})))
    assert sorted(bool(j.config["dataset"].get("augment")) for j in jobs) == [False, True]
    # dataset.augment is the default of train.augment, and a job planned either way has the same id
    old = expand(parse_grid(boot_grid({**base, "augment": True}, grid={"width": [2], "n_train": [50]})))
    new = expand(parse_grid(boot_grid(base, train={**TRAIN, "augment": True}, grid={"width": [2], "n_train": [50]})))
    assert [j.job_id for j in old] == [j.job_id for j in new]
    off = expand(parse_grid(boot_grid({**base, "augment": True}, train={**TRAIN, "augment": False},
                                      grid={"width": [2], "n_train": [50]})))
    assert "augment" not in off[0].config["dataset"]
    with pytest.raises(GridError, match="grid.augment = 1: must be true or false"):
        expand(parse_grid(boot_grid(base, grid={"width": [2], "n_train": [50], "augment": [1]}), "g.yaml"), "g.yaml")
    mnist1d = {"name": "t", "dataset": {"name": "mnist1d", "pool": 1200, "test": 600}, "model": {"name": "mlp"},
               "grid": {"width": [2], "n_train": [50], "augment": [True]}}
    with pytest.raises(GridError, match="grid.augment = True: augmentation .* is for image datasets"):
        expand(parse_grid(mnist1d, "g.yaml"), "g.yaml")


def test_bootstrap_sweep_through_the_cli(shards, tmp_path, cli):
    """mcnn, preact_resnet18 and the MLP in both worlds on CIFAR-5m shards: plan, work, summary, plot,
    export and import; every evaluation has a soft error in [0, 1]."""
    db = tmp_path / "boot.duckdb"
    dataset = {"name": "cifar5m", "root": str(shards), "test": HELD}
    train = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 25, "epochs": 3, "augment": True}
    for model in ("mcnn", "preact_resnet18", "mlp"):
        g = boot_grid(dataset, model, train=train,
                      grid={"width": [1] if model != "mlp" else [8], "n_train": [50], "label_noise": [0.2],
                            "world": ["real", "ideal"], "seed": [0]})
        r = cli("plan", write_grid(tmp_path / f"{model}.yaml", g), "--db", db)
        assert r.exit_code == 0, r.output
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    df = ddsweep.query("select j.sweep, j.world, j.augment, m.* from metrics m join jobs j using (job_id)", db)
    assert len(df) == 6 * 4 and set(df.world) == {"real", "ideal"} and df.augment.all()
    for col in ("train_soft_error", "test_soft_error"):
        assert df[col].notna().all() and df[col].between(0, 1).all()
    assert (df.test_soft_error >= 0.0).all() and (df.test_soft_error > 0.3).any()  # 10 classes, 50 samples: far from 0
    r = cli("summary", "--db", db, "--sweep", "boot-mcnn")
    assert r.exit_code == 0, r.output
    assert "Deep Bootstrap" in r.output and "test_soft_error real - ideal" in r.output and "at the end (step 6)" in r.output
    r = cli("plot", "bootstrap", "--db", db, "--sweep", "boot-mlp", "--metric", "test_soft_error",
            "--out", tmp_path / "boot.png")
    assert r.exit_code == 0 and (tmp_path / "boot.png").stat().st_size > 10_000, r.output
    r = cli("plot", "bootstrap", "--db", db, "--sweep", "boot-mlp", "--metric", "test_nonsense", "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and "--metric test_nonsense: not a stored metric" in r.output
    # export and import carry the soft errors
    out = tmp_path / "boot.csv"
    assert cli("export", "--db", db, "--sweep", "boot-mlp", "--format", "csv", "--out", out).exit_code == 0
    exported = pd.read_csv(out)
    assert {"train_soft_error", "test_soft_error"} <= set(exported.columns)
    db2 = tmp_path / "again.duckdb"
    r = cli("import", out, "--db", db2, "--sweep", "again")
    assert r.exit_code == 0, r.output
    back = ddsweep.query("select m.epoch, m.test_soft_error, m.train_soft_error from metrics m order by all", db2)
    mine = df[df.sweep == "boot-mlp"][["epoch", "test_soft_error", "train_soft_error"]]
    assert sorted(back.test_soft_error.round(9)) == sorted(mine.test_soft_error.round(9))


@pytest.mark.parametrize("preset, jobs", [("resnet18", 18), ("mcnn", 30), ("mlp", 12)])
def test_bootstrap_presets(preset, jobs, monkeypatch):
    """The CIFAR-5m presets plan (the shards' size faked: 6,002,688 samples as released), draw 5M fresh
    samples per ideal run within the pool, and label their GPU cost an estimate."""
    import ddsweep.data.cifar5m as cifar5m
    from ddsweep.grid import load_grid
    from tests.conftest import ROOT

    monkeypatch.setattr(cifar5m, "total_size", lambda spec: 6_002_688)
    monkeypatch.setattr(cifar5m, "availability_problem", lambda spec: None)
    path = ROOT / "sweeps" / f"cifar5m-bootstrap-{preset}.yaml"
    text = path.read_text()
    assert "Deep Bootstrap" in text.split("\n", 1)[0] and "ESTIMATE" in text and "no gpu ran" in text.lower()
    planned = expand(load_grid(path), path)
    assert len(planned) == jobs and {j.epochs for j in planned} == {100}
    assert {j.config["train"].get("world", "real") for j in planned} == {"real", "ideal"}
    assert all(j.config["dataset"]["augment"] and j.config["n_train"] == 50_000 for j in planned)


def test_ideal_world_never_draws_the_validation_split(shards, monkeypatch):
    """With `val: N` the ideal world's fresh samples come from the pool less the split, as the real world's."""
    from ddsweep.data.noise import validation_split

    seen = _recorded(monkeypatch)
    dataset = {"name": "cifar5m", "root": str(shards), "test": HELD, "val": 300}
    g = boot_grid(dataset, "mlp", train={**TRAIN, "epochs": 9},
                  grid={"width": [4], "n_train": [100], "world": ["ideal"], "seed": [0]})
    jobs = jobs_of(g)
    train_pack(jobs, emit=lambda e: None)
    drawn = torch.cat([ids_of(s[2]) for s in seen])
    held = validation_split({k: v for k, v in jobs[0]["config"]["dataset"].items() if k != "root"}, TOTAL - HELD)
    assert len(drawn) == 900 and len(drawn.unique()) == 900 and not set(drawn.tolist()) & set(held.tolist())
    with pytest.raises(GridError, match="allows 36 steps"):  # 1380 - 300 - 100 = 980 fresh: 9 epochs of 4
        expand(parse_grid(boot_grid(dataset, "mlp", train={**TRAIN, "epochs": 10},
                                    grid={"width": [4], "n_train": [100], "world": ["ideal"]}), "g.yaml"), "g.yaml")
