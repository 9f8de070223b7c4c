"""Several processes started by ``torchrun``: who this one is, and the process group they share.

Training (``train/loop.py``: data-parallel, each process computes the gradient of its share of
every batch) and the analyses' streaming pass (``analyses/shard.py``) read these; nothing here
imports torch until a group is made.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


def world() -> tuple[int, int] | None:
    """``(rank, world size)`` when this process is one of several started by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), size) if size > 1 and "RANK" in os.environ else None


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[str]:
    """The group of torchrun's processes for the block (gloo on CPUs; NCCL and one GPU per
    process, ``cuda:LOCAL_RANK``, on CUDA); yields the device this process uses."""
    import torch
    import torch.distributed as dist

    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    made = not dist.is_initialized()
    if made:
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    try:
        yield device
    except BaseException:
        if made:
            dist.destroy_process_group()
        raise
    if made:  # every process reaches the end before the group's threads are torn down
        dist.barrier()
        dist.destroy_process_group()
