"""Arrays written a batch of rows at a time into an ordinary .npz, and read back as memory maps."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from convlens.run import Layout
from convlens.run.npz import Rows, mapped, write_npz


def batches_of(a: np.ndarray, n: int):
    return lambda: (a[i : i + n].copy() for i in range(0, len(a), n))


@pytest.mark.parametrize("compressed", [False, True])
def test_rows_and_plain_arrays_read_back_with_numpy(tmp_path, compressed):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 3, 5, 4), dtype=np.uint8)
    positions = np.arange(37, dtype=np.int64) * 3
    path = tmp_path / "a.npz"
    with open(path, "wb") as f:
        write_npz(
            f, compressed, {"images": Rows(images.shape, np.uint8, batches_of(images, 8)), "positions": positions}
        )
    with np.load(path) as z:
        assert sorted(z.files) == ["images", "positions"]
        np.testing.assert_array_equal(z["images"], images)
        np.testing.assert_array_equal(z["positions"], positions)
    m = mapped(path, "images")
    if compressed:
        assert m is None  # a deflated member cannot be mapped: np.load reads it
    else:
        assert isinstance(m, np.memmap) and m.shape == images.shape and m.dtype == np.uint8
        np.testing.assert_array_equal(m[[4, 30, 0]], images[[4, 30, 0]])
        np.testing.assert_array_equal(mapped(path, "positions"), positions)
    assert mapped(path, "absent") is None


def test_layout_save_arrays_maps_what_it_wrote_uncompressed(tmp_path):
    art = Layout(tmp_path).artifact("topk")
    empty = Rows((0, 3, 4, 4), np.uint8, lambda: iter(()))
    rel = art.save_arrays(compressed=False, images=empty, scores=np.ones(3))
    assert mapped(tmp_path / rel, "images").shape == (0, 3, 4, 4)
    with np.load(tmp_path / rel) as z:
        assert z["images"].shape == (0, 3, 4, 4) and z["scores"].tolist() == [1.0, 1.0, 1.0]


def test_writing_rows_holds_one_batch_not_the_array(tmp_path):
    rows, shape = 64, (1024, 1024)  # 64 MiB in 1 MiB batches

    def batches():
        for i in range(rows):
            yield np.full((1, *shape), i % 251, dtype=np.uint8)

    tracemalloc.start()
    try:
        with open(tmp_path / "big.npz", "wb") as f:
            write_npz(f, False, {"images": Rows((rows, *shape), np.uint8, batches)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak  # a few batches at most, against 64 MiB for the whole array
    m = mapped(tmp_path / "big.npz", "images")
    assert m.shape == (rows, *shape) and int(m[63, 5, 7]) == 63 and int(m[0].max()) == 0


def test_rows_that_do_not_match_their_announced_shape_are_refused(tmp_path):
    a = np.zeros((4, 2), np.uint8)
    with open(tmp_path / "x.npz", "wb") as f, pytest.raises(ValueError, match="3 rows written, 4 announced"):
        write_npz(f, False, {"a": Rows((4, 2), np.uint8, batches_of(a[:3], 2))})
    with open(tmp_path / "y.npz", "wb") as f, pytest.raises(ValueError, match="rows of shape"):
        write_npz(f, False, {"a": Rows((4, 3), np.uint8, batches_of(a, 2))})
