"""Data parallelism from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

Applied from outside the model: the loop asks `setup()` for (rank, world) and wraps the model
with DistributedDataParallel only when world > 1; gloo on CPU, nccl on CUDA. Every rank reads
its slice of the same global batch (see data/sampler.py), so N processes follow the same loss
curve as one process with the same global batch, to float tolerance.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def device_for(name: str) -> torch.device:
    if torch.cuda.is_available() and name in ("auto", "cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def wrap(model, device):
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean_scalar(value) -> float:
    tensor = value.detach().clone().float().reshape(1)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
