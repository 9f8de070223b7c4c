import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.config import load_config
from convlens.data import cifar, idx, load_arrays, load_data
from convlens.data.bundle import channel_stats, image_moments, resize, to_grayscale
from convlens.errors import ConfigError, DataError

from conftest import CIFAR_TAR, FASHION, MNIST_TEST, needs_cifar, needs_fashion, needs_mnist


def data_cfg(**kw):
    return load_config({"data": kw}).data


# ---------------------------------------------------------------------------------------------
# fake CIFAR-10 in the official format


def fake_batches(n_per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n_per_batch))
        out[name] = pickle.dumps({b"data": data, b"labels": labels})
    return out


def write_official_tar(path: Path, batches: dict) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_cifar_batches_folder_and_archive_agree(tmp_path):
    batches = fake_batches()
    folder = tmp_path / "f" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, blob in batches.items():
        (folder / name).write_bytes(blob)
    a = load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "f"), download=False))
    b = load_arrays(data_cfg(name="cifar10", root=str(write_official_tar(tmp_path / "c.tar.gz", batches)), download=False))
    assert a.train_x.shape == (100, 32, 32, 3) and a.test_x.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    # the pickled rows are channel-planar: check one pixel by hand
    row = pickle.loads(batches["data_batch_1"])[b"data"][0]
    assert a.train_x[0, 0, 1].tolist() == [row[1], row[1024 + 1], row[2048 + 1]]
    assert a.classes[0] == "airplane"


def test_cifar_download_from_mirror_verifies_md5(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    archive = write_official_tar(served / "cifar-10-python.tar.gz", fake_batches())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CONVLENS_MIRROR", f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(DataError, match="md5"):
            load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "dl1")))
        assert not (tmp_path / "dl1").exists()  # a failed download leaves no folder behind
        monkeypatch.setattr(cifar, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
        a = load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "dl2")))
        assert a.train_x.shape == (100, 32, 32, 3)
        assert (tmp_path / "dl2" / "cifar-10-python.tar.gz").is_file()
        assert (tmp_path / "dl2" / "cifar-10-python.tar.gz").stat().st_mode & 0o044  # readable by others
    finally:
        server.shutdown()


def test_cifar_missing_names_path_and_ways(tmp_path):
    with pytest.raises(DataError) as e:
        load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "nowhere"), download=False))
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-10-batches-py" in msg and "data.download" in msg


def write_tree(root: Path, size=(8, 8), per_class=3, corrupt: str | None = None, mode="RGB"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (*size, 3) if mode == "RGB" else size, dtype=np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"not an image")


def test_image_tree_dir_and_tar(tmp_path):
    write_tree(tmp_path / "tree")
    a = load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "tree"), download=False))
    assert a.classes == ["cat", "dog"] and a.train_x.shape == (6, 8, 8, 3)
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="myset")
    b = load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "tree.tar.gz")))
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    # pixels survive exactly (PNG is lossless)
    first = np.asarray(Image.open(tmp_path / "tree" / "train" / "cat" / "0.png"))
    np.testing.assert_array_equal(a.train_x[0], first)


def test_corrupt_image_names_the_file(tmp_path):
    write_tree(tmp_path / "tree", corrupt="train/dog/bad.png")
    with pytest.raises(DataError, match=r"train/dog/bad\.png"):
        load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "tree")))


def test_mixed_sizes_need_resize(tmp_path):
    write_tree(tmp_path / "tree")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "tree" / "test" / "cat" / "odd.png")
    with pytest.raises(DataError, match="data.resize"):
        load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "tree")))
    a = load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "tree"), resize=6))
    assert a.test_x.shape[1:] == (6, 6, 3)


def test_grayscale_tree_has_one_channel_and_no_split_folders(tmp_path):
    for c in ("a", "b", "c"):
        (tmp_path / "g" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((4, 4), i * 10, np.uint8), "L").save(tmp_path / "g" / c / f"{i}.png")
    a = load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "g")))
    assert a.train_x.shape[1:] == (4, 4, 1)
    assert len(a.train_y) + len(a.test_y) == 15 and len(a.test_y) == 3  # 20% per class held out


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "missing")))


