"""Image datasets, conv models (mcnn, preact_resnet18) and batched augmentation.

The tests write small datasets in torchvision's on-disk formats themselves (CIFAR-10
and -100 python batches, MNIST idx files); nothing is downloaded.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import ddsweep
from ddsweep.data import load_dataset
from ddsweep.data.augment import CropFlip
from ddsweep.data.writers import write_cifar, write_mnist, write_svhn
from ddsweep.errors import GridError, UserError
from ddsweep.grid import expand, parse_grid
from ddsweep.models.arch import ARCHS, mcnn, preact_resnet18
from ddsweep.models.mcnn import PackedMCNN
from ddsweep.models.reference import REFERENCE
from ddsweep.models.resnet import PackedPreActResNet18
from ddsweep.train.loop import train_pack
from tests.conftest import jobs_of, rows_of, write_grid

PACKED = {"mcnn": PackedMCNN, "preact_resnet18": PackedPreActResNet18}
N_TRAIN, N_TEST = 160, 48


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """CIFAR-10, CIFAR-100, MNIST, Fashion-MNIST and SVHN written in their on-disk formats (random images)."""
    root = tmp_path_factory.mktemp("vision")
    rng = np.random.default_rng(0)
    img = lambda n, *shape: rng.integers(0, 256, (n, *shape), dtype=np.uint8)  # noqa: E731
    write_cifar(root, img(N_TRAIN, 3, 32, 32), rng.integers(0, 10, N_TRAIN), img(N_TEST, 3, 32, 32),
                rng.integers(0, 10, N_TEST))
    write_cifar(root, img(N_TRAIN, 3, 32, 32), rng.integers(0, 100, N_TRAIN), img(N_TEST, 3, 32, 32),
                rng.integers(0, 100, N_TEST), name="cifar100")
    write_mnist(root, img(N_TRAIN, 28, 28), rng.integers(0, 10, N_TRAIN), img(N_TEST, 28, 28),
                rng.integers(0, 10, N_TEST))
    write_mnist(root, img(N_TRAIN, 28, 28), rng.integers(0, 10, N_TRAIN), img(N_TEST, 28, 28),
                rng.integers(0, 10, N_TEST), name="fashion_mnist")
    write_svhn(root, img(N_TRAIN, 3, 32, 32), rng.integers(0, 10, N_TRAIN), img(N_TEST, 3, 32, 32),
               rng.integers(0, 10, N_TEST))
    return root


def vision_grid(root, model_name="mcnn", **overrides) -> dict:
    grid = {
        "name": f"tiny-{model_name}",
        "dataset": {"name": "cifar10", "root": str(root), "verify": False, "augment": True},
        "model": {"name": model_name},
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 2},
        "eval": {"every": 1},
        "grid": {"width": [1, 2], "n_train": [64], "label_noise": [0.0, 0.2], "seed": [0]},
    }
    for key, value in overrides.items():
        grid[key] = {**grid[key], **value} if isinstance(value, dict) and key != "grid" else value
    return grid


# ----------------------------------------------------------------------------- architectures


def test_parameter_counts_match_the_paper_and_plain_modules():
    assert mcnn(64).size == 1_558_026  # Deep Double Descent, CIFAR-10
    assert preact_resnet18(64).size == 11_171_146  # kuangliu's PreActResNet18
    for name, arch in ARCHS.items():
        for k, channels, classes in ((1, 3, 10), (2, 1, 10), (3, 3, 100), (64, 3, 10)):
            reference = REFERENCE[name](k, channels, classes)
            assert arch(k, channels, classes).size == sum(p.numel() for p in reference.parameters())
            assert [p.name for p in arch(k, channels, classes).params] == [n for n, _ in reference.named_parameters()]
        packed = PACKED[name](2, 3, 10)
        assert packed.flat.shape == (2, arch(3).size) and packed.grad.shape == packed.flat.shape


def _member_state(model, k: int, width: int) -> dict:
    """Member k's weights (its unpadded corner) by parameter name."""
    own = ARCHS[model.arch_name](width, model.channels, model.num_classes)
    out = {}
    for i, (p, q) in enumerate(zip(model.arch.params, own.params)):
        block = model.flat[k, model.offsets[i]:model.offsets[i + 1]].view(p.shape)
        out[q.name] = block[tuple(slice(0, n) for n in q.shape)].clone()
    return out


