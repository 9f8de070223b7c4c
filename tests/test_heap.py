"""Freed blocks kept for the next training step: page faults, restoration, opt-outs, wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from convlens import heap, runload
from convlens.train import train
from convlens.train.evaluate import predict

from conftest import tiny_config

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="needs glibc's malloc (Linux)")

# A fresh process (malloc's settings are process-wide): minor page faults per training step of a
# small conv net on 512 images of 32 px (activations of 64 MiB, above glibc's largest mmap
# threshold), before, inside and after reuse_freed_blocks.
PROBE = textwrap.dedent(
    """
    import json, resource, torch
    from torch import nn
    from convlens.heap import reuse_freed_blocks

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.Flatten(),
                        nn.Linear(32 * 32 * 32, 10))
    x = torch.randn(512, 3, 32, 32)

    def faults(steps=6):
        def step():
            net.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
        step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

    out = {"before": faults()}
    with reuse_freed_blocks() as on:
        out["on"] = on
        out["inside"] = faults()
    out["after"] = faults()
    print(json.dumps(out))
    """
)


# what may tune malloc from the environment (heap.tuned_elsewhere): cleared for these tests
TUNING = ("MALLOC_", "CONVLENS_REUSE_HEAP", "GLIBC_TUNABLES")


@pytest.fixture
def untuned(monkeypatch):
    for key in [k for k in os.environ if k.startswith(TUNING)]:
        monkeypatch.delenv(key)


def probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(TUNING)}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_inside_and_returned_after():
    got = probe()
    assert got["on"] is True
    assert got["before"] > 50_000  # every step maps its activations afresh: a fault per 4 KiB page
    assert got["inside"] < 0.1 * got["before"]  # the blocks freed by the last step serve the next
    assert got["after"] > 0.4 * got["before"]  # glibc's defaults are back


@pytest.mark.parametrize(
    "env",
    [{"CONVLENS_REUSE_HEAP": "0"}, {"MALLOC_MMAP_MAX_": "65536"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}],
)
def test_a_heap_tuned_by_the_environment_is_left_alone(env):
    got = probe(**env)
    assert got["on"] is False
    assert got["inside"] > 0.8 * got["before"]


def test_nested_uses_apply_once_and_undo_at_the_last(monkeypatch, untuned):
    calls = []
    libc = heap._glibc()

    class Spy:
        def mallopt(self, key, value):
            calls.append((key, value))
            return libc.mallopt(key, value)

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
            return libc.malloc_trim(pad)

    monkeypatch.setattr(heap, "_glibc", Spy)
    monkeypatch.setattr(heap, "_threshold", heap.SETTLED_THRESHOLD)  # no image cache read yet
    with heap.reuse_freed_blocks():
        with heap.reuse_freed_blocks():
            assert heap.reusing()
        assert heap.reusing()
        assert calls == [(heap.M_MMAP_MAX, 0), (heap.M_TRIM_THRESHOLD, heap.KEEP_BELOW)]
    assert not heap.reusing()
    assert calls[2:] == [
        (heap.M_MMAP_MAX, heap.GLIBC_MMAP_MAX),
        (heap.M_MMAP_THRESHOLD, heap.SETTLED_THRESHOLD),  # where glibc's adaptive threshold settles
        (heap.M_TRIM_THRESHOLD, 2 * heap.SETTLED_THRESHOLD),
        ("trim", 0),
    ]
    # an image cache read from disk asks for 4 MiB: it stays after training
    heap.return_large_blocks()
    calls.clear()
    with heap.reuse_freed_blocks():
        pass
    assert (heap.M_MMAP_THRESHOLD, heap.CACHE_THRESHOLD) in calls


def test_training_and_prediction_run_with_freed_blocks_kept(tmp_path, untuned):
    seen = []
    run = train(tiny_config(), tmp_path / "r", echo=lambda s: None, callback=lambda row: seen.append(heap.reusing()))
    assert seen == [True, True]  # every epoch
    assert not heap.reusing()  # and undone at the end
    inside = []
    model = runload.load_model(run, "last")
    real = model.forward
    model.forward = lambda x: (inside.append(heap.reusing()), real(x))[1]
    predict(model, runload.load_data(run).test)
    assert inside and all(inside)
    assert not heap.reusing()
