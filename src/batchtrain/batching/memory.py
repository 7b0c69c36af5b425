"""The memory ceiling: the largest physical (micro-)batch that fits in memory, on CPU or CUDA.

On CPU an out-of-memory kills the process, so the ceiling is estimated without trial and error,
from two small forward+backward passes followed with autograd hooks. On CUDA an out-of-memory is
an exception the process survives, so the ceiling is found by trial: real forward+backward passes
of growing batches, then a safety margin that is itself tried.
"""
import gc
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchtrain.batching.budget import default_budget_bytes, format_bytes
from batchtrain.errors import ConfigError

LossFn = Callable[[Tensor], Tensor]
PROBE_BATCHES = (8, 16)  # samples; their difference cancels what does not grow with the batch
# Peak RSS exceeds the peak of live tensor bytes: glibc malloc keeps freed blocks below its
# dynamic mmap threshold (it climbs to 32 MiB as tensors are freed) in the heap, where holes stay
# resident. Measured (seed-cnn, MLPs, one Adam step in a fresh process): RSS growth / traced peak
# = 1.0 when the big tensors exceed 32 MiB, up to 1.5 (once 1.7) when they are smaller. 1.25
# puts one step within 25 % of RSS (23 of 24 runs); over later steps the heap fragments up to
# ~2x the traced peak, which the default budget, half the available memory, absorbs.
ALLOCATOR_SLACK = 1.25



@dataclass(frozen=True)
class MemoryEstimate:
    """The memory ceiling and the cost model behind it; sizes in bytes, batches in samples."""

    max_batch: int  # largest physical batch within the budget (>= 1)
    per_sample_bytes: int  # memory that grows with the batch, per sample
    fixed_bytes: int  # parameters + gradients + optimizer state + buffers
    budget_bytes: int
    method: str  # "cpu-estimate" or "cuda-search"

    def bytes_for(self, batch: int) -> int:
        """Bytes a training step of `batch` samples needs: fixed + per sample x batch."""
        return self.fixed_bytes + self.per_sample_bytes * batch

    def describe(self) -> str:
        """One line for the run log."""
        return (f"memory ceiling: {self.max_batch} samples per physical batch ({self.method}: "
                f"{format_bytes(self.per_sample_bytes)}/sample + {format_bytes(self.fixed_bytes)}"
                f" fixed, budget {format_bytes(self.budget_bytes)})")


def optimizer_state_factor(optimizer: torch.optim.Optimizer | None) -> float:
    """State tensors the optimizer keeps per parameter element (the most over param groups).

    Adam/AdamW 2 (exp_avg, exp_avg_sq), +1 with amsgrad; SGD 1 with momentum, else 0; RMSprop 1
    (+1 momentum, +1 centered); Adagrad 1; None 0 (no optimizer); others 2, as conservative
    a guess as it gets for most (Adamax, NAdam, RAdam, Adadelta and Rprop all keep 2).
    """
    if optimizer is None:
        return 0.0
    return float(max(_group_state_factor(optimizer, group) for group in optimizer.param_groups))


def _group_state_factor(optimizer: torch.optim.Optimizer, group: dict) -> int:
    momentum = group.get("momentum", 0) != 0
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return 2 + bool(group.get("amsgrad"))
    if isinstance(optimizer, torch.optim.RMSprop):
        return 1 + momentum + bool(group.get("centered"))
    if isinstance(optimizer, torch.optim.SGD):
        return int(momentum)
    return 1 if isinstance(optimizer, torch.optim.Adagrad) else 2


