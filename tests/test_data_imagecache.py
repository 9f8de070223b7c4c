"""The on-disk image cache (decode once, read batches) and the batch crops."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import imagecache
from convlens.data.crops import center_crop, crop, crop_boxes, random_resized_crop
from convlens.data.imagecache import ImageCache
from convlens.errors import DataError

SIZES = [(40, 30), (30, 50), (16, 16), (64, 20), (33, 33)]


@pytest.fixture
def tree(tmp_path):
    """train/{a,b}/ and test/{a,b}/ with images of several sizes, one of them grayscale."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i, (w, h) in enumerate(SIZES):
                shape = (h, w) if (c, i) == ("b", 1) else (h, w, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(d / f"{i}.png")
    return root


def by_hand(path, side):
    """Short side to ``side`` with Pillow's bilinear filter, then the centre square."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = side / min(w, h)
    nw, nh = max(side, round(w * s)), max(side, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR) if (nw, nh) != (w, h) else im
    l, t = (nw - side) // 2, (nh - side) // 2
    return np.asarray(im.crop((l, t, l + side, t + side)))


def test_build_decodes_each_image_short_side_and_centre(tree, tmp_path):
    cache = ImageCache.build(tree, "train", 16, tmp_path / "cache", workers=1)
    assert len(cache) == 10 and cache.classes == ["a", "b"] and cache.labels.tolist() == [0] * 5 + [1] * 5
    rows = np.memmap(cache.path, np.uint8, "r", shape=(10, 16, 16, 3))  # a plain raw array on disk
    files = sorted((tree / "train").glob("*/*.png"))
    for i, f in enumerate(files):
        assert np.array_equal(rows[i], by_hand(f, 16)), f


def test_workers_write_the_same_file_as_one_process(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(imagecache, "CHUNK", 3)  # 4 tasks over 2 processes
    one = ImageCache.build(tree, "test", 24, tmp_path / "one", workers=1)
    two = ImageCache.build(tree, "test", 24, tmp_path / "two", workers=2)
    assert one.path.read_bytes() == two.path.read_bytes()


def test_a_second_build_reads_the_cache_and_a_changed_folder_decodes_again(tree, tmp_path, monkeypatch):
    first = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(imagecache, "_fill", fail)
        m.setattr(imagecache, "list_tree", fail)  # the signature alone finds the cache: no second walk
        again = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    assert again.path == first.path
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tree / "train" / "a" / "0.png")
    changed = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    assert changed.path != first.path and changed.read([0])[0, 0].eq(255).all()
    assert len(list((tmp_path / "c").glob("*.u8"))) == 2  # one file per split, size and content


def test_read_gives_the_rows_asked_for_in_their_order(tree, tmp_path):
    cache = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    rows = np.memmap(cache.path, np.uint8, "r", shape=(10, 16, 16, 3))
    idx = [7, 2, 3, 4, 9, 0]
    got = cache.read(idx)
    assert got.shape == (6, 3, 16, 16) and got.dtype == torch.uint8
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), rows[idx])
    with pytest.raises(IndexError, match="0 to 9"):
        cache.read([10])


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_cover_every_image_once_in_a_seeded_order(tree, tmp_path, prefetch):
    cache = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    whole = cache.read(range(10))

    def epoch(seed, epoch_no):
        out = list(cache.batches(4, shuffle=True, seed=seed, epoch=epoch_no, prefetch=prefetch))
        assert [len(y) for _, y in out] == [4, 4, 2]
        return out

    a, b, c = epoch(0, 0), epoch(0, 0), epoch(0, 1)
    seen = []
    for x, y in a:
        for img, label in zip(x, y):
            i = next(j for j in range(10) if torch.equal(whole[j], img))
            assert label == cache.labels[i]
            seen.append(i)
    assert sorted(seen) == list(range(10))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))  # another epoch, another order
    assert [len(y) for _, y in cache.batches(4, drop_last=True, prefetch=prefetch)] == [4, 4]
    assert torch.equal(torch.cat([x for x, _ in cache.batches(3, prefetch=prefetch)]), whole)


def test_prefetching_raises_errors_here_and_stops_when_left(tree, tmp_path, monkeypatch):
    cache = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    before = threading.active_count()
    for x, _ in cache.batches(1, prefetch=1):
        break
    assert threading.active_count() == before  # leaving the loop early stops the reader
    cache.path.write_bytes(cache.path.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        list(cache.batches(4, prefetch=2))


def test_mistakes_name_the_path(tree, tmp_path):
    with pytest.raises(DataError, match="has no split 'val'; found: \\['test', 'train'\\]"):
        ImageCache.build(tree, "val", 16, tmp_path / "c")
    with pytest.raises(DataError, match="not a folder"):
        ImageCache.build(tmp_path / "nope", "train", 16)
    with pytest.raises(DataError, match="side=8"):
        ImageCache.build(tree, "train", 8)
    cache = ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)
    cache.path.write_bytes(b"x")
    with pytest.raises(DataError, match="is damaged"):
        ImageCache.build(tree, "train", 16, tmp_path / "c", workers=1)


# -- crops ----------------------------------------------------------------------------------------


def test_a_full_box_without_flip_is_the_image_and_a_flip_mirrors_it():
    x = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8)
    full = torch.tensor([[0.0, 0.0, 12.0, 12.0]]).repeat(3, 1)
    assert torch.allclose(crop(x, full, 12), x.float() / 255, atol=1e-6)
    flips = torch.tensor([True, False, True])
    out = crop(x, full, 12, flips)
    assert torch.allclose(out[0], x[0].flip(-1).float() / 255, atol=1e-6)
    assert torch.allclose(out[1], x[1].float() / 255, atol=1e-6)


def test_a_box_of_the_output_size_is_that_window():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    boxes = torch.tensor([[2.0, 4.0, 8.0, 8.0], [8.0, 0.0, 8.0, 8.0]])
    out = crop(x, boxes, 8)
    assert torch.allclose(out[0], x[0, :, 4:12, 2:10].float() / 255, atol=1e-6)
    assert torch.allclose(out[1], x[1, :, 0:8, 8:16].float() / 255, atol=1e-6)


def test_random_boxes_stay_inside_with_the_asked_area_and_ratio():
    g = torch.Generator().manual_seed(0)
    b = crop_boxes(4000, 100, 100, (0.08, 1.0), (3 / 4, 4 / 3), g)
    left, top, w, h = b.unbind(1)
    assert (left >= 0).all() and (top >= 0).all() and (left + w <= 100 + 1e-4).all() and (top + h <= 100 + 1e-4).all()
    area = w * h / 1e4
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    unclipped = (w < 100) & (h < 100)
    r = (w / h)[unclipped]
    assert r.min() >= 0.75 - 1e-4 and r.max() <= 4 / 3 + 1e-4


def test_random_resized_crop_is_seeded_and_flips():
    x = torch.randint(0, 256, (64, 3, 20, 20), dtype=torch.uint8)
    a = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(1))
    b = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 8, 8) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    full = random_resized_crop(x, 20, scale=(1, 1), ratio=(1, 1), flip=1.0)
    assert torch.allclose(full, x.flip(-1).float() / 255, atol=1e-6)


def test_center_crop_is_the_middle_after_the_short_side_resize():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(center_crop(x, 8, ratio=0.5), x[..., 4:12, 4:12].float() / 255)
    small = center_crop(x, 7, ratio=0.875)  # 16 -> 8, then the centre 7
    ref = torch.nn.functional.interpolate(x.float() / 255, (8, 8), mode="bilinear", antialias=True)
    assert torch.allclose(small, ref[..., 0:7, 0:7], atol=1e-6)