@pytest.mark.parametrize("name", ["mcnn", "preact_resnet18"])
def test_packed_members_equal_plain_modules(name):
    """Each member of a pack (narrow ones padded) computes what the plain nn.Module computes:
    loss, gradient, BatchNorm running statistics, evaluation outputs. Padding stays exactly zero."""
    torch.manual_seed(0)
    widths, pack_width = [1, 2], 2
    model = PACKED[name](len(widths), pack_width, 10)
    for k, w in enumerate(widths):
        model.init_member(k, torch.Generator().manual_seed(k), w)
    x = torch.randint(0, 256, (len(widths), 8, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (len(widths), 8))
    loss = model.loss_and_grad(x, y, "cross_entropy")
    model.train(False)
    logits = model(x)
    mean, std = torch.tensor([0.5] * 3).view(3, 1, 1), torch.tensor([0.25] * 3).view(3, 1, 1)
    for k, w in enumerate(widths):
        reference = REFERENCE[name](w)
        reference.load_state_dict(_member_state(model, k, w), strict=False)
        xk = (x[k].float() / 255 - mean) / std
        ref_loss = torch.nn.functional.cross_entropy(reference(xk), y[k])
        ref_loss.backward()
        assert float(loss[k]) == pytest.approx(ref_loss.item(), rel=1e-5)
        grads = dict(reference.named_parameters())
        own = ARCHS[name](w)
        for i, (p, q) in enumerate(zip(model.arch.params, own.params)):
            block = model.grad[k, model.offsets[i]:model.offsets[i + 1]].view(p.shape).clone()
            corner = tuple(slice(0, n) for n in q.shape)
            torch.testing.assert_close(block[corner], grads[q.name].grad, rtol=1e-4, atol=1e-5)
            block[corner] = 0
            assert torch.count_nonzero(block) == 0, f"padding of {q.name} got a gradient"
        running = {n: b for n, b in reference.named_buffers() if "running" in n}
        for layer, c in model.arch.bn:
            mean_k, var_k = (t.view(len(widths), -1)[k] for t in model.running[layer])
            c_own = dict(own.bn)[layer]
            torch.testing.assert_close(mean_k[:c_own], running[f"{layer}.running_mean"], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(var_k[:c_own], running[f"{layer}.running_var"], rtol=1e-4, atol=1e-6)
        reference.eval()
        with torch.no_grad():
            torch.testing.assert_close(logits[k], reference(xk), rtol=1e-4, atol=1e-5)


def test_mcnn_relu_after_pooling_changes_no_bit():
    """mcnn applies ReLU after max-pooling (on a quarter of the values); the paper's order,
    ReLU then pooling, gives the same loss and gradient bit for bit, padded members included."""
    import torch.nn.functional as F

    def relu_then_pool(self, W, x):
        for i in range(1, 5):
            x = self._conv(x, W[f"conv{i}.weight"], W[f"conv{i}.bias"], 1, 1)
            x = F.relu(self._bn(x, W, f"bn{i}"), inplace=True)
            if i > 1:
                x = F.max_pool2d(x, 2)
        return self._head(F.max_pool2d(x, 4), W, "fc")

    x = torch.randint(0, 256, (3, 16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (3, 16), generator=torch.Generator().manual_seed(2))
    out = []
    for forward in (None, relu_then_pool):
        model = PACKED["mcnn"](3, 4, 10)
        if forward is not None:
            model._forward = forward.__get__(model)
        for k, w in enumerate((4, 3, 1)):
            model.init_member(k, torch.Generator().manual_seed(k), w)
        out.append((model.loss_and_grad(x, y, "cross_entropy"), model.grad.clone(), model.buffers))
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_buffers_round_trip():
    model = PackedMCNN(2, 2, 10)
    model.init_member(0, torch.Generator().manual_seed(0))
    model.init_member(1, torch.Generator().manual_seed(1))
    model.loss_and_grad(torch.randint(0, 256, (2, 8, 3, 32, 32), dtype=torch.uint8),
                        torch.randint(0, 10, (2, 8)), "cross_entropy")
    saved = model.buffers.clone()
    assert saved.shape == (2, 2 * sum(c for _, c in model.arch.bn))
    fresh = PackedMCNN(2, 2, 10)
    fresh.buffers = saved
    assert torch.equal(fresh.buffers, saved) and not torch.equal(saved[0], saved[1])


# ----------------------------------------------------------------------------- augmentation


def test_crop_flip_is_torchvisions_per_image():
    import torchvision.transforms.v2.functional as TF

    aug = CropFlip()
    x = torch.randint(0, 256, (3, 20, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    codes = torch.stack([aug.draw(20, g) for _ in range(3)])
    out = aug(x, codes)
    assert out.shape == x.shape and out.dtype == torch.uint8
    dy, dx, flip = aug.decode(codes)
    assert dy.abs().max() == 4 and dx.abs().max() == 4 and flip.any() and not flip.all()
    for k in range(3):
        for b in range(20):
            expected = TF.crop(TF.pad(x[k, b], [4]), int(dy[k, b]) + 4, int(dx[k, b]) + 4, 32, 32)
            if flip[k, b]:
                expected = TF.horizontal_flip(expected)
            assert torch.equal(out[k, b], expected), (k, b)


def test_augmentation_draws_are_the_members_own():
    """Same seed, same crops and flips, in a pack or alone; each member its own stream."""
    from ddsweep.data.noise import seeded_generator

    aug = CropFlip()
    a = aug.draw(500, seeded_generator("augment", 0))
    assert torch.equal(a, aug.draw(500, seeded_generator("augment", 0)))
    assert not torch.equal(a, aug.draw(500, seeded_generator("augment", 1)))
    assert int(a.min()) >= 0 and int(a.max()) < aug.codes and len(a.unique()) > 100


# ----------------------------------------------------------------------------- datasets


def test_loaders_read_torchvisions_formats(data_root):
    cifar = load_dataset({"name": "cifar10", "root": str(data_root), "verify": False})
    assert cifar.x_pool.shape == (N_TRAIN, 3, 32, 32) and cifar.x_pool.dtype == torch.uint8
    assert cifar.x_test.shape == (N_TEST, 3, 32, 32) and cifar.num_classes == 10
    assert cifar.input_dim == 3 * 32 * 32
    c100 = load_dataset({"name": "cifar100", "root": str(data_root), "verify": False})
    assert c100.num_classes == 100 and int(c100.y_pool.max()) > 10
    direct = load_dataset({"name": "mnist", "root": str(data_root), "verify": False})
    through_torchvision = load_dataset({"name": "mnist", "root": str(data_root)})
    assert direct.x_pool.shape == (N_TRAIN, 1, 32, 32)  # 28x28, zero-padded to 32x32
    assert torch.count_nonzero(direct.x_pool[:, :, :2]) == 0
    for a, b in zip((direct.x_pool, direct.y_pool, direct.x_test, direct.y_test),
                    (through_torchvision.x_pool, through_torchvision.y_pool, through_torchvision.x_test,
                     through_torchvision.y_test)):
        assert torch.equal(a, b)


def test_fashion_mnist_and_svhn_read_as_torchvision_reads_them(data_root, monkeypatch):
    """Fashion-MNIST's idx files and SVHN's .mat files: the direct reader (verify: false) gives
    torchvision's tensors; SVHN's digit 0, stored as 10, is class 0; torchvision refuses SVHN
    files whose MD5 is not the official one, with a clear error."""
    import scipy.io
    import torchvision.datasets as tvd

    fashion = load_dataset({"name": "fashion_mnist", "root": str(data_root), "verify": False})
    assert fashion.x_pool.shape == (N_TRAIN, 1, 32, 32) and fashion.num_classes == 10
    svhn = load_dataset({"name": "svhn", "root": str(data_root), "verify": False})
    assert svhn.x_pool.shape == (N_TRAIN, 3, 32, 32) and svhn.x_test.shape == (N_TEST, 3, 32, 32)
    stored = scipy.io.loadmat(str(data_root / "train_32x32.mat"))
    assert int((stored["y"] == 10).sum()) == int((svhn.y_pool == 0).sum()) > 0 and int(svhn.y_pool.max()) <= 9
    assert torch.equal(svhn.x_pool[5], torch.from_numpy(stored["X"][:, :, :, 5]).permute(2, 0, 1))
    with pytest.raises(UserError, match="verify: false"):
        load_dataset({"name": "svhn", "root": str(data_root)})
    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)
    for name, direct in (("fashion_mnist", fashion), ("svhn", svhn)):
        verified = load_dataset({"name": name, "root": str(data_root)})
        for a, b in zip((direct.x_pool, direct.y_pool, direct.x_test, direct.y_test),
                        (verified.x_pool, verified.y_pool, verified.x_test, verified.y_test)):
            assert torch.equal(a, b), name


def test_cifar_through_torchvision_equals_direct(data_root, monkeypatch):
    """verify: true goes through torchvision (which checks MD5 sums): with the check
    passing, it reads exactly what the direct reader reads; failing, a clear error."""
    import torchvision.datasets as tvd

    with pytest.raises(UserError, match="verify: false"):
        load_dataset({"name": "cifar10", "root": str(data_root)})
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.CIFAR10, "_load_meta", lambda self: None)
    verified = load_dataset({"name": "cifar10", "root": str(data_root)})
    direct = load_dataset({"name": "cifar10", "root": str(data_root), "verify": False})
    assert torch.equal(verified.x_pool, direct.x_pool) and torch.equal(verified.y_test, direct.y_test)


def test_missing_dataset_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DDSWEEP_DATA", raising=False)
    grid = vision_grid(tmp_path / "nowhere")
    with pytest.raises(GridError) as e:
        parse_grid(grid)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "nowhere") in msg and "cifar-10-batches-py/data_batch_1" in msg
    assert "download=True" in msg and "download: true" in msg
    with pytest.raises(UserError, match="not found under"):
        load_dataset({"name": "svhn", "root": str(tmp_path)})
    monkeypatch.setenv("DDSWEEP_DATA", str(tmp_path / "env"))
    grid["dataset"] = {"name": "cifar100"}
    with pytest.raises(GridError, match=r"\$DDSWEEP_DATA"):
        parse_grid(grid)


@pytest.mark.parametrize("change, key", [
    ({"dataset": {"pool": 100}}, "dataset.pool"),
    ({"dataset": {"name": "mnist1d", "root": None, "verify": True, "augment": True}}, "dataset.augment"),
    ({"model": {"name": "mcnn", "depth": 3}}, "model.depth"),
    ({"train": {"precision": "fp16"}}, "train.precision"),
    ({"grid": {"width": [1], "n_train": [50_001]}}, "grid.n_train"),
])
def test_vision_grid_errors(data_root, change, key):
    grid = vision_grid(data_root, **change)
    with pytest.raises(GridError) as e:
        expand(parse_grid(grid))
    assert e.value.key == key, str(e.value)


def test_mlp_grid_rejects_bf16():
    from tests.conftest import TINY

    with pytest.raises(GridError, match="train.precision"):
        parse_grid({**TINY, "train": {**TINY["train"], "precision": "bf16"}})


def test_vision_grid_config_and_pool(data_root):
    jobs = expand(parse_grid(vision_grid(data_root, grid={"width": [1], "n_train": [50_000]})))
    assert jobs[0].config["dataset"] == {"name": "cifar10", "root": str(data_root), "verify": False,
                                         "augment": True}
    assert "precision" not in jobs[0].config["train"]  # at its default: left out, old job ids unchanged
    bf16 = expand(parse_grid(vision_grid(data_root, train={"precision": "bf16"})))
    assert bf16[0].config["train"]["precision"] == "bf16" and bf16[0].pack_key != jobs[0].pack_key


def test_mnist1d_config_unchanged():
    from tests.conftest import TINY

    config = expand(parse_grid(TINY))[0].config
    assert list(config["dataset"].items()) == [("name", "mnist1d"), ("pool", 1200), ("test", 600), ("seed", 42)]
    assert list(config["train"]) == ["optimizer", "lr", "momentum", "weight_decay", "batch_size", "loss"]


def test_axis_mixing_values_and_generators():
    from tests.conftest import TINY

    grid = {**TINY, "grid": {**TINY["grid"], "width": [{"range": [1, 32]}, {"range": [36, 64, 4]}, 96, 128]}}
    widths = sorted({j.config["width"] for j in expand(parse_grid(grid))})
    assert widths == list(range(1, 33)) + list(range(36, 65, 4)) + [96, 128]
    with pytest.raises(GridError, match=r"grid.width\[1\].range"):
        expand(parse_grid({**TINY, "grid": {**TINY["grid"], "width": [4, {"range": [9, 1]}]}}))


def test_planning_imports_no_torch(data_root, tmp_path):
    path = write_grid(tmp_path / "g.yaml", vision_grid(data_root))
    code = ("import sys; from ddsweep.grid import load_grid, expand; from ddsweep.workers.packing import make_packs\n"
            f"jobs = expand(load_grid({str(path)!r}))\n"
            "packs = make_packs([{'pack_key': j.pack_key, 'config': j.config, 'epochs': j.epochs} for j in jobs],"
            " None, 'cuda')\n"
            "assert 'torch' not in sys.modules, 'planning imported torch'\n"
            "print(len(jobs), [len(p) for p in packs])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "4"
    assert out.stdout.strip().endswith("[4]")  # widths 1 and 2 pad to 8 on a GPU: one pack


def test_pack_sizes(monkeypatch):
    from ddsweep.workers.packing import auto_pack_size, member_bytes

    config = {"model": {"name": "preact_resnet18", "depth": 2}, "dataset": {"name": "cifar10"}, "width": 64,
              "n_train": 50_000, "train": {"batch_size": 128}}
    assert auto_pack_size(config, "cpu") == 1  # grouped convolutions do not pay on a CPU
    per_member = member_bytes(config, "cuda")
    assert 0.5 * 2**30 < per_member < 4 * 2**30
    by_params = 200_000_000 // preact_resnet18(64).size
    assert auto_pack_size(config, "cuda") == min(by_params, (32 << 30) // per_member)
    assert auto_pack_size(config, "cuda", memory=3 << 30) == (3 << 30) // per_member == 2  # --pack-memory-gb 3


def test_packs_fit_the_device_and_its_share(data_root, monkeypatch):
    """Workers sharing a GPU (--jobs-per-device) plan for their share of it; a worker on a GPU
    smaller than the default budget assumes trains its packs in parts that fit, and says so."""
    import torch

    from ddsweep.workers import worker
    from ddsweep.workers.packing import auto_pack_size, fitting_members, make_packs, member_bytes

    grid = vision_grid(data_root, train={"batch_size": 128},
                       grid={"width": [64], "n_train": [50000], "label_noise": [0.2], "seed": list(range(40))})
    jobs = [{**j, "pack_key": "k"} for j in jobs_of(grid)]
    config, each = jobs[0]["config"], member_bytes(jobs[0]["config"], "cuda")
    assert auto_pack_size(config, "cuda", 0.5) == (16 << 30) // each < auto_pack_size(config, "cuda") == (32 << 30) // each
    assert [len(p) for p in make_packs(jobs, None, "cuda", 0.5)] == chunks(40, (16 << 30) // each)
    assert fitting_members(config, "cuda", 1.0, 80 << 30) == (32 << 30) // each  # the default budget caps it
    assert fitting_members(config, "cuda", 1.0, 24 << 30) == (18 << 30) // each  # 75% of a 24 GiB GPU
    assert fitting_members(config, "cuda", 0.5, 24 << 30) == (9 << 30) // each
    mlp = {"model": {"name": "mlp", "depth": 2}, "width": 64}
    assert fitting_members(mlp, "cuda", 1.0, 1 << 30) is None  # no estimate: packs as formed

    class Device:
        total_memory = 12 << 30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Device)
    monkeypatch.setattr(worker, "_fits", {})
    said = []
    parts = worker._fitting_parts(jobs[:30], 0, "cuda", 1.0, said.append)
    fit = (9 << 30) // each
    assert 1 < fit < 30 and [len(p) for p in parts] == chunks(30, fit)
    assert [p[0] for p in parts] == jobs[:30:fit]
    assert len(said) == 1 and f"about {fit} members fit" in said[0].message and "12 GiB" in said[0].message
    assert [len(p) for p in worker._fitting_parts(jobs[:fit], 0, "cuda", 1.0, said.append)] == [fit]
    assert len(said) == 1  # said once per kind of pack
    monkeypatch.setattr(worker, "_fits", {})  # the user's budget (--pack-memory-gb 100) wins over the estimate
    assert [len(p) for p in worker._fitting_parts(jobs[:30], 0, "cuda", 1.0, said.append, 100 << 30)] == [30]


def chunks(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def test_workers_sharing_a_gpu_get_a_share(monkeypatch):
    from ddsweep.workers import transport

    monkeypatch.setattr(transport, "cuda_device_count", lambda: 2)
    slots = transport.resolve_slots(None, "0,1", 2)
    assert slots == [("cuda", {"CUDA_VISIBLE_DEVICES": g}, 0.5) for g in "0011"]
    assert transport.resolve_slots(2, None, 1) == [("cpu", {}, 1.0)] * 2


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("model", ["mcnn", "preact_resnet18"])
def test_pack_equals_alone(data_root, model):
    grid = vision_grid(data_root, model, train={"epochs": 1},
                       grid={"width": [2], "n_train": [64], "label_noise": [0.0, 0.2], "seed": [0, 1]})
    jobs = jobs_of(grid)
    packed = []
    train_pack(jobs, emit=packed.append)
    packed = rows_of(packed)
    for job in jobs[::3]:
        alone = []
        train_pack([job], emit=alone.append)
        for key, r in rows_of(alone).items():
            for m in ("train_loss", "test_loss"):
                assert packed[key][m] == pytest.approx(r[m], rel=1e-4), (key, m)
            assert packed[key]["step"] == r["step"]


def test_same_seed_same_run_and_resume(data_root, tmp_path):
    """Identical reruns; a run stopped after epoch 1 and resumed from its checkpoint (weights,
    Adam state, BatchNorm statistics, data order and augmentation streams) ends where an
    uninterrupted one does."""
    jobs = jobs_of(vision_grid(data_root, train={"epochs": 2}, grid={"width": [2], "n_train": [64],
                                                                     "label_noise": [0.2], "seed": [0, 1]}))
    straight = []
    train_pack(jobs, emit=straight.append)
    again = []
    train_pack(jobs, emit=again.append)
    assert rows_of(straight).keys() == rows_of(again).keys()
    for key, r in rows_of(straight).items():
        assert {m: r[m] for m in ("train_loss", "test_loss", "step")} == \
            {m: rows_of(again)[key][m] for m in ("train_loss", "test_loss", "step")}
    ckpt = tmp_path / "ckpt"
    calls = []
    first = []
    out = train_pack(jobs, emit=first.append, should_stop=lambda: calls.append(1) or len(calls) >= 1,
                     checkpoint_dir=ckpt)
    assert out == "stopped"
    resumed = []
    assert train_pack(jobs, emit=resumed.append, checkpoint_dir=ckpt) == "done"
    for key, r in rows_of(straight).items():
        if key[1] == 2:
            assert rows_of(resumed)[key]["train_loss"] == r["train_loss"]
            assert rows_of(resumed)[key]["test_loss"] == r["test_loss"]


def test_plan_and_work_through_the_cli(data_root, tmp_path, cli):
    """mcnn and preact_resnet18 at widths 1 and 2 on CIFAR-10-format files: `ddsweep plan` + `ddsweep work`."""
    db = tmp_path / "r.duckdb"
    for model in ("mcnn", "preact_resnet18"):
        grid = write_grid(tmp_path / f"{model}.yaml", vision_grid(data_root, model))
        r = cli("plan", grid, "--db", db)
        assert r.exit_code == 0, r.output
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    df = ddsweep.query("select j.sweep, j.model, j.width, m.epoch, m.step, m.train_loss, m.test_error "
                       "from metrics m join jobs j using (job_id)", db)
    status = ddsweep.query("select status, count(*) as n from jobs group by status", db)
    assert status.to_dict("records") == [{"status": "done", "n": 8}]
    assert len(df) == 8 * 3 and set(df.model) == {"mcnn", "preact_resnet18"}
    assert set(df[df.epoch == 2].step) == {2 * math.ceil(64 / 32)}
    assert df.train_loss.notna().all() and df.test_error.between(0, 1).all()


# ----------------------------------------------------------------------------- GPU (skipped without one)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("name", ["mcnn", "preact_resnet18"])
def test_cuda_bf16_pack_close_to_float32(name):
    """bf16 autocast with channels_last on the GPU: close to the float32 CPU result; padding stays 0."""
    widths = [1, 3, 8]
    x = torch.randint(0, 256, (3, 64, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (3, 64))
    results = []
    for device, precision in (("cpu", "fp32"), ("cuda", "bf16"), ("cuda", "fp32")):
        model = PACKED[name](3, 8, 10, precision=precision, device=device)
        for k, w in enumerate(widths):
            model.init_member(k, torch.Generator().manual_seed(k), w)
        loss = model.loss_and_grad(x.to(device), y.to(device), "cross_entropy")
        results.append((loss.cpu(), model.grad.cpu(), model.buffers.cpu()))
        assert model.channels_last == (device == "cuda")
    (l32, g32, b32), (l16, g16, b16), (lc, gc, bc) = results
    torch.testing.assert_close(lc, l32, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l16, l32, rtol=0.05, atol=0.05)
    assert torch.count_nonzero((g32 == 0) & (g16 != 0)) == 0  # padding stays exactly zero in bf16 too
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=1)
    assert (cos > 0.95).all(), cos


@cuda
def test_cuda_augmentation_equals_cpu():
    aug = CropFlip()
    x = torch.randint(0, 256, (4, 32, 3, 32, 32), dtype=torch.uint8)
    codes = torch.randint(0, aug.codes, (4, 32))
    assert torch.equal(aug(x.cuda(), codes.cuda()).cpu(), aug(x, codes))


@pytest.mark.parametrize("preset, jobs", [("cifar10-resnet18-adam", 64), ("cifar100-resnet18-adam", 64),
                                          ("cifar10-mcnn-samplewise", 378), ("cifar10-mcnn-sgd", 65)])
def test_presets(preset, jobs, monkeypatch):
    """The shipped Deep Double Descent presets plan (data presence faked) and name their figure."""
    from ddsweep.data import vision
    from ddsweep.grid import load_grid
    from tests.conftest import ROOT

    monkeypatch.setattr(vision, "missing_files", lambda spec: [])
    path = ROOT / "sweeps" / f"{preset}.yaml"
    assert "Figure" in path.read_text().split("\n", 1)[0] or "recipe" in path.read_text().split("\n", 1)[0]
    planned = expand(load_grid(path))
    assert len(planned) == jobs
    c = planned[0].config
    assert c["train"]["batch_size"] == 128 and c["train"]["weight_decay"] == 0.0
    if c["train"]["optimizer"] == "sgd":
        assert c["train"]["schedule"] == "inverse_sqrt" and c["train"]["lr"] == 0.1 and c["train"]["momentum"] == 0
        assert planned[0].epochs * math.ceil(50_000 / 128) >= 500_000
    else:
        assert c["train"]["lr"] == 1e-4 and planned[0].epochs == 4000
