"""torchrun / DistributedDataParallel glue: PyTorch's own engine, no home-made one.

Under `torchrun --nproc-per-node N ...` (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT) the trainer joins the process group (gloo on CPU, nccl on CUDA),
wraps the model in DistributedDataParallel and shards every global batch across the ranks.
`batch_size` stays the global logical batch: N ranks x B/N samples give the same update as one
process with B samples (tested). Metrics are sums all-reduced across ranks, so they are exact;
logs, plots and checkpoints are written by rank 0.
"""
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from batchtrain.distributed.elastic import attempt_store


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. rank: 0..world_size-1; local_rank: on this machine."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of `count` items (sizes differ by at most one)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, tensor: Tensor) -> Tensor:
        """The element-wise sum over ranks (a new tensor; the input is unchanged)."""
        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's value, on every rank (so every rank takes the same decision)."""
        carrier = torch.tensor([value], dtype=torch.int64, device=device)
        dist.broadcast(carrier, src=0)
        return int(carrier.item())

    def gather_floats(self, values: list[float], device: torch.device) -> list[float]:
        """Every rank's `values` (same length on each rank), concatenated in rank order."""
        local = torch.tensor(values, dtype=torch.float64, device=device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.cat(parts).tolist()


def from_environment(device: torch.device) -> Distributed | None:
    """Join the process group described by torchrun's environment; None in a single process.

    The backend follows the device: nccl for CUDA, gloo otherwise. A group already initialised
    (by the user's own script) is reused as it is. A torchrun restart joins through a store
    namespace of its own (distributed/elastic.py).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = attempt_store()
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=world_size)
    return Distributed(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def process_device(device: torch.device) -> torch.device:
    """Under torchrun each process drives the GPU of its LOCAL_RANK (set before any CUDA work)."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def wrap_for_ddp(model: nn.Module, group: Distributed | None, device: torch.device) -> nn.Module:
    """The module the trainer steps: the model itself, or under torchrun the model in
    DistributedDataParallel (gradients averaged over ranks in backward)."""
    if group is None:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_with_stats(parameters: list[torch.Tensor], group: Distributed, local_samples: int,
                          global_batch: int, factors: list[torch.Tensor] | None = None) -> dict:
    """All-reduce the gradients (as DDP would: the mean over ranks) after measuring each rank's
    own gradient, and return the noise statistics of the step (stats/noise.py's input).

    Under DDP the ranks' gradients are the 'small batches' of the noise-scale estimator and their
    average is the big one (McCandlish et al. 2018, appendix A.1): no extra backward pass, one
    gradient-sized all-reduce as always, plus one tiny all-gather. The caller ran every backward
    under no_sync(), so .grad holds this rank's share, local_samples * world / global_batch times
    its mean gradient. factors: an adaptive optimizer's preconditioner, one tensor per parameter
    (stats/precondition.py), applied before the norms; None measures raw gradients.
    """
    with_grad = [index for index, p in enumerate(parameters) if p.grad is not None]
    grads = [parameters[index].grad for index in with_grad]
    weights = [factors[index] for index in with_grad] if factors is not None else [1.0] * len(grads)

    def sq_norm(tensors: list[torch.Tensor]) -> float:
        return float(sum((g * w).double().square().sum() for g, w in zip(tensors, weights)))

    share = local_samples * group.world_size / global_batch
    local_sq = sq_norm(grads) / share**2 if local_samples else 0.0
    for grad in grads:
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        grad.div_(group.world_size)
    device = grads[0].device if grads else torch.device("cpu")
    gathered = group.gather_floats([float(local_samples), local_sq], device)
    sizes, norms = gathered[0::2], gathered[1::2]
    batch_sq = sq_norm(grads)
    kept = [(int(size), norm) for size, norm in zip(sizes, norms) if size > 0]
    return {"micro_sizes": [size for size, _ in kept], "micro_sq_norms": [norm for _, norm in kept],
            "batch_sq_norm": batch_sq}


def leave_process_group() -> None:
    """Tear down the process group, if this process joined one, before the interpreter exits.
    Why: a worker that exits with gloo's threads still running can abort at teardown
    ("terminate called without an active exception", SIGABRT): torchrun then reports the whole
    job failed, after it had finished (seen once in CI). Not enough alone: see exit_process."""
    global _joined
    if dist.is_available() and dist.is_initialized():
        _joined = True
        dist.destroy_process_group()


_joined = False  # this process has been in a process group (set by leave_process_group)


def exit_process(code: int) -> None:
    """End a command-line process with `code`. A process that was in a process group ends
    without the interpreter's finalization; any other returns and exits normally.

    Why: once a DistributedDataParallel wrapper has been built, gloo's threads (pt_gloo_runloop,
    gloo_tcp_loop, pt_tcpstore_uv) outlive destroy_process_group and the collection of the
    wrapper, its reducer and the module (torch 2.13; tests/distributed/test_exit.py lists them),
    so no call from Python can stop them. Threads still running native code while Py_Finalize
    tears the interpreter down are what aborted the CSV reader (a pyarrow worker, core dump in
    data/formats/csv.py) and, with the same signature, 2-rank fits at exit. Everything the run
    writes is already on disk by then (atomic writes with fsync, logs closed at fit end); only
    Python's own buffers remain, and they are flushed here.
    """
    if not _joined:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
            pass
    os._exit(code)