def write_idx(folder: Path, n=12, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for stem, shape in (("train-images-idx3-ubyte", (n, 28, 28)), ("t10k-images-idx3-ubyte", (n // 2, 28, 28)),
                        ("train-labels-idx1-ubyte", (n,)), ("t10k-labels-idx1-ubyte", (n // 2,))):
        data = rng.integers(0, 10 if len(shape) == 1 else 256, shape, dtype=np.uint8)
        raw = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + data.tobytes()
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)


def test_idx_plain_and_gz(tmp_path):
    write_idx(tmp_path / "a", gz=True)
    write_idx(tmp_path / "b", gz=False)
    a = load_arrays(data_cfg(name="mnist", root=str(tmp_path / "a"), download=False))
    b = load_arrays(data_cfg(name="fashion-mnist", root=str(tmp_path / "b"), download=False))
    assert a.train_x.shape == (12, 28, 28, 1) and b.test_x.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert b.classes[0] == "t-shirt/top"


def test_idx_truncated_and_missing(tmp_path):
    write_idx(tmp_path / "t", gz=False)
    p = tmp_path / "t" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_arrays(data_cfg(name="mnist", root=str(tmp_path / "t"), download=False))
    (tmp_path / "m").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_arrays(data_cfg(name="mnist", root=str(tmp_path / "m"), download=False))


@needs_mnist
@pytest.mark.slow
def test_real_mnist_test_file():
    x = idx.read_idx(MNIST_TEST / "t10k-images-idx3-ubyte.gz")
    y = idx.read_idx(MNIST_TEST / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert y[:5].tolist() == [7, 2, 1, 0, 4]


def test_splits_are_disjoint_stratified_and_reproducible():
    cfg = data_cfg(name="digits", val_fraction=0.25, split_seed=3)
    a, b = load_data(cfg), load_data(cfg)
    assert torch.equal(a.val.indices, b.val.indices)
    assert not set(a.val.indices.tolist()) & set(a.train.indices.tolist())
    counts = torch.bincount(a.val.labels, minlength=10).float()
    assert counts.min() >= 0.8 * counts.max()
    c = load_data(data_cfg(name="digits", val_fraction=0.25, split_seed=4))
    assert not torch.equal(a.val.indices, c.val.indices)


def test_subsets_and_mean_std():
    d = load_data(data_cfg(name="digits", train_subset=300, test_subset=50, val_fraction=0.1))
    assert len(d.train) + len(d.val) == 300 and len(d.test) == 50
    x = d.train.images.float() / 255
    assert d.mean[0] == pytest.approx(float(x.mean()), abs=1e-5)
    assert d.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-5)


def test_moments_give_exact_stats():
    x = np.random.default_rng(0).integers(0, 256, (50, 5, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(image_moments(x), 30)
    ref = x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, ref.std(0), atol=1e-6)


def test_grayscale_matches_pillow_and_resize():
    x = np.random.default_rng(0).integers(0, 256, (4, 9, 9, 3), dtype=np.uint8)
    g = to_grayscale(x)
    for i in range(4):
        np.testing.assert_array_equal(g[i, ..., 0], np.asarray(Image.fromarray(x[i]).convert("L")))
    r = resize(x, 5)
    assert r.shape == (4, 5, 5, 3) and r.dtype == np.uint8
    flat = np.full((2, 10, 10, 1), 77, np.uint8)
    assert (resize(flat, 4) == 77).all()


def test_mean_std_must_match_channels():
    with pytest.raises(DataError, match="3 / 3 values; the images have 1"):
        load_data(data_cfg(name="digits", mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2]))


@needs_cifar
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_cifar_loads_and_caches(monkeypatch):
    cfg = data_cfg(name="cifar10", root=str(CIFAR_TAR), download=False)
    load_data(cfg)  # may decode (first time in this cache)

    def decoded_again(*a, **k):
        raise AssertionError("the second load decoded the images instead of reading the cache")

    with monkeypatch.context() as mp:
        for reader in ("_from_tree", "_read_batches_archive", "_read_batches_dir"):
            mp.setattr(cifar, reader, decoded_again)
        d = load_data(cfg)
    assert d.classes == cifar.CLASSES and len(d.train) + len(d.val) == 50000 and len(d.test) == 10000
    assert d.mean == pytest.approx([0.4915, 0.4822, 0.4469], abs=2e-3)
    gray = load_data(data_cfg(name="cifar10", root=str(CIFAR_TAR), grayscale=True, resize=28, test_subset=100))
    assert gray.shape == (1, 28, 28)


@needs_fashion
@pytest.mark.slow
def test_fashion_from_debian_folder():
    d = load_data(data_cfg(name="fashion-mnist", val_fraction=0))
    assert d.shape == (1, 28, 28) and len(d.train) == 60000 and len(d.test) == 10000
    assert str(FASHION) in d.source


def test_dataset_name_validated():
    with pytest.raises(ConfigError, match="allowed: cifar10, digits, fashion-mnist, imagefolder, mnist"):
        data_cfg(name="svhn")
