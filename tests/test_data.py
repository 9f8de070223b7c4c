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


def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b


def official_pickle(data: np.ndarray, labels: list[int], batch_label: bytes = b"training batch 1 of 5") -> bytes:
    """A batch pickled the way the official files are: Python 2's cPickle, protocol 2, numpy 1.x
    (byte strings as SHORT_BINSTRING, the array rebuilt by numpy.core.multiarray._reconstruct)."""

    def global_(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def int_(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    h, w = data.shape
    array = (
        global_("numpy.core.multiarray", "_reconstruct")
        + global_("numpy", "ndarray")
        + int_(0)
        + b"\x85"
        + _py2_str(b"b")
        + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
        + b"("
        + int_(1)
        + b"("
        + int_(h)
        + b"M"
        + struct.pack("<H", w)
        + b"t"
        + global_("numpy", "dtype")
        + _py2_str(b"u1")
        + int_(0)
        + int_(1)
        + b"\x87R"
        + b"("
        + int_(3)
        + _py2_str(b"|")
        + b"NNN"
        + int_(-1)
        + int_(-1)
        + int_(0)
        + b"tb"
        + b"\x89"
        + _py2_str(data.tobytes())
        + b"tb"
    )
    items = (
        _py2_str(b"data")
        + array
        + _py2_str(b"labels")
        + b"]("
        + b"".join(int_(v) for v in labels)
        + b"e"
        + _py2_str(b"batch_label")
        + _py2_str(batch_label)
    )
    return b"\x80\x02}(" + items + b"u."


def fake_batches(n_per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        out[name] = official_pickle(data, labels)
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
    tar = write_official_tar(tmp_path / "c.tar.gz", batches)
    b = load_arrays(data_cfg(name="cifar10", root=str(tar), download=False))
    assert a.train_x.shape == (100, 32, 32, 3) and a.test_x.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    # the pickled rows are channel-planar: check one pixel by hand
    row = pickle.loads(batches["data_batch_1"], encoding="bytes")[b"data"][0]
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
        monkeypatch.setenv("CONVLENS_DATA", str(tmp_path / "home"))
        with pytest.raises(DataError, match="md5"):
            load_arrays(data_cfg(name="cifar10"))  # no data.root: into the data home
        assert not (tmp_path / "home").exists()  # a failed download leaves no folder behind
        monkeypatch.setattr(cifar, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
        assert load_arrays(data_cfg(name="cifar10")).train_x.shape == (100, 32, 32, 3)
        assert (tmp_path / "home" / "cifar10" / "cifar-10-python.tar.gz").is_file()
        # a data.root that exists but is empty is where the files go
        (tmp_path / "dl2").mkdir()
        a = load_arrays(data_cfg(name="cifar10", root=str(tmp_path / "dl2")))
        assert a.train_x.shape == (100, 32, 32, 3)
        assert (tmp_path / "dl2" / "cifar-10-python.tar.gz").is_file()
        assert (tmp_path / "dl2" / "cifar-10-python.tar.gz").stat().st_mode & 0o044  # readable by others
    finally:
        server.shutdown()


class _Hostile:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("kind", ["system", "eval", "nested"])
@pytest.mark.parametrize("packed", [False, True])
def test_cifar_batch_that_would_run_code_is_refused(tmp_path, kind, packed):
    import builtins
    import os

    marker = tmp_path / "ran"
    payload = {
        "system": _Hostile(os.system, f"touch {marker}"),
        "eval": _Hostile(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        # hidden inside an otherwise well-formed batch
        "nested": {
            b"data": np.zeros((20, 3072), np.uint8),
            b"labels": [0] * 20,
            b"x": _Hostile(os.system, f"touch {marker}"),
        },
    }[kind]
    batches = fake_batches()
    batches["data_batch_3"] = pickle.dumps(payload, protocol=2 if kind != "nested" else 5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, blob in batches.items():
        (folder / name).write_bytes(blob)
    root = write_official_tar(tmp_path / "c.tar.gz", batches) if packed else folder
    with pytest.raises(DataError) as e:
        load_arrays(data_cfg(name="cifar10", root=str(root), download=False))
    msg = str(e.value)
    assert not marker.exists()
    assert f"{root}/data_batch_3" in msg and "refused" in msg
    assert ("system" in msg) if kind != "eval" else (".eval" in msg)  # __builtin__.eval at protocol 2


def test_cifar_batches_written_by_numpy_2_load(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 9]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL))
    a = load_arrays(data_cfg(name="cifar10", root=str(tmp_path), download=False))
    assert a.train_x.shape == (20, 32, 32, 3) and a.test_y.tolist() == [1, 2, 3, 9]


def test_cifar_missing_names_path_and_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVLENS_DATA", str(tmp_path / "home"))
    with pytest.raises(DataError) as e:
        load_arrays(data_cfg(name="cifar10", download=False))
    msg = str(e.value)
    assert str(tmp_path / "home" / "cifar10") in msg and "cifar-10-batches-py" in msg and "data.download" in msg


@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion-mnist"])
def test_missing_data_root_is_an_error_not_a_download_target(tmp_path, monkeypatch, name):
    # a mistyped root used to become a new folder the official files were downloaded into
    monkeypatch.setenv("CONVLENS_MIRROR", "http://127.0.0.1:9/")  # nothing listens: no download happens
    typo = tmp_path / "dtaa" / "cifar"
    with pytest.raises(DataError) as e:
        load_arrays(data_cfg(name=name, root=str(typo)))
    msg = str(e.value)
    assert f"data.root={str(typo)!r}: {typo} does not exist" in msg and "cannot download" not in msg
    assert not (tmp_path / "dtaa").exists()


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


def _keep_folder_times(root: Path):
    """Remember every folder's times; calling the result puts them back."""
    import os

    times = {d: (d.stat().st_atime_ns, d.stat().st_mtime_ns) for d in [root, *root.rglob("*")] if d.is_dir()}
    return lambda: [os.utime(d, ns=t) for d, t in times.items()]


def test_cache_sees_images_rewritten_in_place(tmp_path):
    root = tmp_path / "tree"
    write_tree(root)
    cfg = data_cfg(name="imagefolder", root=str(root))
    assert load_arrays(cfg).train_x.mean() > 100
    restore = _keep_folder_times(root)
    for f in root.rglob("*.png"):  # same names, rewritten in place: black
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f)
    restore()
    a = load_arrays(cfg)
    assert a.train_x.max() == 0 and a.test_x.max() == 0


def test_cache_sees_same_size_rewrites(tmp_path):
    import os

    root = tmp_path / "tree"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((4, 4), 200, np.uint8), "L").save(root / c / f"{i}.bmp")
    cfg = data_cfg(name="imagefolder", root=str(root), val_fraction=0)
    assert load_arrays(cfg).train_x.min() == 200
    restore = _keep_folder_times(root)
    for f in root.rglob("*.bmp"):  # a BMP of the same size has the same length: only the time differs
        size, st = f.stat().st_size, f.stat()
        Image.fromarray(np.full((4, 4), 7, np.uint8), "L").save(f)
        assert f.stat().st_size == size
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # written a second later
    restore()
    assert load_arrays(cfg).train_x.max() == 7
    # a plain tar rewritten with the same length and given back its old time: the content decides
    tar_path = tmp_path / "t.tar"

    def write_tar(value):
        for f in root.rglob("*.bmp"):
            Image.fromarray(np.full((4, 4), value, np.uint8), "L").save(f)
            os.utime(f, ns=(0, 0))
        with tarfile.open(tar_path, "w") as tar:
            tar.add(root, arcname="t")

    write_tar(50)
    cfg = data_cfg(name="imagefolder", root=str(tar_path), val_fraction=0)
    assert load_arrays(cfg).train_x.max() == 50
    st = tar_path.stat()
    write_tar(60)
    assert tar_path.stat().st_size == st.st_size
    os.utime(tar_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_arrays(cfg).train_x.max() == 60


@pytest.mark.parametrize("ext", ["png", "tif", "pgm"])
def test_16_bit_grayscale_keeps_its_high_byte(tmp_path, ext):
    values = np.array([[0, 255, 256, 4095], [32768, 32895, 65280, 65535]], np.uint16)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "t" / split / c).mkdir(parents=True)
            Image.fromarray(values).save(tmp_path / "t" / split / c / f"x.{ext}")
    with Image.open(tmp_path / "t" / "train" / "a" / f"x.{ext}") as im:
        assert im.mode in ("I;16", "I") and np.asarray(im).tolist() == values.tolist()  # really 16-bit
    a = load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "t")))
    assert a.train_x.shape == (2, 2, 4, 1)
    assert a.train_x[0, ..., 0].tolist() == [[0, 0, 1, 15], [128, 128, 255, 255]]


def test_float_and_out_of_range_pixels_are_refused(tmp_path):
    from convlens.data.images import decode

    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: floating-point pixels"):
        decode(str(tmp_path / "f.tif"), None, None)
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(tmp_path / "i.tif")
    with pytest.raises(DataError, match=r"i\.tif: 32-bit integer pixels from 0 to 70000"):
        decode(str(tmp_path / "i.tif"), None, None)


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
    for stem, shape in (
        ("train-images-idx3-ubyte", (n, 28, 28)),
        ("t10k-images-idx3-ubyte", (n // 2, 28, 28)),
        ("train-labels-idx1-ubyte", (n,)),
        ("t10k-labels-idx1-ubyte", (n // 2,)),
    ):
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
