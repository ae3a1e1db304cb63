"""A step's batch in passes (ddsweep.train.passes): gradient accumulation (`micro_batch`), the gradient
penalty over blocks (`penalty_block`), how planning resolves and checks both, and SGD's Nesterov momentum.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ddsweep
import ddsweep.train.knobs as knobs
from ddsweep.data.writers import write_cifar
from ddsweep.errors import GridError
from ddsweep.grid import expand, parse_grid, train_recipe
from ddsweep.models.mcnn import PackedMCNN
from ddsweep.models.mlp import PackedMLP
from ddsweep.train.optim import PackedSGD
from ddsweep.train.passes import StepPasses
from tests.conftest import TINY, write_grid
from tests.test_knobs import _train, grid

K, D, C, B = 3, 5, 3, 50


def tiny_mlp(seed=0, width=8, batch=B):
    model = PackedMLP(K, D, width, C, depth=2)
    for k in range(K):
        model.init_member(k, torch.Generator().manual_seed(seed * 10 + k), width)
    g = torch.Generator().manual_seed(seed)
    return model, torch.randn(K, batch, D, generator=g), torch.randint(0, C, (K, batch), generator=g)


# ----------------------------------------------------------------------------- accumulation


@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
@pytest.mark.parametrize("micro", [1, 7, 16, 25])
def test_micro_batches_sum_to_the_full_batch_gradient(loss_name, micro):
    """Without BatchNorm the accumulated gradient and loss are the full batch's, to float rounding
    (7 and 16 leave a shorter last micro-batch, which weighs by its size)."""
    model, x, y = tiny_mlp()
    full_loss = model.loss_and_grad(x, y, loss_name).clone()
    full = model.grad.clone()
    loss, hg = StepPasses(model, loss_name, micro).gradient(x, y, with_loss=True)
    assert hg is None
    torch.testing.assert_close(model.grad, full, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-7)


def test_one_accumulated_step_equals_one_full_batch_step_with_every_knob():
    """Clipping, flooding (on the full batch's loss), the penalty and SGD act on the accumulated gradient:
    the step taken in micro-batches of 16 moves the weights as the unsplit one does."""
    recipes = [train_recipe({"train": {"optimizer": "sgd", "lr": 0.125, "momentum": 0.9, "batch_size": B,
                                       "loss": "cross_entropy", **t}})
               for t in ({"grad_clip": 0.05}, {"flood": 5.0, "grad_penalty": 0.5}, {})]
    after = []
    for micro in (None, 16):
        model, x, y = tiny_mlp(1)
        kn = knobs.StepKnobs(recipes, "cpu")
        opt = PackedSGD(model.flat, model.grad, [0.125] * K, [0.9] * K, [0.0] * K)
        for _ in range(2):
            loss, hg = StepPasses(model, "cross_entropy", micro).gradient(x, y, with_loss=True, penalty=kn.penalty)
            kn.apply(model, loss, hg, opt.lr)
            opt.step()
        after.append(model.flat.clone())
        stats = kn.epoch_stats()
        assert stats[0]["clip_rate"] == 1.0 and stats[1]["ascent_fraction"] == 1.0  # the knobs did act
    torch.testing.assert_close(after[1], after[0], rtol=1e-5, atol=1e-6)


def test_batchnorm_normalises_each_micro_batch_with_its_own_statistics():
    """With BatchNorm the accumulated gradient is the size-weighted sum of each micro-batch's own gradient
    (its own batch statistics), the running statistics move once per micro-batch, and the result is
    another function than the full batch's (why micro_batch is part of a job's config)."""
    torch.manual_seed(0)

    def model():
        m = PackedMCNN(2, 2, 10)
        for k in range(2):
            m.init_member(k, torch.Generator().manual_seed(k), 2)
        return m

    x = torch.randint(0, 256, (2, 12, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (2, 12))
    split = model()
    StepPasses(split, "cross_entropy", 5).gradient(x, y)
    by_hand, want = model(), torch.zeros_like(split.grad)
    for a in range(0, 12, 5):
        by_hand.loss_and_grad(x[:, a:a + 5], y[:, a:a + 5], "cross_entropy")
        want += by_hand.grad * (min(a + 5, 12) - a) / 12
    torch.testing.assert_close(split.grad, want, rtol=1e-5, atol=1e-7)
    assert torch.equal(split.buffers, by_hand.buffers)  # three momentum updates of the running statistics
    whole = model()
    whole.loss_and_grad(x, y, "cross_entropy")
    assert not torch.allclose(split.grad, whole.grad, rtol=1e-3)
    assert not torch.equal(split.buffers, whole.buffers)


@pytest.mark.parametrize("samples, blocks", [(None, False), (4, True)])
def test_penalty_on_a_conv_model_restores_weights_and_batchnorm_statistics(samples, blocks):
    """The penalty's probe passes (whole batch, or per block) run autograd on a conv net (they once ran
    under no_grad, which autograd refuses) and leave no trace: weights exactly back, the running
    statistics and the gradient exactly those of the same passes without a penalty."""
    def model():
        m = PackedMCNN(2, 2, 10)
        for k in range(2):
            m.init_member(k, torch.Generator().manual_seed(k), 2)
        return m

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 10, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (2, 10), generator=g)
    probed, plain = model(), model()
    theta = probed.flat.clone()
    _, (diff, norm) = StepPasses(probed, "cross_entropy", samples, blocks).gradient(
        x, y, with_loss=True, penalty=torch.tensor([[True], [False]]))
    StepPasses(plain, "cross_entropy", samples, blocks).gradient(x, y)
    assert torch.equal(probed.flat, theta)
    assert torch.equal(probed.buffers, plain.buffers) and torch.equal(probed.grad, plain.grad)
    assert torch.isfinite(diff).all() and diff[0].abs().sum() > 0 and torch.count_nonzero(diff[1]) == 0


def test_pack_equals_alone_with_micro_batches():
    jobs = grid({"momentum": 0.9, "micro_batch": 16, "grad_clip": 0.5},
                axes={"width": [8, 16], "seed": [0, 1]}, epochs=2)
    assert len({j.pack_key for j in jobs}) == 1 and all(j.config["train"]["micro_batch"] == 16 for j in jobs)
    packed = _train(jobs)
    for job in jobs[::3]:
        for key, r in _train([job]).items():
            for m in ("train_loss", "test_loss", "grad_norm", "dist_from_init"):
                assert packed[key][m] == pytest.approx(r[m], rel=1e-5), (key, m)


def test_training_with_micro_batches_follows_the_unsplit_run():
    """Two epochs of full-batch GD on MNIST-1D with and without micro-batches: same numbers to float
    rounding (an MLP has no BatchNorm); the jobs differ (micro_batch is in the config)."""
    split, whole = (grid({"batch_size": "full", "lr": 0.5, **t}, epochs=2) for t in ({"micro_batch": 64}, {}))
    assert split[0].job_id != whole[0].job_id and "micro_batch" not in whole[0].config["train"]
    a, b = _train(split), _train(whole)
    for (_, epoch), r in a.items():
        s = b[(whole[0].job_id, epoch)]
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-5)
        assert r["step"] == s["step"] == epoch


# ----------------------------------------------------------------------------- the penalty over blocks


def member_grad(model, k, x, y, create_graph=True):
    """Member k's mean cross-entropy gradient by autograd on x [b, D], from a fresh leaf."""
    theta = model.flat[k].detach().clone().requires_grad_(True)
    ref = PackedMLP(1, D, model.width, C, depth=model.depth)
    h = x[None]
    ws, bs = ref.matrices(theta[None])
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = torch.baddbmm(b, h, w)
        h = torch.relu(h) if i < len(ws) - 1 else h
    (g,) = torch.autograd.grad(F.cross_entropy(h[0], y), theta, create_graph=create_graph)
    return theta, g


