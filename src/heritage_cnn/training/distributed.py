"""Data-parallel training under torchrun: which process this is, and joining and leaving the job.

Each process trains on its share of every batch; DistributedDataParallel averages the gradients,
so all processes hold the same weights. Run alone, everything here is the identity.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass

import torch

from heritage_cnn.base.devices import pick_device


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Add numbers across processes (identity when alone)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()


def init_distributed(device_name: str, threads: int | None) -> tuple[Ranks, torch.device]:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, ...), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), pick_device(device_name)
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        device = torch.device("cuda", ranks.local_rank)
    elif not threads:  # share the cores of this machine between its processes
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def run_on_main(ranks: Ranks, step: Callable[[], None]) -> None:
    """Run `step` on rank 0 alone (a check of the run folder, its claim) and raise what it raises on every
    process: a refusal ends the whole job at once, where the other processes would otherwise wait for rank 0 in
    the next collective. Alone, it is `step()`."""
    if ranks.world == 1:
        step()
        return
    import torch.distributed as dist

    outcome: list[BaseException | None] = [None]
    try:
        if ranks.main:
            step()
    except Exception as error:
        outcome = [_portable(error)]
        dist.broadcast_object_list(outcome, src=0)
        raise
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise outcome[0]


def _portable(error: Exception) -> Exception:
    """`error` as it can travel to the other processes: itself, or its one line where it does not pickle."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def replicas_check_wanted(ranks: Ranks) -> bool:
    """The debug check below runs after every step when HERITAGE_CHECK_REPLICAS=1 (tests set it)."""
    return ranks.world > 1 and os.environ.get("HERITAGE_CHECK_REPLICAS") == "1"


def check_replicas_agree(model: torch.nn.Module, ranks: Ranks) -> None:
    """Debug check: every process holds the same weights after a step."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu().view(1)
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(ranks.world)]
    dist.all_gather(gathered, checksum)
    if any(not torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9) for g in gathered):
        raise RuntimeError(f"replicas disagree after a step: {[float(g) for g in gathered]}")


def leave_process_group() -> None:
    """Tear down the torchrun job's process group, if any: left to interpreter exit, gloo's threads can
    abort the process ("terminate called without an active exception") after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
