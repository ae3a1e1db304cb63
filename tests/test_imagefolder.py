"""ImageFolder trees (`dataset: {name: imagefolder, root: DIR}`): listing, decoding, planning, training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ddsweep
from ddsweep.data import load_dataset
from ddsweep.data.vision import _folder_classes, _folder_files
from tests.conftest import write_grid

CLASSES = ("cat", "dog", "frog")


def write_tree(root, per_class=(12, 4), seed=0):
    """train/ and test/ with PNG images: 32x32 RGB, 28x28 grayscale and 40x36 RGB, in nested folders."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c in CLASSES:
            folder = root / split / c
            (folder / "more").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                kind = i % 3
                if kind == 0:
                    im = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                elif kind == 1:
                    im = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L")
                else:
                    im = Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8))
                im.save(folder / ("more" if i % 4 == 3 else ".") / f"img{i:03d}.png")
            (folder / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("folder"))


def folder_grid(root, **train):
    return {
        "name": "folder", "dataset": {"name": "imagefolder", "root": str(root), "augment": True},
        "model": {"name": "mcnn"},
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 8, "epochs": 1, **train},
        "eval": {"every": 1},
        "grid": {"width": [1, 2], "n_train": [24], "label_noise": [0.0, 0.2], "seed": [0]},
    }


def test_listing_follows_torchvisions_imagefolder(tree):
    from torchvision.datasets import ImageFolder

    for split in ("train", "test"):
        reference = ImageFolder(str(tree / split))
        classes = _folder_classes(tree / split)
        assert classes == reference.classes == list(CLASSES)
        assert [(str(p), c) for p, c in _folder_files(tree / split, classes)] == reference.samples


def test_images_decoded_as_rgb_32x32(tree):
    data = load_dataset({"name": "imagefolder", "root": str(tree)})
    assert data.x_pool.shape == (36, 3, 32, 32) and data.x_test.shape == (12, 3, 32, 32)
    assert data.num_classes == 3 and sorted(set(data.y_pool.tolist())) == [0, 1, 2]
    first, label = _folder_files(tree / "train", list(CLASSES))[0]
    assert label == 0
    expected = np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1)  # a 32x32 image: unchanged
    assert np.array_equal(data.x_pool[0].numpy(), expected)
    again = load_dataset({"name": "imagefolder", "root": str(tree)})  # from the cache
    assert np.array_equal(again.x_pool.numpy(), data.x_pool.numpy())


def test_plan_and_work_through_the_cli(tree, tmp_path, cli):
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", folder_grid(tree)), "--db", db)
    assert r.exit_code == 0, r.output
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    df = ddsweep.query("select m.epoch, m.step, m.test_error from metrics m join jobs j using (job_id)", db)
    assert len(df) == 4 * 2 and set(df[df.epoch == 1].step) == {3}
    assert df.test_error.between(0, 1).all()


@pytest.mark.parametrize("change, problem", [
    (lambda root: {"root": None}, "imagefolder needs dataset.root"),
    (lambda root: {"root": str(root / "nowhere")}, "train/ must hold one folder per class"),
    (lambda root: {"download": True}, "download does not apply"),
    (lambda root: {"pool": 10}, "MNIST-1D's generation knob"),
])
def test_bad_trees_are_one_clear_line(tree, tmp_path, cli, change, problem):
    grid = folder_grid(tree)
    grid["dataset"] = {k: v for k, v in {**grid["dataset"], **change(tmp_path)}.items() if v is not None}
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", grid), "--db", db)
    assert r.exit_code == 2 and problem in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not db.exists()


def test_test_split_with_an_unknown_class_is_refused(tmp_path, cli):
    root = write_tree(tmp_path / "t", per_class=(3, 1))
    (root / "test" / "horse").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "test" / "horse" / "a.png")
    r = cli("plan", write_grid(tmp_path / "g.yaml", folder_grid(root)), "--db", tmp_path / "r.duckdb")
    assert r.exit_code == 2 and "test/ has classes that train/ lacks: horse" in r.output, r.output