@pytest.mark.parametrize("block", [7, 10, 25])
def test_block_penalty_matches_double_backward(block):
    """H g of a block penalty is the size-weighted mean over blocks of the gradient of ||g_j||^2 / 2
    (autograd's double backward), within 1% (typically 0.05%); 7 leaves a last block of 1 sample (the
    whole-batch form is tests/test_knobs.py's). (Seeds 0, 1 and 5 are left out: at these block sizes one
    of their blocks' probe points lies across a ReLU kink, where a difference quotient is no
    Hessian-vector product at all, the forward-difference form's known limit; see ddsweep.train.knobs.)"""
    for seed in (2, 3, 4):
        model, x, y = tiny_mlp(seed)
        theta_before = model.flat.clone()
        penalty = torch.tensor([[False], [True], [True]])
        loss, hg = StepPasses(model, "cross_entropy", block, blocks=True).gradient(x, y, with_loss=True,
                                                                                   penalty=penalty)
        assert torch.equal(model.flat, theta_before)
        full = model.grad.clone()
        whole_loss = model.loss_and_grad(x, y, "cross_entropy")
        torch.testing.assert_close(full, model.grad, rtol=1e-5, atol=1e-7)  # the blocks sum to the batch
        torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-7)
        diff, norm = hg
        hg = diff * norm / knobs.FD_RADIUS  # H g, as the knobs scale it
        assert torch.count_nonzero(hg[0]) == 0  # no penalty: its point never moved
        for k in (1, 2):
            want = torch.zeros_like(hg[k])
            for a in range(0, B, block):
                z = min(a + block, B)
                theta, gj = member_grad(model, k, x[k, a:z], y[k, a:z])
                (hgj,) = torch.autograd.grad(0.5 * gj.pow(2).sum(), theta)
                want += hgj * (z - a) / B
            err = float((hg[k] - want).norm() / want.norm())
            assert err < 1e-2, (seed, k, err)
        theta, g = member_grad(model, 1, x[1], y[1])  # the block penalty is not the whole batch's
        (whole,) = torch.autograd.grad(0.5 * g.pow(2).sum(), theta)
        assert float((hg[1] - whole).norm() / whole.norm()) > 0.05


