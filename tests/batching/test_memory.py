"""The memory ceiling: the CUDA search against fake devices, the CPU estimate against analytic
byte counts and against the peak RSS of real training steps measured in fresh processes."""
import math
import random
import subprocess
import sys
import weakref

import pytest
import torch
from torch import nn

from batchtrain.batching import budget, memory
from batchtrain.batching.memory import (ALLOCATOR_SLACK, MemoryEstimate, cuda_trial, estimate_cpu,
                                        memory_ceiling, optimizer_state_factor, search_cuda)
from batchtrain.errors import ConfigError
from batchtrain.models import mlp, seed_cnn

pytestmark = pytest.mark.usefixtures("single_thread")
MiB = 2**20


# -- search_cuda against fake devices -----------------------------------------------------------

class FakeDevice:
    """A trial whose outcome is a function of the batch; logs trials and cleanups in order."""

    def __init__(self, fits):
        self.fits, self.log, self.outcomes = fits, [], {}

    def trial(self, batch: int) -> None:
        self.log.append(("trial", batch))
        self.outcomes.setdefault(batch, []).append(self.fits(batch))
        if not self.outcomes[batch][-1]:
            raise torch.cuda.OutOfMemoryError(f"fake: {batch} samples do not fit")

    def cleanup(self) -> None:
        self.log.append(("cleanup", None))

    def successes(self) -> set[int]:
        return {batch for batch, results in self.outcomes.items() if all(results)}