def fixed_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters + their gradients + optimizer state + buffers: bytes no batch size changes."""
    trainable = _unique_bytes(p for p in model.parameters() if p.requires_grad)
    state = math.ceil(optimizer_state_factor(optimizer) * trainable)
    return _unique_bytes(model.parameters()) + trainable + state + _unique_bytes(model.buffers())


def default_loss(outputs: Tensor) -> Tensor:
    """Sum of the outputs: a scalar whose backward reaches every output (its own memory is nil)."""
    return outputs.float().sum()


def estimate_cpu(model: nn.Module, sample_x: Tensor, *, budget_bytes: int,
                 optimizer: torch.optim.Optimizer | None = None, loss_fn: LossFn | None = None,
                 max_batch: int = 1 << 20) -> MemoryEstimate:
    """The largest batch whose training step fits budget_bytes, estimated without trial and error.

    sample_x: a few real input samples, shape (k, ...); probe batches repeat them.
    budget_bytes: for the whole step, fixed costs included. max_batch: a cap, in samples.
    Per sample: the live tensor bytes, step by step, of two traced forward+backward passes
    (PROBE_BATCHES), differenced so that constant parts cancel; the steepest growth, times
    ALLOCATOR_SLACK. Raises ConfigError when not even one sample fits.
    """
    with _without_side_effects(model, sample_x.device):
        small, large = (_traced_live_bytes(model, _repeat(sample_x, n), loss_fn or default_loss)
                        for n in PROBE_BATCHES)
    if len(small) != len(large):  # the graphs differ (data-dependent control flow): peaks only
        small, large = [max(small)], [max(large)]
    # The steepest step rather than the difference of the peaks: with 8 samples a constant (a
    # weight gradient on its way to .grad) can make another step the peak than with 8000.
    growth = max(b - a for a, b in zip(small, large)) / (PROBE_BATCHES[1] - PROBE_BATCHES[0])
    per_sample = max(1, math.ceil(ALLOCATOR_SLACK * growth))
    fixed = fixed_bytes(model, optimizer)
    if fixed + per_sample > budget_bytes:
        raise ConfigError(
            f"a batch of 1 sample needs {format_bytes(fixed + per_sample)} ({format_bytes(fixed)} "
            f"parameters, gradients and optimizer state + {format_bytes(per_sample)} per sample), "
            f"more than the memory budget of {format_bytes(budget_bytes)}; raise the budget or "
            "use a smaller model")
    fitting = min((budget_bytes - fixed) // per_sample, max_batch)
    return MemoryEstimate(max(1, fitting), per_sample, fixed, budget_bytes, "cpu-estimate")


def _traced_live_bytes(model: nn.Module, x: Tensor, loss_fn: LossFn) -> list[int]:
    """Live tensor bytes after the forward pass of x, then after each backward step, in order;
    parameters, buffers and parameter gradients left out (they are fixed costs)."""
    trace = _BackwardTrace({_storage_key(t)[0] for t in (*model.parameters(), *model.buffers())})
    with torch.autograd.graph.saved_tensors_hooks(trace.pack, trace.unpack):
        outputs = model(x)
        loss = loss_fn(outputs)
    trace.hold(x, *(outputs if isinstance(outputs, tuple | list) else [outputs]))
    params = [p for p in model.parameters() if p.requires_grad]
    if params and loss.requires_grad:
        trace.watch(loss.grad_fn)
        torch.autograd.grad(loss, params, allow_unused=True)  # unlike backward(), leaves .grad
    return trace.live_bytes


class _BackwardTrace:
    """Follows the live tensors of a backward pass with autograd hooks, node by node.

    Live while a node runs: the tensors saved for backward by nodes yet to run, this one included
    (a storage saved twice, as ReLU's output is by ReLU and MaxPool, lives until both ran; int64
    max-pool indices count at their size), the activation gradients produced and not consumed yet
    (the node's grad_outputs among them), the gradients the node produces, and the input and
    output batches. Kernel workspaces are not seen; on the models measured the peak falls in an
    elementwise backward (ReLU's), which has none.
    """

    def __init__(self, fixed_storages: set[int]):
        self.fixed_storages = fixed_storages  # parameters, buffers: counted as fixed costs
        self.saved: dict[int, list[int]] = {}  # storage -> [bytes, saves not unpacked yet]
        self.grads: dict[int, int] = {}  # storage -> bytes, activation gradients in flight
        self.unpacked: list[int] = []  # storages the running node has unpacked
        self.held_bytes, self.live_bytes = 0, []

    def pack(self, tensor: Tensor) -> tuple[int, Tensor]:
        key, size = _storage_key(tensor)
        if key not in self.fixed_storages:
            self.saved.setdefault(key, [size, 0])[1] += 1
        return key, tensor

    def unpack(self, packed: tuple[int, Tensor]) -> Tensor:
        self.unpacked.append(packed[0])
        return packed[1]

    def hold(self, *tensors: Tensor) -> None:
        """Count tensors alive for the whole step (the batch, the outputs) once, as held."""
        for key, size in dict(_storage_key(t) for t in tensors if isinstance(t, Tensor)).items():
            self.saved.pop(key, None)
            self.held_bytes += size
        self.live_bytes.append(self.held_bytes + sum(size for size, _ in self.saved.values()))

    def watch(self, root: torch.autograd.graph.Node) -> None:
        """Hook every node of the graph under root but AccumulateGrad (parameter gradients)."""
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen or _accumulates_grad(node):
                continue
            seen.add(node)
            node.register_hook(lambda grad_inputs, grad_outputs, node=node:
                               self.node_ran(node, grad_inputs, grad_outputs))
            stack.extend(next_node for next_node, _ in node.next_functions)

    def node_ran(self, node, grad_inputs, grad_outputs) -> None:
        produced = dict(_storage_key(grad) for grad, (next_node, _)
                        in zip(grad_inputs, node.next_functions)
                        if grad is not None and next_node is not None
                        and not _accumulates_grad(next_node))
        new_bytes = sum(size for key, size in produced.items() if key not in self.grads)
        saved_bytes = sum(size for size, _ in self.saved.values())
        self.live_bytes.append(self.held_bytes + saved_bytes + sum(self.grads.values()) + new_bytes)
        for key in self.unpacked:  # autograd frees a node's saved tensors once it has run
            if key in self.saved:
                self.saved[key][1] -= 1
                if self.saved[key][1] == 0:
                    del self.saved[key]
        self.unpacked.clear()
        for grad in grad_outputs:  # consumed by this node
            if grad is not None:
                self.grads.pop(_storage_key(grad)[0], None)
        self.grads.update(produced)


def _accumulates_grad(node: torch.autograd.graph.Node) -> bool:
    return type(node).__name__ == "AccumulateGrad"


def _storage_key(tensor: Tensor) -> tuple[int, int]:
    """(identity, bytes) of the storage under tensor: views of one storage count once."""
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):  # sparse, mkldnn: no plain storage
        return id(tensor), tensor.numel() * tensor.element_size()


def _unique_bytes(tensors) -> int:
    """Bytes of the distinct storages under tensors (tied weights count once)."""
    return sum(dict(map(_storage_key, tensors)).values())


def _repeat(sample_x: Tensor, batch: int) -> Tensor:
    """A new batch of `batch` samples cycling through the k samples of sample_x."""
    if len(sample_x) < 1:
        raise ConfigError("the memory ceiling needs at least one input sample, got none")
    return sample_x[torch.arange(batch, device=sample_x.device) % len(sample_x)]


@contextmanager
def _without_side_effects(model: nn.Module, device: torch.device):
    """Trial passes in train mode that leave no trace: mode, buffers (BatchNorm's running
    statistics) and random generators (dropout) are restored afterwards."""
    was_training = model.training
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    with torch.random.fork_rng([device] if device.type == "cuda" else [], device_type=device.type):
        try:
            model.train()
            yield
        finally:
            model.train(was_training)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)


def search_cuda(trial: Callable[[int], None], *, start: int = 1, limit: int = 1 << 20,
                margin: float = 0.9, cleanup: Callable[[], None] | None = None) -> int:
    """The largest batch (samples) for which trial(batch) ran without a CUDA out-of-memory error.

    Doubles from start until a trial fails or limit is reached, then bisects between the last
    success and the first failure. The best size times margin (room for fragmentation and other
    processes) is tried as well, and the answer is always a size that succeeded, never an
    untested one: a flaky device cannot talk the search into a size that failed. cleanup runs
    after every trial, failed ones included, once the failure's tensors are unreachable.
    """
    if not 1 <= start <= limit or not 0 < margin <= 1:
        raise ConfigError(f"the batch search needs 1 <= start <= limit and a margin in (0, 1], "
                          f"got start={start}, limit={limit}, margin={margin}")
    outcomes: dict[int, bool] = {}  # batch -> it fitted; each size is tried once

    def fits(batch: int) -> bool:
        if batch not in outcomes:
            outcomes[batch] = _fits(trial, batch, cleanup)
        return outcomes[batch]

    if not fits(start):
        raise ConfigError(f"a batch of {start} sample(s) does not fit in CUDA memory; free the "
                          "device, use a smaller model or train on CPU")
    low, high = start, None  # the last success, the first failure
    while high is None and low < limit:
        batch = min(2 * low, limit)
        low, high = (batch, None) if fits(batch) else (low, batch)
    while high is not None and high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    target = max(start, math.floor(low * margin))
    if fits(target):
        return target
    return max(batch for batch, fitted in outcomes.items() if fitted and batch < target)


def _fits(trial: Callable[[int], None], batch: int, cleanup: Callable[[], None] | None) -> bool:
    try:
        trial(batch)
        return True
    except torch.cuda.OutOfMemoryError:
        # No `as error`: leaving the handler drops the traceback, whose frames hold the trial's
        # tensors, so they are gone when cleanup runs and gives their memory back.
        return False
    finally:
        if cleanup is not None:
            cleanup()


def cuda_trial(model: nn.Module, sample_x: Tensor, device: torch.device,
               loss_fn: LossFn | None = None, reserve_bytes: int = 0) -> Callable[[int], None]:
    """A trial for search_cuda: one real forward+backward of `batch` samples on device.

    reserve_bytes: device memory held during the trial for what training adds later (optimizer
    state, created at the first step) or to confine the search to a budget. Gradients come from
    autograd.grad, which leaves .grad as it was (nothing to zero); every tensor is local to the
    trial and freed when it returns or raises.
    """
    device = torch.device(device)
    samples, loss_fn = sample_x.to(device), loss_fn or default_loss
    params = [p for p in model.parameters() if p.requires_grad]

    def trial(batch: int) -> None:
        with _without_side_effects(model, device):
            reserve = torch.empty(reserve_bytes, dtype=torch.uint8, device=device)
            loss = loss_fn(model(_repeat(samples, batch)))
            if params and loss.requires_grad:
                torch.autograd.grad(loss, params, allow_unused=True)
            if device.type == "cuda":  # an asynchronous failure surfaces here, not later
                torch.cuda.synchronize(device)
            del reserve, loss

    return trial


def release_cuda_memory() -> None:
    """Give the caching allocator's free blocks back to the device (after a trial)."""
    gc.collect()
    torch.cuda.empty_cache()


def memory_ceiling(model: nn.Module, sample_x: Tensor, device: torch.device, *,
                   budget_bytes: int | None = None, optimizer: torch.optim.Optimizer | None = None,
                   loss_fn: LossFn | None = None) -> MemoryEstimate:
    """The largest physical batch for model on device: searched on CUDA, estimated elsewhere.

    budget_bytes: for one training step; default half the available RAM, or on CUDA the free
    device memory (search_cuda's margin is the safety there).
    """
    device = torch.device(device)
    if device.type != "cuda":
        budget = default_budget_bytes() if budget_bytes is None else budget_bytes
        return estimate_cpu(model, sample_x, budget_bytes=budget, optimizer=optimizer,
                            loss_fn=loss_fn)
    return _cuda_ceiling(model, sample_x, device, budget_bytes, optimizer, loss_fn)


def _cuda_ceiling(model, sample_x, device, budget_bytes, optimizer, loss_fn) -> MemoryEstimate:
    release_cuda_memory()
    free_bytes, _ = torch.cuda.mem_get_info(device)
    budget = free_bytes if budget_bytes is None else min(budget_bytes, free_bytes)
    # Trials hold what lies beyond the budget, and the optimizer state not created yet.
    trainable = _unique_bytes(p for p in model.parameters() if p.requires_grad)
    state = [v for s in (optimizer.state.values() if optimizer else ()) for v in s.values()]
    missing_state = math.ceil(optimizer_state_factor(optimizer) * trainable) - _unique_bytes(
        v for v in state if isinstance(v, Tensor))
    reserve = free_bytes - budget + max(0, missing_state)
    trial, peaks = cuda_trial(model, sample_x, device, loss_fn, reserve), {}

    def measured(batch: int) -> None:  # records the peak bytes each successful trial added
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        trial(batch)
        peaks[batch] = torch.cuda.max_memory_allocated(device) - before - reserve

    max_batch = search_cuda(measured, cleanup=release_cuda_memory)
    per_sample = max(1, math.ceil(peaks[max_batch] / max_batch))  # with gradients: upper bound
    return MemoryEstimate(max_batch, per_sample, fixed_bytes(model, optimizer), budget,
                          "cuda-search")