def test_block_penalty_in_training_is_the_whole_batch_form_at_one_block():
    """penalty_block >= the batch is the whole-batch penalty: left out of the config, same job."""
    base = {"batch_size": 100, "grad_penalty": 0.5}
    (a,), (b,), (c,) = (grid({**base, **t}, epochs=1) for t in ({}, {"penalty_block": 100}, {"penalty_block": 25}))
    assert a.job_id == b.job_id != c.job_id and c.config["train"]["penalty_block"] == 25
    (d,) = grid({"batch_size": 100, "penalty_block": 25}, epochs=1)  # no penalty: the block does not act
    assert "penalty_block" not in d.config["train"]
    rows, whole = _train([c]), _train([a])
    assert rows[(c.job_id, 1)]["train_loss"] != whole[(a.job_id, 1)]["train_loss"]
    assert all(math.isfinite(r["train_loss"]) for r in rows.values())


# ----------------------------------------------------------------------------- planning


def planned(train=None, model=None, grid_axes=None, pool_size=None, dataset=None):
    g = copy.deepcopy(TINY)
    g["train"].update(train or {})
    if model:
        g["model"] = model
    if dataset:
        g["dataset"] = dataset
    g["grid"] = {"width": [16], "n_train": [400], "seed": [0], **(grid_axes or {})}
    return expand(parse_grid(g, "g.yaml"), "g.yaml", pool_size=pool_size)


def test_micro_batch_and_penalty_block_in_the_config():
    (plain,) = planned()
    assert "micro_batch" not in plain.config["train"] and "penalty_block" not in plain.config["train"]
    (same,) = planned({"micro_batch": 50})  # the whole batch: no split, the same job
    assert same.job_id == plain.job_id
    (split,) = planned({"micro_batch": 10})
    assert split.config["train"]["micro_batch"] == 10 and split.pack_key != plain.pack_key
    # a block penalty takes each block in one pass: a micro-batch of whole blocks changes nothing more
    (blocks,) = planned({"micro_batch": 20, "grad_penalty": 0.5, "penalty_block": 10})
    (blocks_only,) = planned({"grad_penalty": 0.5, "penalty_block": 10})
    assert blocks.job_id == blocks_only.job_id and "micro_batch" not in blocks.config["train"]
    # full batch: micro_batch up to n_train
    (full,) = planned({"batch_size": "full", "micro_batch": 128})
    assert full.config["train"] == {**full.config["train"], "batch_size": 400, "micro_batch": 128}


