"""An image folder at a chosen size (data.size) through the on-disk cache: what train, analyze and
explain read, the evaluation and training crops, and decoding that is interrupted or fails."""

import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from convlens.config import DataConfig, load_config
from convlens.data import batches, imagecache, load_data
from convlens.data.bundle import channel_mean
from convlens.data.cached import CachedImages, InMemory
from convlens.data.crops import random_resized_crop
from convlens.data.imagecache import ImageCache
from convlens.errors import ConfigError, DataError


def write_folder(root, per_class=(6, 3), size=(50, 40)):
    """train/ and test/ of two classes; image i is (size[0] + i) x size[1], random RGB."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size[1], size[0] + i, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def cfg(root, **kw):
    return DataConfig(**{"name": "imagefolder", "root": str(root), "val_fraction": 0.25, **kw})


def test_memmap_splits_are_views_of_the_file_and_memory_gives_the_same_pixels(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    disk = load_data(cfg(root, size=16, cache="memmap"))
    for split in (disk.train, disk.val, disk.test):
        assert isinstance(split.images, CachedImages) and isinstance(split.images.source, ImageCache)
        assert not any(
            isinstance(v, np.ndarray) and v.size > 100
            for v in vars(split.images.source).values()
            if v is not split.images.source.moments
        )  # nothing but labels and moments in memory
    assert disk.shape == (3, 16, 16) and disk.describe()["sizes"] == {"train": 8, "val": 4, "test": 6}
    ram = load_data(cfg(root, size=16, cache="memory"))
    assert isinstance(ram.train.images.source, InMemory)
    assert torch.equal(disk.train.images[:], ram.train.images[:]) and disk.mean == ram.mean
    monkeypatch.setenv("CONVLENS_MEMMAP_ABOVE", "100")  # auto: memmap above 100 bytes
    assert isinstance(load_data(cfg(root, size=16)).test.images.source, ImageCache)
    monkeypatch.setenv("CONVLENS_MEMMAP_ABOVE", str(1 << 40))
    assert isinstance(load_data(cfg(root, size=16)).test.images.source, InMemory)


def test_the_mean_and_std_are_those_of_the_cached_training_squares(tmp_path):
    root = write_folder(tmp_path / "pets")
    data = load_data(cfg(root, size=16, val_fraction=0.0))
    x = data.train.images.full(range(len(data.train))).double() / 255  # the 18 px squares
    assert np.allclose(data.mean, x.mean((0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(data.std, x.std((0, 2, 3), unbiased=False).tolist(), atol=1e-6)
    assert torch.allclose(channel_mean(data.test.images), data.test.images[:].double().mean((0, 2, 3)).float() / 255)


def test_evaluation_images_are_the_centre_of_the_short_side_resize(tmp_path):
    """A 60x40 picture at size 16, crop 0.5: short side to 32 (48x32, Pillow bilinear), centre 16x16."""
    rng = np.random.default_rng(1)
    pic = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for c in ("a", "b"):
        (tmp_path / "set" / c).mkdir(parents=True)
        for i in range(3):  # no split folders: one of each class is held out as test
            Image.fromarray(pic).save(tmp_path / "set" / c / f"{i}.png")
    data = load_data(DataConfig(name="imagefolder", root=str(tmp_path / "set"), val_fraction=0, size=16, crop=0.5))
    resized = np.asarray(Image.fromarray(pic).resize((48, 32), Image.Resampling.BILINEAR))
    want = torch.from_numpy(resized[8:24, 16:32].copy()).permute(2, 0, 1)
    images = data.train.images
    assert torch.equal(images[0], want) and torch.equal(images[[0]][0], want)
    x, _, _ = next(batches(data.test, 4))  # evaluation batches: the same pixels, as floats
    assert torch.equal((x[0] * 255).round().to(torch.uint8), want)


def test_training_crops_are_random_resized_crops_of_the_cached_squares_new_each_epoch(tmp_path):
    data = load_data(cfg(write_folder(tmp_path / "pets"), size=16, val_fraction=0.0))
    split = data.train

    def epoch(seed):
        return torch.cat(
            [
                x
                for x, _, _ in batches(
                    split, 5, shuffle=True, generator=torch.Generator().manual_seed(seed), random_crop=True
                )
            ]
        )

    a, b = epoch(0), epoch(1)
    assert a.shape == (12, 3, 16, 16) and not torch.equal(a, b) and torch.equal(a, epoch(0))
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(split), generator=g)
    want = torch.cat([random_resized_crop(split.images.full(order[i : i + 5]), 16, generator=g) for i in (0, 5, 10)])
    assert torch.equal(a, want)  # the cached 18 px squares, each cut by its own box and flip
    plain = torch.cat([x for x, _, _ in batches(split, 5)])
    assert torch.equal(plain, split.images[:].float() / 255)  # without random_crop: the centre


def test_train_analyze_and_explain_read_the_cache(tmp_path, monkeypatch):
    from convlens.analyses.base import Subject
    from convlens.explain.outputs import _load_images
    from convlens.train.loop import train

    root = write_folder(tmp_path / "pets", per_class=(10, 3))
    reads = []
    original = ImageCache.read
    monkeypatch.setattr(ImageCache, "read", lambda self, idx: reads.append(len(idx)) or original(self, idx))
    c = tiny_config(
        **{
            "data.name": "imagefolder",
            "data.root": str(root),
            "data.size": 16,
            "data.cache": "memmap",
            "train.epochs": 1,
            "train.batch_size": 4,
            "train.precision": "fp32",
            "eval.batch_size": 3,
        }
    )
    run = train(load_config(c), tmp_path / "run", echo=lambda s: None)
    assert reads and max(reads) <= 6  # batches (and the 6 test images examples.npz keeps), never all 15
    assert run.dataset["shape"] == [3, 16, 16]
    examples = run.examples()
    assert examples["images"].shape[1:] == (3, 16, 16)
    subject = Subject.from_run(run.path)
    assert isinstance(subject.split.images, CachedImages) and subject.in_shape == (3, 16, 16)
    _, idx, x, _ = _load_images(run, "test", [0, 3], None)
    assert x.shape == (2, 3, 16, 16) and torch.equal(x[1], subject.split.images[3].float() / 255)


def test_an_interrupted_decode_is_never_read_and_is_cleaned_up(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    monkeypatch.setattr(imagecache, "CHUNK", 4)
    calls = []
    real = imagecache._decode_into

    def once_then_interrupt(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    folder = tmp_path / "c"
    with monkeypatch.context() as m:
        m.setattr(imagecache, "_decode_into", once_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            ImageCache.build(root, "train", 16, folder, workers=1)
    assert sorted(p.suffix for p in folder.iterdir()) == []  # no pixels, labels or JSON left behind
    orphan = ImageCache.stem(root, "train", 16, folder).with_suffix(".u8.tmp999999999")
    orphan.write_bytes(b"half")  # a decode killed outright (no finally ran), by a process now gone
    cache = ImageCache.build(root, "train", 16, folder, workers=1)
    assert not orphan.exists() and cache.read([11]).shape == (1, 3, 16, 16)
    cache.path.with_suffix(".json").unlink()  # pixels without their JSON: incomplete, decoded again
    again = ImageCache.build(root, "train", 16, folder, workers=1)
    assert again.path.read_bytes() == cache.path.read_bytes()


def test_parallel_decoding_of_an_archive_equals_serial_decoding_of_the_folder(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets")
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="pets")
    monkeypatch.setattr(imagecache, "CHUNK", 3)  # 4 tasks over 2 processes
    serial = ImageCache.build(root, "train", 20, tmp_path / "a", workers=1)
    parallel = ImageCache.build(tmp_path / "pets.tar.gz", "train", 20, tmp_path / "b", workers=2)
    assert serial.path.read_bytes() == parallel.path.read_bytes()
    assert np.array_equal(serial.moments, parallel.moments) and np.array_equal(serial.labels, parallel.labels)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_image_names_its_file_and_leaves_no_cache(tmp_path, monkeypatch, workers):
    root = write_folder(tmp_path / "pets")
    bad = root / "train" / "dog" / "2.png"
    bad.write_bytes(b"not an image")
    monkeypatch.setattr(imagecache, "CHUNK", 3)
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        ImageCache.build(root, "train", 16, tmp_path / "c", workers=workers)
    assert not list((tmp_path / "c").glob("*.json")) and not list((tmp_path / "c").glob("*.u8*"))


def test_views_index_like_tensors_and_refuse_to_materialise_a_large_split(tmp_path, monkeypatch):
    data = load_data(cfg(write_folder(tmp_path / "pets"), size=16, cache="memmap", val_fraction=0.0))
    images = data.train.images
    whole = images[:]
    assert whole.shape == (12, 3, 16, 16) and images[3].shape == (3, 16, 16)
    assert torch.equal(images[[5, 1, 5]], whole[[5, 1, 5]]) and torch.equal(images[-1], whole[-1])
    assert torch.equal(images[torch.tensor([2, 0])], whole[[2, 0]]) and torch.equal(images[::4], whole[::4])
    sub = data.train.take([4, 2])
    assert isinstance(sub.images, CachedImages) and torch.equal(sub.images[:], whole[[4, 2]])
    assert torch.equal(sub.labels, data.train.labels[[4, 2]])
    with pytest.raises(IndexError, match="0 to 11"):
        images[[12]]
    monkeypatch.setattr("convlens.data.cached.MATERIALISE_LIMIT", 1000)
    with pytest.raises(DataError, match="read them in batches"):
        images.float()


def test_config_mistakes_name_the_keys():
    for raw, match in (
        ({"data": {"name": "imagefolder", "cache": "memmap"}}, "data.cache=memmap needs data.size"),
        ({"data": {"name": "digits", "size": 64}}, "data.size applies to data.name=imagefolder"),
        ({"data": {"name": "imagefolder", "size": 64, "resize": 32}}, "data.size .* or data.resize"),
        ({"data": {"name": "imagefolder", "size": 8}}, "size"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config({**tiny_config(), **raw})
    assert os.environ.get("CONVLENS_CACHE")  # the cache of these tests stays in their temp folder
