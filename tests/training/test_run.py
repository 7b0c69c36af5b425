"""A run's beginning (training/run.py): begin_run's fresh state and pipeline with the counters
carried over, physical_cap's choice between the user's cap and the memory estimate, and the
FitInfo the callbacks are given."""
from pathlib import Path

import pytest
import torch
from torch import nn

from batchtrain.batching import budget
from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.memory import MemoryEstimate, memory_ceiling
from batchtrain.batching.schedule import Doubling
from batchtrain.batching.spec import MAX
from batchtrain.errors import ConfigError
from batchtrain.models.build import Built
from batchtrain.optim.schedules import Constant, Cosine
from batchtrain.stats import NoiseScaleTracker
from batchtrain.tasks.kinds import Task
from batchtrain.tasks.metrics import MetricSet
from batchtrain.training import run as run_module
from batchtrain.training.measure import NoiseMeasurement
from batchtrain.training.run import begin_run, fit_info, physical_cap
from batchtrain.training.step import TrainStep
from batchtrain.training.sync import SingleProcess

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")
TASK = Task("multiclass", 3, "cross_entropy")
ESTIMATE = MemoryEstimate(max_batch=77, per_sample_bytes=4096, fixed_bytes=2**20,
                          budget_bytes=64 * 2**20, method="cpu-estimate")


def built(group=None, seed: int = 7) -> Built:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    return Built(CPU, group, seed, (6,), TASK, model, model, None)


def start(requested, setup: Built, optimizer=None, previous=None, samples_per_epoch=100, epochs=2,
          cap=64, lr_scaling="auto", lr_schedule=None):
    optimizer = optimizer or torch.optim.SGD(setup.model.parameters(), lr=0.1)
    return begin_run(requested, setup, optimizer, ("accuracy",), samples_per_epoch, epochs, cap,
                     lr_scaling, lr_schedule, previous)


def never_called():
    raise AssertionError("the training inputs were read for an estimate nobody needs")


# --- begin_run ---------------------------------------------------------------------------------

def test_a_first_run_counts_from_zero_with_what_it_was_given():
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    policy = Doubling(8, "1e", 32)
    run, _ = start(policy, setup, optimizer, samples_per_epoch=50, epochs=3, cap=20,
                   lr_schedule="cosine")
    assert run.policy is policy and run.policy.batch_size() == 8
    assert (run.step, run.total_samples_seen, run.samples_seen, run.epoch, run.position) == (0,) * 5
    assert (run.samples_per_epoch, run.total_samples, run.max_physical_batch, run.seed) == (50, 150, 20, 7)
    assert run.lr_control.optimizer is optimizer and run.lr_control.rule == "linear"  # SGD's rule
    assert run.lr_control.schedule == Cosine() and run.lr_control.reference_batch is None
    assert run.lr_control.policy is policy
    assert isinstance(run.metrics, MetricSet) and run.metrics.names == ("accuracy",)
    assert run.metrics.task is TASK and run.metrics.count == 0
    assert len(run.history) == 0 and run.history.steps == [] and run.last_step is None


def test_max_becomes_a_fixed_batch_of_the_memory_ceiling():
    run, pipeline = start(MAX, built(), cap=24)
    assert isinstance(run.policy, Fixed) and run.policy.batch_size() == 24
    assert run.lr_control.schedule == Constant()


def test_the_counters_carry_over_from_the_previous_run_and_nothing_else():
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    previous, _ = start(Fixed(8), setup, optimizer)
    previous.step, previous.total_samples_seen, previous.samples_seen = 11, 348, 148
    previous.epoch, previous.position = 1, 48
    previous.history.append({"epoch": 1, "loss": 0.5})
    previous.history.steps.append({"step": 11, "samples_seen": 148})
    previous.last_step = previous.history.steps[-1]
    previous.lr_control.apply(8, previous.clock())
    outputs, targets = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    previous.metrics.update(outputs, targets, torch.tensor(1.0))
    previous.stop_request.received = "SIGINT"

    run, _ = start(Fixed(16), setup, optimizer, previous=previous, lr_scaling="sqrt")
    assert (run.step, run.total_samples_seen) == (11, 348)  # over every fit of the trainer
    assert (run.samples_seen, run.epoch, run.position) == (0, 0, 0)  # this run's own
    assert run.policy is not previous.policy and run.policy.batch_size() == 16
    assert run.lr_control is not previous.lr_control
    assert run.lr_control.rule == "sqrt" and run.lr_control.reference_batch is None
    assert run.lr_control.base_lrs == [0.1]  # the user's lr, whatever the last run set
    assert run.metrics is not previous.metrics and run.metrics.count == 0
    assert len(run.history) == 0 and run.history.steps == [] and run.last_step is None
    assert run.interrupt is None and run.stop_request is not previous.stop_request


def test_a_policy_that_wants_gradient_stats_gets_a_tracker_and_a_measured_pipeline():
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    policy = Adaptive(min_batch=8, initial=16)
    run, pipeline = start(policy, setup, optimizer, cap=40)
    assert isinstance(run.noise, NoiseScaleTracker)
    assert isinstance(pipeline.measurement, NoiseMeasurement)
    assert pipeline.measurement.tracker is run.noise and pipeline.measurement.group is None
    assert pipeline.measurement.parameters == pipeline.parameters
    assert policy.limit == 40  # told the memory ceiling
    assert pipeline.physical_batch(16, 40) == 8  # split in two, for the small-batch norms


def test_a_policy_that_does_not_measure_gets_neither():
    run, pipeline = start(Fixed(16), built())
    assert run.noise is None and pipeline.measurement is None
    assert pipeline.physical_batch(16, 40) == 16