@pytest.mark.parametrize("train, grid_axes, expect", [
    ({"micro_batch": 60}, {}, "g.yaml: train.micro_batch = 60: larger than the batch (50 samples per step at n_train=400)"),
    ({"batch_size": "full"}, {"micro_batch": [100, 500]},
     "g.yaml: grid.micro_batch = 500: larger than the batch (400 samples per step at n_train=400)"),
    ({"micro_batch": 25, "grad_penalty": 0.5, "penalty_block": 10}, {},
     "g.yaml: train.micro_batch = 25: not a multiple of penalty_block 10"),
    ({"micro_batch": 0}, {}, "g.yaml: train.micro_batch = 0: Input should be greater than 0"),
    ({"optimizer": "adam", "nesterov": True}, {}, "g.yaml: train.nesterov = True: applies to optimizer: sgd only"),
    ({"momentum": 0.0, "nesterov": True}, {}, "g.yaml: train.nesterov = True: needs momentum > 0"),
])
def test_bad_micro_batch_penalty_block_and_nesterov(train, grid_axes, expect):
    with pytest.raises(GridError) as e:
        planned(train, grid_axes=grid_axes)
    assert str(e.value).startswith(expect), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_micro_batch_through_the_cli_writes_nothing(tmp_path, cli):
    g = copy.deepcopy(TINY)
    g["train"]["micro_batch"] = 80
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", db)
    assert r.exit_code == 2 and "train.micro_batch = 80: larger than the batch" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not db.exists()


def test_automatic_micro_batch_from_the_memory_estimate(monkeypatch):
    """Left unset, a conv model whose whole-batch pass does not fit the default GPU pack budget gets the
    largest power of two that does, written into its config; small batches and MLPs are left whole."""
    from ddsweep.data import vision

    monkeypatch.setattr(vision, "missing_files", lambda spec: [])  # plans without the files
    from ddsweep.grid.expansion import AUTO_MICRO_BUDGET
    from ddsweep.models.memory import member_bytes

    cifar = {"name": "cifar10"}
    resnet = {"name": "preact_resnet18"}
    (big,) = planned({"batch_size": "full"}, model=resnet, dataset=cifar, pool_size=50_000,
                     grid_axes={"width": [64], "n_train": [50_000]})
    m = big.config["train"]["micro_batch"]
    assert m & (m - 1) == 0 and 1 < m < 50_000
    assert member_bytes(big.config, "cuda", samples=m) <= AUTO_MICRO_BUDGET < \
        member_bytes(big.config, "cuda", samples=2 * m)
    (small,) = planned({"batch_size": 128}, model=resnet, dataset=cifar, pool_size=50_000,
                       grid_axes={"width": [64], "n_train": [50_000]})
    assert "micro_batch" not in small.config["train"]
    (mlp,) = planned({"batch_size": "full"}, grid_axes={"n_train": [1000]})
    assert "micro_batch" not in mlp.config["train"]
    (mine,) = planned({"batch_size": "full", "micro_batch": 500}, model=resnet, dataset=cifar, pool_size=50_000,
                      grid_axes={"width": [64], "n_train": [50_000]})
    assert mine.config["train"]["micro_batch"] == 500  # an explicit one wins


def test_full_batch_mcnn_with_micro_batches_through_plan_and_work(tmp_path, cli):
    """Full-batch GD of mcnn on a small CIFAR-format set, in micro-batches of 24 (with a block penalty
    for one job), planned and trained through the CLI on the CPU."""
    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # noqa: E731
    write_cifar(tmp_path, img(96), rng.integers(0, 10, 96), img(32), rng.integers(0, 10, 32))
    g = {"name": "fullbatch-mcnn", "dataset": {"name": "cifar10", "root": str(tmp_path), "verify": False,
                                               "augment": True},
         "model": {"name": "mcnn"},
         "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4,
                   "batch_size": "full", "micro_batch": 24, "penalty_block": 8, "grad_clip": 0.25, "epochs": 3},
         "eval": {"every": 1},
         "grid": {"width": [2], "n_train": [64], "grad_penalty": [0.0, 0.5]}}
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", db)
    assert r.exit_code == 0, r.output
    configs = ddsweep.query("select config from jobs order by grad_penalty", db).config.tolist()
    import json

    trains = [json.loads(c)["train"] for c in configs]
    assert trains[0]["micro_batch"] == 24 and "penalty_block" not in trains[0] and trains[0]["nesterov"] is True
    assert trains[1]["penalty_block"] == 8 and "micro_batch" not in trains[1]
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    df = ddsweep.query("select m.epoch, m.step, m.train_loss, m.clip_rate from metrics m join jobs j using (job_id)",
                       db)
    assert ddsweep.query("select distinct status from jobs", db).status.tolist() == ["done"]
    assert len(df) == 2 * 4 and set(df[df.epoch == 3].step) == {3}  # one step per epoch
    assert df.train_loss.notna().all() and np.isfinite(df.train_loss).all()


