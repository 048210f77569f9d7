"""Data-parallel training under ``torchrun`` with ``torch.distributed`` (gloo on CPU, NCCL on GPU; gloo when more
processes than GPUs share a machine, e.g. two processes on one GPU, where NCCL refuses).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) every helper is a no-op for a single process, so
the same training code runs either way. Under ``torchrun`` the model is wrapped in
``DistributedDataParallel``; every rank takes its share of each global batch; rank 0 alone writes files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str) -> bool:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} under torchrun, but torch sees no CUDA device; use --device cpu")
        per_host = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        gpus = torch.cuda.device_count()
        if per_host > gpus:
            # NCCL needs a GPU per process ("Duplicate GPU detected"); gloo all-reduces CUDA tensors on a shared GPU
            backend = "gloo"
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"note: {per_host} processes share {gpus} GPU(s); NCCL needs one GPU per process, so the "
                      "gradients are averaged with gloo (correct, slower)", flush=True)
    dist.init_process_group(backend=backend)
    return True


def local_device(device: str) -> torch.device:
    """``cuda`` under torchrun means this rank's GPU (``LOCAL_RANK``)."""
    if device.startswith("cuda") and is_distributed() and ":" not in device:
        # more processes than GPUs (gloo, see init_from_env): they share the GPUs round-robin
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return torch.device(device)


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items, *, min_items: int | None = None):
    """This rank's share ``items[rank::world]`` of a global batch."""
    return items[rank()::world_size()]


class LossModule(nn.Module):
    """``forward(*args)`` is ``fn(*args)``: lets ``DistributedDataParallel`` wrap any loss of a model (DDP syncs
    gradients only for computations that go through its wrapper's ``forward``)."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


def wrap(model: nn.Module, fn, device: torch.device) -> nn.Module:
    """``fn`` behind ``DistributedDataParallel`` when distributed, else a plain :class:`LossModule`.

    ``find_unused_parameters=True`` because the curvature ``log k`` is frozen during the warm-up and trainable
    afterwards (and a stage of a two-stage model leaves the other stage's parameters unused); DDP then leaves
    the gradients of globally unused parameters untouched.
    """
    module = LossModule(model, fn)
    if not is_distributed():
        return module

    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
    ddp._rf_managed = {id(p) for p in model.parameters() if p.requires_grad}  # what DDP synchronises
    return ddp


def sync_unmanaged_grads(wrapped: nn.Module) -> None:
    """Average across ranks the gradients of parameters that became trainable after DDP was built (DDP only
    synchronises those that required grad at construction: here the curvature ``log k`` after its warm-up).
    Call after ``backward()``, before the optimiser step; a no-op without torchrun."""
    if not is_distributed():
        return
    managed = getattr(wrapped, "_rf_managed", set())
    for p in wrapped.module.model.parameters():
        if p.requires_grad and id(p) not in managed and p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()