def test_the_pipeline_trains_the_built_network_with_the_tasks_loss():
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    _, pipeline = start(Fixed(16), setup, optimizer)
    assert isinstance(pipeline, TrainStep) and isinstance(pipeline.sync, SingleProcess)
    assert pipeline.network is setup.network and pipeline.optimizer is optimizer
    assert pipeline.loss_fn == TASK.loss_fn
    model_parameters = list(setup.model.parameters())
    assert len(pipeline.parameters) == len(model_parameters) == 4
    assert all(ours is theirs for ours, theirs in zip(pipeline.parameters, model_parameters))


def test_adascale_without_a_measuring_policy_is_refused():
    with pytest.raises(ConfigError, match="'adascale' needs a batch-size policy that measures"):
        start(Fixed(16), built(), lr_scaling="adascale")


# --- physical_cap ------------------------------------------------------------------------------

class FakeGroup:
    """A process group whose rank 0 chose `value`: broadcast_int returns it, whatever it is given."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def broadcast_int(self, value, device):
        self.calls.append((value, device))
        return self.value


def test_the_users_cap_wins_and_no_estimate_is_made(monkeypatch):
    monkeypatch.setattr(run_module, "memory_ceiling", lambda *args, **kwargs: never_called())
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    assert physical_cap(12, None, "64MiB", setup, optimizer, never_called) == (None, 12)
    assert physical_cap(12, ESTIMATE, None, setup, optimizer, never_called) == (None, 12)


@pytest.mark.parametrize("cap", [0, -3, 2.5, "12"])
def test_a_users_cap_that_is_not_a_count_is_refused(cap):
    setup = built()
    with pytest.raises(ConfigError, match="must be an integer >= 1"):
        physical_cap(cap, None, None, setup, torch.optim.SGD(setup.model.parameters(), lr=0.1),
                     never_called)


def test_the_estimate_of_an_earlier_fit_is_reused(monkeypatch):
    monkeypatch.setattr(run_module, "memory_ceiling", lambda *args, **kwargs: never_called())
    setup = built()
    memory, cap = physical_cap(None, ESTIMATE, "1GiB", setup,
                               torch.optim.SGD(setup.model.parameters(), lr=0.1), never_called)
    assert memory is ESTIMATE and cap == 77


def test_without_either_the_ceiling_is_estimated_once_within_the_budget():
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    inputs = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    reads = []

    def sample():
        reads.append(1)
        return inputs

    memory, cap = physical_cap(None, None, "64MiB", setup, optimizer, sample)
    assert reads == [1]
    assert memory.budget_bytes == 64 * 2**20 and memory.method == "cpu-estimate"
    assert cap == memory.max_batch
    assert memory == memory_ceiling(setup.model, inputs, CPU, budget_bytes=64 * 2**20,
                                    optimizer=optimizer)


def test_the_estimate_gets_the_model_inputs_optimizer_and_the_budget_resolved(monkeypatch):
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 10_000_000)
    asked = []

    def ceiling(model, sample_x, device, *, budget_bytes, optimizer):
        asked.append((model, sample_x, device, budget_bytes, optimizer))
        return ESTIMATE

    monkeypatch.setattr(run_module, "memory_ceiling", ceiling)
    setup = built()
    optimizer = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    inputs = torch.zeros(2, 6)
    assert physical_cap(None, None, "0.25", setup, optimizer, lambda: inputs) == (ESTIMATE, 77)
    assert asked == [(setup.model, inputs, CPU, 2_500_000, optimizer)]  # a fraction of the RAM
    physical_cap(None, None, None, setup, optimizer, lambda: inputs)
    assert asked[-1][3] is None  # no budget: the estimator's default


@pytest.mark.parametrize("user_cap, memory, offered", [(12, None, 12), (None, ESTIMATE, 77)],
                         ids=["users-cap", "estimate"])
def test_under_ddp_every_rank_takes_rank_zeros_cap(user_cap, memory, offered):
    group = FakeGroup(5)
    setup = built(group=group)
    result_memory, cap = physical_cap(user_cap, memory, None, setup,
                                      torch.optim.SGD(setup.model.parameters(), lr=0.1), never_called)
    assert cap == 5 and result_memory is memory
    assert group.calls == [(offered, CPU)]


# --- fit_info ----------------------------------------------------------------------------------

def test_fit_info_describes_the_run_for_the_callbacks():
    run, _ = start(Doubling(8, "1e", 32), built(), samples_per_epoch=50, epochs=3, cap=20,
                   lr_scaling="sqrt", lr_schedule="cosine")
    info = fit_info(run, None, steps_per_epoch=7, validation_samples=10, epochs=3, resumed_from=None)
    assert (info.epochs, info.steps_per_epoch, info.num_samples, info.batch_size,
            info.validation_samples) == (3, 7, 50, 8, 10)
    assert info.policy == repr(run.policy) == "Doubling(8, every='1e', cap=32)"
    assert info.memory == "physical batch at most 20 (set by the user)"
    assert info.lr == "lr scaling sqrt, schedule cosine to 0"
    assert info.resumed_from == ""


def test_fit_info_with_an_estimate_and_a_resumed_checkpoint():
    run, _ = start(Fixed(16), built(), cap=77)
    path = Path("runs/checkpoints/checkpoint-000480.pt")
    info = fit_info(run, ESTIMATE, steps_per_epoch=7, validation_samples=0, epochs=2,
                    resumed_from=path)
    assert info.memory == ESTIMATE.describe() and info.memory.startswith("memory ceiling: 77 samples")
    assert info.policy == "Fixed(16)" and info.batch_size == 16
    assert info.lr == "lr scaling linear, schedule constant"
    assert info.resumed_from == str(path)
