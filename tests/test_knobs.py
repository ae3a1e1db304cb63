"""The knobs of the neighbouring phenomena, each against a direct computation on a tiny problem.

Flooding (loss and gradient sign), clipping (norms), the gradient penalty (finite
difference against autograd's double backward), LARS (against its formula), the lr
schedules, the noise scale, the distance from init (against a checkpoint), job-id
rules, the ideal world (no sample ever repeats), and pack == alone with the knobs on.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import ddsweep.data.ideal as ideal
import ddsweep.train.knobs as knobs
from ddsweep.data.noise import seeded_generator
from ddsweep.grid import expand, load_grid, parse_grid, train_recipe
from ddsweep.models.mlp import PackedMLP
from ddsweep.train import checkpoint
from ddsweep.train.loop import _noise_scale, train_pack
from ddsweep.train.optim import PackedLARS
from ddsweep.train.passes import StepPasses
from ddsweep.train.schedule import factor
from ddsweep.workers.events import Metrics
from tests.conftest import ROOT, TINY

K, D, C, B = 3, 5, 3, 16


def recipe(**train) -> dict:
    return train_recipe({"train": {"optimizer": "sgd", "lr": 0.125, "momentum": 0.0, "weight_decay": 0.0,
                                   "batch_size": B, "loss": "cross_entropy", **train}})


def tiny_model(seed=0, width=8, members=K, widths=None):
    model = PackedMLP(members, D, width, C, depth=2)
    for k in range(members):
        model.init_member(k, torch.Generator().manual_seed(seed * 10 + k), (widths or [width] * members)[k])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(members, B, D, generator=g)
    y = torch.randint(0, C, (members, B), generator=g)
    return model, x, y


def autograd_member(model, k, x, y, create_graph=False):
    """Member k's mean cross-entropy and its gradient (flat layout) by autograd, from a fresh leaf."""
    theta = model.flat[k].detach().clone().requires_grad_(True)
    ref = PackedMLP(1, D, model.width, C, depth=model.depth)
    h = x[k:k + 1]
    ws, bs = ref.matrices(theta[None])
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = torch.baddbmm(b, h, w)
        h = torch.relu(h) if i < len(ws) - 1 else h
    loss = F.cross_entropy(h[0], y[k])
    (g,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
    return theta, loss, g


def step_direction(model, x, y, recipes, lr=0.125):
    """(losses, mini-batch gradient, the knobs' step direction, the StepKnobs)."""
    kn = knobs.StepKnobs(recipes, "cpu")
    kn.start_epoch()
    loss, hg = StepPasses(model, "cross_entropy").gradient(x, y, with_loss=True, penalty=kn.penalty)
    g = model.grad.clone()
    kn.apply(model, loss, hg, torch.full((len(recipes), 1), lr))
    return loss, g, model.grad.clone(), kn


# ----------------------------------------------------------------------------- flooding, clipping, penalty


def test_flooding_flips_the_gradient_below_the_flood_level():
    model, x, y = tiny_model()
    loss = model.loss_and_grad(x, y, "cross_entropy").clone()
    levels = [0.0, float(loss[1]) + 0.5, float(loss[2]) - 0.5]  # off, above the loss (ascent), below it
    loss, g, d, kn = step_direction(model, x, y, [recipe(flood=b) for b in levels])
    assert torch.equal(d[0], g[0])  # flood 0: untouched
    assert torch.equal(d[1], -g[1])  # L < b: gradient ascent
    assert torch.equal(d[2], g[2])
    for k, b in ((1, levels[1]), (2, levels[2])):  # the direction is autograd's gradient of |L - b| + b
        theta, L, _ = autograd_member(model, k, x, y, create_graph=True)
        (want,) = torch.autograd.grad((L - b).abs() + b, theta)
        torch.testing.assert_close(d[k], want, rtol=1e-5, atol=1e-7)
    stats = kn.epoch_stats()
    assert stats[0] == {}  # no flood level: no flood metrics
    assert stats[1]["ascent_fraction"] == 1.0 and stats[2]["ascent_fraction"] == 0.0
    assert stats[1]["flooded_loss"] == pytest.approx(abs(float(loss[1]) - levels[1]) + levels[1], rel=1e-6)
    assert stats[2]["flooded_loss"] == pytest.approx(float(loss[2]), rel=1e-6)


def test_clipping_caps_each_members_global_norm():
    model, x, y = tiny_model(1)
    model.loss_and_grad(x, y, "cross_entropy")
    norms = model.grad.norm(dim=1)
    clips = [0.0, float(norms[1]) / 4, float(norms[2]) * 4]  # off, clipped, not reached
    _, g, d, kn = step_direction(model, x, y, [recipe(grad_clip=c) for c in clips])
    assert torch.equal(d[0], g[0]) and torch.equal(d[2], g[2])
    assert float(d[1].norm()) == pytest.approx(clips[1], rel=1e-5)  # torch's rule: c / (norm + 1e-6)
    torch.testing.assert_close(d[1], g[1] * clips[1] / (float(norms[1]) + 1e-6))
    assert [s.get("clip_rate") for s in kn.epoch_stats()] == [None, 1.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_penalty_matches_double_backward(dtype):
    """d = g + a * lr / 4 * H g; the finite difference is within 1% of autograd's H g (typically 0.05%)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        for seed in range(4):
            model, x, y = tiny_model(seed)
            strengths = [0.0, 0.5, 2.0]
            theta_before = model.flat.clone()
            _, g, d, _ = step_direction(model, x, y, [recipe(grad_penalty=a) for a in strengths])
            assert torch.equal(model.flat, theta_before)  # the probe point is undone exactly
            assert torch.equal(d[0], g[0])
            for k in (1, 2):
                theta, _, gr = autograd_member(model, k, x, y, create_graph=True)
                (hg,) = torch.autograd.grad(0.5 * gr.pow(2).sum(), theta)  # grad of ||g||^2 / 2 = H g
                want = strengths[k] * 0.125 / 4 * hg
                err = float((d[k] - g[k] - want).norm() / want.norm())
                assert err < 1e-2, (seed, k, err)
    finally:
        torch.set_default_dtype(default)


def test_penalty_flood_and_clip_compose_and_keep_padding_zero():
    # member 1 is narrower (4 of the pack's 8 units): its padded units must stay exactly 0
    model, x, y = tiny_model(2, widths=[8, 4, 8])
    pad = model.flat[1] == 0
    loss = model.loss_and_grad(x, y, "cross_entropy").clone()
    rs = [recipe(grad_penalty=0.5, flood=float(loss[k]) + 1, grad_clip=0.05) for k in range(K)]
    lr = torch.full((K, 1), 0.125)
    kn = knobs.StepKnobs(rs, "cpu")
    loss, hg = StepPasses(model, "cross_entropy").gradient(x, y, with_loss=True, penalty=kn.penalty)
    g = model.grad.clone()
    kn.apply(model, loss, hg, lr)
    for k in range(K):  # -g + penalty, then clipped
        theta, _, gr = autograd_member(model, k, x, y, create_graph=True)
        (hg,) = torch.autograd.grad(0.5 * gr.pow(2).sum(), theta)
        want = -g[k] + 0.5 * 0.125 / 4 * hg
        want = want * min(1.0, 0.05 / (float(want.norm()) + 1e-6))
        torch.testing.assert_close(model.grad[k], want, rtol=1e-2, atol=1e-6)
    assert torch.all(model.grad[1][pad] == 0)


# ----------------------------------------------------------------------------- LARS, schedules, noise scale


def test_lars_update_matches_the_formula():
    torch.set_default_dtype(torch.float64)
    try:
        model, x, y = tiny_model(3, widths=[8, 4, 8])
        pad = model.flat[1] == 0
        lr, mom, wd, trust = [0.5, 1.0, 2.0], [0.9, 0.0, 0.5], [0.0, 1e-3, 1e-2], [1e-3, 1e-2, 2e-2]
        opt = PackedLARS(model.flat, model.grad, model.layer_slices(), lr, mom, wd, trust)
        f32 = lambda vs: [float(torch.tensor(v, dtype=torch.float32)) for v in vs]  # noqa: E731 (as stored)
        lr, mom, wd, trust = f32(lr), f32(mom), f32(wd), f32(trust)
        want = model.flat.clone()
        buf = torch.zeros_like(want)
        for _ in range(3):
            model.loss_and_grad(x, y, "cross_entropy")
            for k in range(K):  # You et al. (2017), Algorithm 1, layer tensor by layer tensor
                for w_i, b_i in zip(model.weights, model.biases):
                    for view in (w_i, b_i):
                        a = view[k].storage_offset() - model.flat[k].storage_offset()
                        sl = slice(a, a + view[k].numel())
                        w, g = want[k, sl], model.grad[k, sl]
                        local = trust[k] * w.norm() / (g.norm() + wd[k] * w.norm())
                        buf[k, sl] = mom[k] * buf[k, sl] + lr[k] * local * (g + wd[k] * w)
                        want[k, sl] = w - buf[k, sl]
            opt.step()
            torch.testing.assert_close(model.flat, want, rtol=1e-12, atol=1e-14)
        assert torch.all(model.flat[1][pad] == 0)
    finally:
        torch.set_default_dtype(torch.float32)


def test_schedules():
    r = recipe(schedule="inverse_sqrt")  # Deep Double Descent's SGD: lr0 / sqrt(1 + floor(step / 512))
    assert [factor(r, s, 10**6) for s in (0, 511, 512, 1023, 1024, 2048)] == \
        [1, 1, 1 / math.sqrt(2), 1 / math.sqrt(2), 1 / math.sqrt(3), 1 / math.sqrt(5)]
    assert factor(recipe(schedule="inverse_sqrt", inv_sqrt_steps=10), 25, 10**6) == 1 / math.sqrt(3)
    r = recipe(schedule="cosine")
    assert factor(r, 0, 100) == 1 and factor(r, 50, 100) == pytest.approx(0.5) and factor(r, 100, 100) == 0
    assert factor(r, 150, 100) == 0  # past the horizon: stays at the end
    r = recipe(schedule="step", step_milestones=[0.5, 0.75], step_factor=0.1)
    assert [factor(r, s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    r = recipe(warmup=4)
    assert [factor(r, s, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]


def _train(jobs, **kw):
    events = []
    train_pack([{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": j.horizons}
                for j in jobs], emit=events.append, **kw)
    return {(r["job_id"], r["epoch"]): r for e in events if isinstance(e, Metrics) for r in e.rows}


def grid(train=None, axes=None, epochs=3):
    g = copy.deepcopy(TINY)
    g["train"].update(train or {}, epochs=epochs)
    g["eval"] = {"every": 1}
    g["grid"] = {"width": [16], "n_train": [400], "label_noise": [0.2], "seed": [0], **(axes or {})}
    return expand(parse_grid(g))


def test_lr_column_follows_the_schedule():
    jobs = grid({"schedule": "inverse_sqrt", "inv_sqrt_steps": 5, "warmup": 2}, epochs=2)
    rows = _train(jobs)
    # 8 steps per epoch: the lr of the epoch's last step (index 7, then 15); of step 0 at epoch 0
    assert [rows[(jobs[0].job_id, e)]["lr"] for e in (0, 1, 2)] == \
        pytest.approx([0.05 * 0.5, 0.05 / math.sqrt(2), 0.05 / math.sqrt(4)])


def test_noise_scale():
    r = recipe(lr=0.05, momentum=0.9, batch_size=50)
    assert _noise_scale(r, 0.05, 400) == pytest.approx(0.05 * (400 / 50 - 1) / (1 - 0.9))
    assert _noise_scale(recipe(batch_size=400), 0.1, 400) == 0  # full batch: no noise
    assert _noise_scale(recipe(optimizer="adam"), 0.1, 400) is None
    jobs = grid({"momentum": 0.9}, axes={"world": ["real", "ideal"]}, epochs=1)
    rows = _train(jobs)
    world = {j.job_id: train_recipe(j.config)["world"] for j in jobs}
    for (jid, _), r in rows.items():
        assert r["noise_scale"] == (pytest.approx(0.05 * 7 / 0.1) if world[jid] == "real" else None)


# ----------------------------------------------------------------------------- distance from init, checkpoints


def test_distance_from_init_and_checkpoints(tmp_path):
    jobs = grid({"flood": 0.3, "grad_clip": 0.5}, axes={"seed": [0, 1]}, epochs=4)
    rows = _train(jobs, checkpoint_dir=tmp_path / "a")
    for j in jobs:
        state = checkpoint.read(tmp_path / "a", j.job_id)
        theta0 = state["extra"]["theta0"]
        model = PackedMLP(1, 40, 32, 10)  # width 16 trains padded to 32 on a CPU
        model.init_member(0, seeded_generator("init", j.config["seed"]), 16)
        assert torch.equal(theta0, model.flat[0])  # theta_0 is the member's init
        last = rows[(j.job_id, 4)]
        assert last["dist_from_init"] == pytest.approx(float((state["params"] - theta0).norm()), rel=1e-6)
        assert last["weight_norm"] == pytest.approx(float(state["params"].norm()), rel=1e-6)
        assert rows[(j.job_id, 0)]["dist_from_init"] == 0
    # stop after epoch 2, resume: every metric equal to the uninterrupted run (theta_0 came back from disk)
    calls = iter(range(100))
    events = []
    status = train_pack([{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": j.horizons}
                         for j in jobs], emit=events.append, checkpoint_dir=tmp_path / "b",
                        should_stop=lambda: next(calls) >= 1)
    assert status == "stopped"
    resumed = _train(jobs, checkpoint_dir=tmp_path / "b")
    for key, r in rows.items():
        assert {k: v for k, v in resumed[key].items() if k != "seconds"} == \
            {k: v for k, v in r.items() if k != "seconds"}, key


# ----------------------------------------------------------------------------- job ids


DEFAULT_IDS = ["00c4d1e86f649390", "01b035746fbff701", "0f07cc6ecc155b03", "12b63536c6d89253", "18a494b5fb0e4c73",
               "30c38537a12d1280", "3b3a0fe3adf8aa57", "4139321b72e989fd", "4b949f6c2b981b03", "5f63e89521aafd68",
               "6b2fb3748bdbdf14", "91422d06a3412f1b", "a0996d0fd6df5413", "be8eb9fa15d0c5c7", "c6dc6f4949afcc87",
               "d5b34ec1daee2b48", "fc0fcbaafc8af4f2", "fcfad63ce2b4cf8d"]


def test_job_ids_of_existing_grids_do_not_change():
    assert sorted(j.job_id for j in expand(load_grid(ROOT / "sweeps" / "mnist1d-mlp.yaml"))) == DEFAULT_IDS
    assert sorted(j.job_id for j in expand(parse_grid(TINY))) == \
        ["65556571ea2de0ad", "809e9d0375e64702", "8bd59bcb73cfcc65", "f78e7e85b3523fa1"]


def test_knob_hash_rules():
    ids = lambda g: sorted(j.job_id for j in expand(parse_grid(g)))  # noqa: E731
    base = copy.deepcopy(TINY)
    explicit = copy.deepcopy(TINY)  # every knob spelled out at its default: the same jobs
    explicit["train"].update(schedule="constant", warmup=0, grad_clip=0.0, grad_penalty=0.0, flood=0.0,
                             world="real", inv_sqrt_steps=1024, trust=0.5, step_factor=0.5)  # idle knobs: dropped
    assert ids(explicit) == ids(base)
    full = copy.deepcopy(TINY)
    full["train"]["batch_size"] = "full"
    same = copy.deepcopy(TINY)
    same["train"]["batch_size"] = 400  # n_train
    assert ids(full) == ids(same) and {j.config["train"]["batch_size"] for j in expand(parse_grid(full))} == {400}
    for schedule, merged in (("constant", True), ("inverse_sqrt", True), ("cosine", False), ("step", False)):
        g = copy.deepcopy(TINY)
        g["train"]["schedule"] = schedule
        g["grid"]["epochs"] = [3, 6]
        jobs = expand(parse_grid(g))
        if merged:  # horizon-free: one job per cell, trained to the longest horizon
            assert len(jobs) == 4 and all(j.horizons == (3, 6) and "epochs" not in j.config["train"] for j in jobs)
        else:  # the schedule depends on the horizon: a job per horizon, epochs in its id
            assert len(jobs) == 8 and {j.config["train"]["epochs"] for j in jobs} == {3, 6}
            assert all(j.horizons == (j.epochs,) for j in jobs)
    g = copy.deepcopy(TINY)
    g["grid"]["batch_size"] = [50, "full"]
    assert {j.config["train"]["batch_size"] for j in expand(parse_grid(g))} == {50, 400}


# ----------------------------------------------------------------------------- the ideal world


def test_ideal_world_never_repeats_a_sample(monkeypatch):
    monkeypatch.setattr(ideal, "CHUNK", 1000)  # so that 6 epochs of 400 samples cross two chunk boundaries
    seen = []
    take = ideal.IdealStream.take

    def recording(self, start, count):
        chunk, index = self.positions(start, count)
        x, y = take(self, start, count)
        seen.append((self.seed, chunk, index, x, y))
        return x, y

    monkeypatch.setattr(ideal.IdealStream, "take", recording)
    jobs = grid({"world": "ideal"}, axes={"seed": [0, 1]}, epochs=6)
    _train(jobs)
    for seed in (0, 1):
        runs = [s for s in seen if s[0] == seed]
        assert len(runs) == 6  # one slice of n_train samples per epoch
        pos = torch.cat([c * 1000 + i for _, c, i, _, _ in runs])
        assert len(pos) == 2400 and len(pos.unique()) == 2400  # no (chunk, index) twice
        x = torch.cat([s[3] for s in runs])
        assert len(torch.unique(x, dim=0)) == 2400  # and no two samples alike
    from ddsweep.data import load_dataset

    data = load_dataset(jobs[0].config["dataset"])
    real = torch.cat([data.x_pool, data.x_test])
    xs = torch.cat([s[3] for s in seen])
    assert not (torch.cdist(xs, real).min(dim=1).values < 1e-6).any()  # none is a pool or test sample
    # the same generator: statistics like the real data's (normalised with its mean and std)
    assert abs(float(xs.mean()) - float(real.mean())) < 0.05 and abs(float(xs.std()) / float(real.std()) - 1) < 0.05


def test_ideal_stream_labels_andseeded_generator():
    import mnist1d.data
    import numpy as np
    from mnist1d.transform import transform

    spec = {"name": "mnist1d", "pool": 1200, "test": 600, "seed": 42}
    s = ideal.IdealStream(spec, seed=3, label_noise=0.2, num_classes=10)
    chunk, index = s.positions(0, 5000)
    x, y = s.take(0, 5000)
    clean = torch.cat([ideal._chunk(spec, c, ideal.mnist1d_chunk)[1][index[chunk == c]] for c in chunk.unique().tolist()])
    flipped = y != clean
    assert 0.18 < float(flipped.float().mean()) < 0.22  # about p, and a flipped label is never the true class
    noisier = ideal.IdealStream(spec, seed=3, label_noise=0.3, num_classes=10).take(0, 5000)[1]
    assert torch.equal(noisier[flipped], y[flipped])  # coupled across p, as in the real world
    # the vectorised renderer is the package's transform, for the same random draws
    args, tpl = mnist1d.data.get_dataset_args(), mnist1d.data.get_templates()
    labels, draws, want = np.arange(40) % 10, {k: [] for k in ("pad", "scale", "shift", "corr", "iid", "shear")}, []
    for i, label in enumerate(labels):
        np.random.seed(i)
        want.append(transform(tpl["x"][label], tpl["t"], args)[0])
        r = np.random.RandomState(i)  # the same draws, in the package's order
        draws["pad"].append(36 + int(r.rand() * 25))
        draws["scale"].append(1 + 0.4 * (r.rand() - 0.5))
        draws["shift"].append(r.choice(48))
        draws["corr"].append(0.25 * r.randn(72))
        draws["iid"].append(0.02 * r.randn(72))
        draws["shear"].append(0.75 * (r.rand() - 0.5))
    got = ideal.render_mnist1d(labels, {k: np.array(v) for k, v in draws.items()}, args)
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-12)
    # replaying the real data's draws gives the real data: the stream is normalised with its statistics
    from ddsweep.data import load_dataset

    data = load_dataset(spec)
    mean, std = ideal.real_stats(spec)
    raw = ideal.replay_mnist1d_raw(1800, 42)
    assert torch.equal(torch.tensor((raw - mean) / std, dtype=torch.float32),
                       torch.cat([data.x_pool, data.x_test]))


# ----------------------------------------------------------------------------- pack == alone


@pytest.mark.parametrize("train, axes", [
    ({"momentum": 0.9}, {"flood": [0.0, 1.5], "grad_clip": [0.0, 0.2]}),
    ({"momentum": 0.9, "grad_penalty": 0.5}, {"flood": [0.0, 1.5], "lr": [0.05, 0.1]}),
    ({"optimizer": "lars", "lr": 2.0, "momentum": 0.9, "weight_decay": 1e-4}, {"trust": [1e-3, 1e-2], "seed": [0, 1]}),
    ({"schedule": "cosine", "warmup": 5, "momentum": 0.9}, {"world": ["real", "ideal"], "seed": [0, 1]}),
    ({"batch_size": "full", "lr": 0.5, "schedule": "inverse_sqrt", "inv_sqrt_steps": 2},
     {"grad_clip": [0.0, 0.1], "seed": [0, 1]}),
])
def test_pack_equals_alone_with_knobs(train, axes):
    jobs = grid(train, axes={"width": [8, 16], **axes}, epochs=3)
    assert len({j.pack_key for j in jobs}) == 1 and len(jobs) == 8
    packed = _train(jobs)
    for job in jobs[::3]:
        for key, r in _train([job]).items():
            for m in ("train_loss", "test_loss", "grad_norm", "dist_from_init", "weight_norm", "flooded_loss"):
                if r.get(m) is not None:
                    assert packed[key][m] == pytest.approx(r[m], rel=1e-5), (key, m)
            for m in ("ascent_fraction", "clip_rate", "noise_scale", "lr"):
                assert packed[key].get(m) == r.get(m), (key, m)
            for m in ("train_error", "test_error"):
                assert abs(packed[key][m] - r[m]) <= 2 / 400


def test_grid_errors_for_knobs():
    from ddsweep.errors import GridError

    for patch, expect in (({"batch_size": "half"}, "train.batch_size = 'half': must be a positive integer or full"),
                          ({"schedule": "linear"}, "train.schedule = 'linear'"),
                          ({"flood": -0.1}, "train.flood = -0.1"),
                          ({"step_milestones": [0.8, 0.2]}, "train.step_milestones = [0.8, 0.2]: must be increasing")):
        g = copy.deepcopy(TINY)
        g["train"].update(patch)
        with pytest.raises(GridError) as e:
            expand(parse_grid(g, "g.yaml"), "g.yaml")
        assert expect in str(e.value), str(e.value)
    g = copy.deepcopy(TINY)
    g["grid"]["batch_size"] = [50, "fast"]
    with pytest.raises(GridError, match=r"grid.batch_size\[1\] = 'fast': must be a number, not text"):
        expand(parse_grid(g, "g.yaml"), "g.yaml")
    json.dumps([j.config for j in expand(parse_grid(TINY))])  # configs stay JSON
