"""Data-parallel training under torchrun: the process group, who writes, and reductions.

`kdforge run` started by `torchrun --nproc_per_node=N` (or on several nodes) trains the teacher
and the students with DistributedDataParallel: NCCL on GPUs, gloo on CPUs. Every rank computes;
rank 0 alone writes checkpoints, artifacts and the manifest, and runs the stages after training.
"""

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_environment(device: torch.device) -> None:
    """Joins the process group torchrun describes in the environment; a no-op when run alone."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
