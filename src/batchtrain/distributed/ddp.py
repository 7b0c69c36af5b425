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
    global _joined
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return None
    _joined = True
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


class LocalNorms:
    """The state of local_norms_hook, DDP's communication hook for the noise measurement: on a
    measured step (begin() to take()), each gradient bucket's squared norm on this rank, summed
    on the device before the bucket is all-reduced. The ranks' own gradients are the noise
    estimator's small batches and their mean the big one (McCandlish et al. 2018, appendix A.1),
    so the measurement keeps DDP's bucketed all-reduce overlapped with backward; the one extra
    communication is a tiny all-gather of the norms after it (statistics_after_reduce)."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.active = False
        self.factors: dict[int, Tensor] | None = None  # by id(parameter): a preconditioner's
        self.sq_norm: Tensor | None = None

    def begin(self, parameters: list[Tensor], factors: list[Tensor] | None) -> None:
        self.active, self.sq_norm = True, None
        self.factors = ({id(p): f for p, f in zip(parameters, factors)}
                        if factors is not None else None)

    def take(self) -> float:
        """This rank's squared gradient norm since begin() (0 if no bucket was reduced)."""
        value = float(self.sq_norm) if self.sq_norm is not None else 0.0
        self.active, self.sq_norm = False, None
        return value

    def add(self, bucket: dist.GradBucket) -> None:
        if self.factors is None:
            part = bucket.buffer().double().square().sum()
        else:
            part = sum((grad * self.factors[id(param)]).double().square().sum()
                       for param, grad in zip(bucket.parameters(), bucket.gradients()))
        self.sq_norm = part if self.sq_norm is None else self.sq_norm + part


def local_norms_hook(state: LocalNorms, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's all-reduce of one bucket (the mean over ranks, as its default hook), after adding
    the bucket's local squared norm to `state` when a measurement is active."""
    if state.active:
        state.add(bucket)
    buffer = bucket.buffer().div_(state.world_size)
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda done: done.value()[0])


def measure_local_norms(network: nn.Module, group: "Distributed") -> LocalNorms:
    """The LocalNorms of a DDP-wrapped `network`, its hook registered on first use (DDP takes
    one communication hook per model, for good: a second fit() reuses it)."""
    norms = getattr(network, "_batchtrain_local_norms", None)
    if norms is None:
        norms = LocalNorms(group.world_size)
        network.register_comm_hook(state=norms, hook=local_norms_hook)
        network._batchtrain_local_norms = norms
    return norms


def statistics_after_reduce(parameters: list[Tensor], group: "Distributed", local_samples: int,
                            global_batch: int, local_sq: float,
                            factors: list[Tensor] | None = None) -> dict:
    """The noise statistics of a step (stats/noise.py's input) after DDP's all-reduce: local_sq is
    this rank's squared gradient norm before it (LocalNorms), of its share, local_samples * world
    / global_batch times its mean gradient; .grad now holds the mean over ranks. factors: an
    adaptive optimizer's preconditioner, one tensor per parameter (stats/precondition.py), applied
    before the norms, as they were to local_sq; None: raw gradients."""
    with_grad = [index for index, p in enumerate(parameters) if p.grad is not None]
    grads = [parameters[index].grad for index in with_grad]
    weights = [factors[index] for index in with_grad] if factors is not None else [1.0] * len(grads)
    share = local_samples * group.world_size / global_batch
    local = local_sq / share**2 if local_samples else 0.0
    device = grads[0].device if grads else torch.device("cpu")
    gathered = group.gather_floats([float(local_samples), local], device)
    sizes, norms = gathered[0::2], gathered[1::2]
    batch_sq = float(sum((g * w).double().square().sum() for g, w in zip(grads, weights)))
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


_joined = False  # this process has been in a process group (from_environment, leave_process_group)


def finish(code: int = 0) -> None:
    """End a script that trained under torchrun (the Python API's counterpart of the console
    script's exit): leave the process group, flush, and exit with `code` without the
    interpreter's finalization (exit_process says why). In a process that was never in a
    group it only returns, so a script can call it unconditionally as its last line."""
    leave_process_group()
    exit_process(code)


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