# ----------------------------------------------------------------------------- the preset


def test_fullbatch_resnet18_preset_plans_geipings_recipe(tmp_path):
    """sweeps/cifar10-fullbatch-resnet18.yaml, planned against a CIFAR-10-format root (a small one, the
    pool size given as CIFAR-10's 50,000), resolves to the paper's three runs."""
    import yaml

    from ddsweep.workers.packing import member_bytes
    from tests.conftest import ROOT

    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # noqa: E731
    write_cifar(tmp_path, img(20), rng.integers(0, 10, 20), img(10), rng.integers(0, 10, 10))
    path = ROOT / "sweeps" / "cifar10-fullbatch-resnet18.yaml"
    raw = yaml.safe_load(path.read_text())
    assert "recipe" in path.read_text().split("\n", 1)[0]
    raw["dataset"]["root"] = str(tmp_path)
    jobs = sorted(expand(parse_grid(raw, str(path)), str(path), pool_size=50_000),
                  key=lambda j: j.config["train"]["lr"])
    assert len(jobs) == 3 and len({j.pack_key for j in jobs}) == 3
    sgd, clip, penalty = (j.config["train"] for j in jobs)
    common = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine",
              "loss": "cross_entropy"}
    assert jobs[0].config["model"] == {"name": "preact_resnet18", "depth": 2} and jobs[0].config["width"] == 64
    assert sgd == {**common, "lr": 0.1, "batch_size": 128, "warmup": 5, "epochs": 300}
    assert jobs[0].epochs == 300  # 300 x 391 steps = 117,300
    assert clip == {**common, "lr": 0.4, "batch_size": 50_000, "micro_batch": 128, "warmup": 400, "grad_clip": 0.25,
                    "epochs": 3000}
    assert penalty == {**common, "lr": 0.8, "batch_size": 50_000, "penalty_block": 128, "warmup": 400,
                       "grad_clip": 0.25, "grad_penalty": 0.5, "epochs": 3000}
    assert jobs[1].epochs == jobs[2].epochs == 3000  # one step per epoch
    assert all(j.config["dataset"]["augment"] for j in jobs)
    # a pass of 128 images: a full-batch member fits a GPU by the packing estimate; the whole batch at once would not
    assert member_bytes(jobs[1].config, "cuda") < 4 << 30 < (32 << 30) < \
        member_bytes({**jobs[1].config, "train": {**clip, "micro_batch": None}}, "cuda")


# ----------------------------------------------------------------------------- Nesterov


def test_nesterov_matches_torch_sgd_per_member():
    torch.manual_seed(0)
    params = torch.randn(2, 6)
    grad = torch.zeros_like(params)
    opt = PackedSGD(params, grad, [0.1, 0.1], [0.9, 0.9], [5e-4, 5e-4], [True, False])
    refs = [params[k].clone().requires_grad_(True) for k in range(2)]
    torch_opts = [torch.optim.SGD([refs[k]], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=k == 0)
                  for k in range(2)]
    for _ in range(4):
        g = torch.randn(2, 6)
        grad.copy_(g)
        opt.step()
        for k in range(2):
            refs[k].grad = g[k].clone()
            torch_opts[k].step()
    for k in range(2):
        torch.testing.assert_close(params[k], refs[k].detach(), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(refs[0], refs[1])