def assert_cleanup_after_every_trial(device: FakeDevice) -> None:
    kinds = [kind for kind, _ in device.log]
    assert kinds == ["trial", "cleanup"] * (len(kinds) // 2) and kinds


@pytest.mark.parametrize("threshold", [1, 2, 37, 64, 100, 1001, 5000])
@pytest.mark.parametrize("margin", [0.9, 1.0])
def test_search_cuda_finds_threshold_times_margin_and_only_returns_tested_sizes(threshold, margin):
    limit = 1000
    device = FakeDevice(lambda batch: batch <= threshold)
    found = search_cuda(device.trial, limit=limit, margin=margin, cleanup=device.cleanup)
    best = min(threshold, limit)
    assert found == max(1, math.floor(best * margin))  # monotonic device: exact answer
    assert found <= threshold and found in device.successes()
    assert_cleanup_after_every_trial(device)
    tried = [batch for kind, batch in device.log if kind == "trial"]
    assert len(tried) == len(set(tried)) <= 2 * math.ceil(math.log2(limit)) + 2  # no size twice


def test_search_cuda_respects_start():
    device = FakeDevice(lambda batch: batch <= 300)
    found = search_cuda(device.trial, start=24, limit=4096, cleanup=device.cleanup)
    assert found == 270 and min(batch for _, batch in device.log if batch) == 24


def test_search_cuda_raises_when_start_fails_and_still_cleans_up():
    device = FakeDevice(lambda batch: batch < 8)
    with pytest.raises(ConfigError, match="batch of 8 sample"):
        search_cuda(device.trial, start=8, cleanup=device.cleanup)
    assert device.log == [("trial", 8), ("cleanup", None)]


def test_search_cuda_falls_back_when_the_margin_size_fails():
    # Non-monotonic: everything up to 100 fits except exactly floor(100 * 0.9) = 90.
    device = FakeDevice(lambda batch: batch <= 100 and batch != 90)
    found = search_cuda(device.trial, limit=1000, cleanup=device.cleanup)
    assert ("trial", 90) in device.log
    assert found == max(b for b in device.successes() if b < 90) and found in device.successes()


@pytest.mark.parametrize("seed", range(40))
def test_search_cuda_never_returns_an_untested_size_on_a_flaky_device(seed):
    rng = random.Random(seed)
    threshold = rng.randint(1, 3000)
    # Fails above the threshold, and at random below it (fragmentation, other processes).
    device = FakeDevice(lambda batch: batch == 1 or (batch <= threshold and rng.random() > 0.3))
    found = search_cuda(device.trial, limit=2048, cleanup=device.cleanup)
    assert found in device.successes() and found <= threshold
    assert_cleanup_after_every_trial(device)


def test_search_cuda_drops_a_failed_trials_tensors_before_cleanup():
    alive = []

    def trial(batch):
        activations = torch.empty(batch)
        alive.append(weakref.ref(activations))
        if batch > 4:
            raise torch.cuda.OutOfMemoryError("fake")

    def cleanup():  # no gc.collect(): reference counting alone must free them
        assert all(ref() is None for ref in alive)

    assert search_cuda(trial, limit=64, margin=1.0, cleanup=cleanup) == 4


def test_search_cuda_lets_other_errors_through():
    def trial(batch):
        raise ValueError("a bug in the model, not a memory limit")

    with pytest.raises(ValueError, match="a bug"):
        search_cuda(trial)


def test_cuda_trial_runs_forward_and_backward_without_touching_grads():
    # The trial is device-agnostic: run it on CPU to check that it leaves no trace.
    torch.manual_seed(0)
    model = mlp((6,), 3).eval()
    trial = cuda_trial(model, torch.randn(2, 6), torch.device("cpu"), reserve_bytes=1024)
    trial(5)
    assert all(p.grad is None for p in model.parameters()) and not model.training


# -- CPU estimate: ground truth -----------------------------------------------------------------

def test_traced_bytes_match_a_hand_count_for_the_reference_cnn():
    torch.manual_seed(0)
    # the layer-by-layer network (fused=False): the hand count follows its autograd graph
    model, sample_x = seed_cnn((1, 28, 28), 10, fused=False), torch.randn(4, 1, 28, 28)
    estimate = estimate_cpu(model, sample_x, budget_bytes=2**40)
    # Peak at the first ReLU's backward: the input (1x28x28 float), the ReLU output it saved
    # (32x26x26 float), the gradient arriving from max-pool and the one it produces (same size),
    # and the logits (10 float). Max-pool indices (int64) and later layers are freed by then.
    relu1 = 32 * 26 * 26 * 4
    hand_count = 28 * 28 * 4 + 3 * relu1 + 10 * 4
    assert estimate.per_sample_bytes == math.ceil(ALLOCATOR_SLACK * hand_count)


def test_traced_bytes_match_a_hand_count_for_an_mlp():
    torch.manual_seed(0)
    model, sample_x = mlp((784,), 10, hidden=(256, 256)), torch.randn(4, 784)
    estimate = estimate_cpu(model, sample_x, budget_bytes=2**40)
    # Peak at the second ReLU's backward: input, both ReLU outputs (saved by ReLU and Linear),
    # the incoming and outgoing gradients of 256 floats, the logits. Weight gradients on their
    # way to .grad are fixed costs; they must not be mistaken for per-sample ones.
    hand_count = 784 * 4 + 2 * 256 * 4 + 2 * 256 * 4 + 10 * 4
    assert estimate.per_sample_bytes == math.ceil(ALLOCATOR_SLACK * hand_count)


def test_fixed_bytes_are_parameters_gradients_and_optimizer_state():
    model = seed_cnn((1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters())
    estimate = estimate_cpu(model, torch.randn(2, 1, 28, 28), budget_bytes=2**40,
                            optimizer=optimizer)
    assert estimate.fixed_bytes == 121_930 * 4 * (1 + 1 + 2)


# -- CPU estimate: against the peak RSS of a real step ------------------------------------------

RSS_CHILD = """
import sys, torch
torch.set_num_threads(1)
from batchtrain.models import mlp, seed_cnn

def high_water_bytes():  # VmHWM: the peak resident set size of this process so far
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))

model_expr, shape, batch = sys.argv[1], eval(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = eval(model_expr)
optimizer = torch.optim.Adam(model.parameters())

def train_step(x):
    optimizer.zero_grad()
    model(x).float().sum().backward()
    optimizer.step()

for _ in range(2):  # first-call costs, parameters, gradients and Adam state go into the baseline
    train_step(torch.randn(2, *shape))
baseline = high_water_bytes()
train_step(torch.randn(batch, *shape))
print(high_water_bytes() - baseline)
"""

RSS_CASES = [  # model (an expression in the child), sample shape, batch (samples)
    ("seed_cnn((1, 28, 28), 10)", (1, 28, 28), 512),
    ("mlp((784,), 10, hidden=(256, 256))", (784,), 4096),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize(("model_expr", "shape", "batch"), RSS_CASES)
def test_cpu_estimate_is_within_25_percent_of_measured_peak_rss(model_expr, shape, batch):
    torch.manual_seed(0)
    model = eval(model_expr, {"mlp": mlp, "seed_cnn": seed_cnn})
    estimate = estimate_cpu(model, torch.randn(4, *shape), budget_bytes=2**40,
                            optimizer=torch.optim.Adam(model.parameters()))
    child = subprocess.run([sys.executable, "-c", RSS_CHILD, model_expr, repr(shape), str(batch)],
                           capture_output=True, text=True, timeout=120, check=True)
    growth = int(child.stdout.split()[-1])
    # Fixed bytes (parameters, gradients, Adam state) already sit in the baseline; what grows
    # is the batch (its input counts in per_sample_bytes) and what it causes.
    predicted = estimate.bytes_for(batch) - estimate.fixed_bytes
    assert 0.75 * growth <= predicted <= 1.25 * growth, (
        f"{model_expr} x {batch}: estimated {predicted / MiB:.1f} MiB, "
        f"peak RSS grew {growth / MiB:.1f} MiB")


# -- CPU estimate: budget, clamping, side effects -----------------------------------------------

def test_max_batch_divides_the_budget_left_after_fixed_costs():
    model = mlp((20,), 2)
    estimate = estimate_cpu(model, torch.randn(3, 20), budget_bytes=10 * MiB)
    assert estimate.max_batch == (10 * MiB - estimate.fixed_bytes) // estimate.per_sample_bytes
    assert estimate.bytes_for(estimate.max_batch) <= 10 * MiB < estimate.bytes_for(
        estimate.max_batch + 1)
    assert estimate_cpu(model, torch.randn(3, 20), budget_bytes=10 * MiB, max_batch=7).max_batch == 7


def test_budget_below_one_sample_raises_naming_budget_and_need():
    model = mlp((784,), 10)
    with pytest.raises(ConfigError, match=r"needs .* more than the memory budget of 1\.0 KiB"):
        estimate_cpu(model, torch.randn(2, 784), budget_bytes=1024)


def test_estimate_leaves_model_mode_buffers_grads_and_rng_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    sample_x = torch.randn(4, 5)
    torch.manual_seed(1)
    expected_draw = torch.rand(3)
    torch.manual_seed(1)
    estimate_cpu(model, sample_x, budget_bytes=2**30)
    assert torch.equal(torch.rand(3), expected_draw)  # dropout's draws were forked off
    assert not model.training and all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_estimate_of_a_frozen_model_counts_the_forward_only():
    model = mlp((10,), 2).requires_grad_(False)
    estimate = estimate_cpu(model, torch.randn(2, 10), budget_bytes=MiB)
    assert estimate.per_sample_bytes == math.ceil(ALLOCATOR_SLACK * (10 + 2) * 4)


# -- optimizer state, budgets, dispatch ---------------------------------------------------------

class Unknown(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})


OPTIMIZERS = [  # (make, factor)
    (lambda p: torch.optim.Adam(p), 2), (lambda p: torch.optim.Adam(p, amsgrad=True), 3),
    (lambda p: torch.optim.AdamW(p), 2), (lambda p: torch.optim.AdamW(p, amsgrad=True), 3),
    (lambda p: torch.optim.SGD(p, lr=0.1), 0), (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1),
    (lambda p: torch.optim.RMSprop(p), 1), (lambda p: torch.optim.RMSprop(p, momentum=0.9), 2),
    (lambda p: torch.optim.RMSprop(p, momentum=0.9, centered=True), 3),
    (lambda p: torch.optim.Adagrad(p), 1),
]


@pytest.mark.parametrize(("make", "factor"), OPTIMIZERS)
def test_optimizer_state_factor_matches_the_state_a_step_creates(make, factor):
    param = nn.Parameter(torch.randn(50))
    optimizer = make([param])
    assert optimizer_state_factor(optimizer) == factor
    param.grad = torch.randn(50)
    optimizer.step()  # ground truth: count the parameter-sized tensors in the state
    state = optimizer.state[param].values()
    assert sum(isinstance(v, torch.Tensor) and v.numel() == 50 for v in state) == factor


def test_optimizer_state_factor_none_and_unknown():
    assert optimizer_state_factor(None) == 0
    assert optimizer_state_factor(Unknown([nn.Parameter(torch.zeros(1))])) == 2


def test_memory_ceiling_on_cpu_is_the_cpu_estimate(monkeypatch):
    torch.manual_seed(0)
    model, sample_x = seed_cnn((1, 28, 28), 10), torch.randn(4, 1, 28, 28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ceiling = memory_ceiling(model, sample_x, torch.device("cpu"), budget_bytes=256 * MiB,
                             optimizer=optimizer)
    assert ceiling == estimate_cpu(model, sample_x, budget_bytes=256 * MiB, optimizer=optimizer)
    assert ceiling.method == "cpu-estimate" and ceiling.max_batch > 1
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 512 * MiB)
    by_default = memory_ceiling(model, sample_x, "cpu", optimizer=optimizer)
    assert by_default == ceiling  # the default budget: half the available memory


def test_describe_is_one_log_line():
    line = MemoryEstimate(4096, 1258291, 3250586, 12562779750, "cpu-estimate").describe()
    assert line == ("memory ceiling: 4096 samples per physical batch (cpu-estimate: 1.2 MiB/sample"
                    " + 3.1 MiB fixed, budget 11.7 GiB)")
    assert MemoryEstimate(1, 512, 0, 2**50, "cuda-search").describe().count("\n") == 0


# -- CUDA ---------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_memory_ceiling_on_cuda_trains_at_the_ceiling_within_the_budget():
    device, budget = torch.device("cuda"), 256 * MiB
    torch.manual_seed(0)
    model = seed_cnn((1, 28, 28), 10).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    ceiling = memory_ceiling(model, torch.randn(16, 1, 28, 28, device=device), device,
                             budget_bytes=budget, optimizer=optimizer)
    assert ceiling.method == "cuda-search" and ceiling.max_batch >= 1
    memory.release_cuda_memory()
    free_bytes, _ = torch.cuda.mem_get_info(device)
    beyond_budget = torch.empty(free_bytes - budget, dtype=torch.uint8, device=device)
    for _ in range(3):  # Adam's state appears at the first step: it must fit too
        optimizer.zero_grad()
        model(torch.randn(ceiling.max_batch, 1, 28, 28, device=device)).float().sum().backward()
        optimizer.step()
    torch.cuda.synchronize(device)
    del beyond_budget
