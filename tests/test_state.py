"""RunState (state.py): what checkpoints capture round-trips into a fresh run, built from the same
real pieces training/run.py begin_run uses."""
import copy
import io

import pytest
import torch
from torch import nn

from batchtrain.batching.base import StepStats, declared
from batchtrain.batching.coupling import LearningRate
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling
from batchtrain.checkpointing.resume import PROGRESS_KEYS
from batchtrain.optim.schedules import SampleClock, as_lr_schedule
from batchtrain.runtime.signals import StopRequest
from batchtrain.state import History, RunState
from batchtrain.stats import NoiseScaleTracker
from batchtrain.tasks.kinds import Task
from batchtrain.tasks.metrics import MetricSet

CPU = torch.device("cpu")
TASK = Task(kind="regression", n_outputs=2, loss="mse")


def make_run(policy, lr: float = 0.1, noise: bool = True, max_physical_batch: int = 64,
             seed: int = 5, samples_per_epoch: int = 100, epochs: int = 3) -> RunState:
    """As begin_run: the policy declared, lr control over an optimizer, metrics, the tracker."""
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    policy = declared(policy)
    lr_control = LearningRate(optimizer, "linear", as_lr_schedule(None), policy)
    return RunState(policy, lr_control, MetricSet(TASK, ("mae", "rmse"), CPU),
                    NoiseScaleTracker() if noise else None, max_physical_batch, seed,
                    samples_per_epoch, samples_per_epoch * epochs)


def trained(run: RunState) -> RunState:
    """The run after some training: counters, records, metric sums, lr, noise all moved."""
    generator = torch.Generator().manual_seed(0)
    run.lr_control.apply(16, run.clock())
    run.epoch, run.position, run.step = 1, 48, 11
    run.samples_seen, run.total_samples_seen = 148, 348
    run.history.append({"epoch": 0, "loss": 0.5, "mae": 0.4, "batch_size": 16})
    for step in range(1, 4):
        run.history.steps.append({"step": step, "samples_seen": 16 * step, "batch_size": 16,
                                  "samples": 16, "physical_batch": 8, "accumulation_steps": 2,
                                  "lr": 0.1})
    for _ in range(2):
        outputs, targets = torch.randn(8, 2, generator=generator), torch.randn(8, 2, generator=generator)
        run.metrics.update(outputs, targets, ((outputs - targets) ** 2).mean())
    for micro_sq in ([3.0, 2.5], [2.8, 3.1], [3.3, 2.9]):
        run.noise.update([8, 8], micro_sq, 1.2)
    return run


def through_a_file(state: dict) -> dict:
    """As a checkpoint holds it: saved and loaded with torch (no object shared with the run)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("policy, fresh_policy", [
    (Fixed(16), Fixed(4)),
    (Doubling(8, "1e", 64), Doubling(8, "1e", 64)),
], ids=["fixed", "doubling"])
def test_state_dict_round_trips_into_a_fresh_run(policy, fresh_policy):
    if isinstance(policy, Doubling):  # a schedule's state is its progress
        policy.observe(StepStats(samples_seen=148, epoch=1, samples_per_epoch=100, batch_size=16))
    run = trained(make_run(policy))
    state = through_a_file(run.state_dict())

    fresh = make_run(fresh_policy, lr=0.7, max_physical_batch=8, seed=0)
    for key in ("lr_control", "policy", "progress", "history", "max_physical_batch", "seed",
                "noise"):  # everything starts elsewhere
        assert fresh.state_dict()[key] != run.state_dict()[key], key
    fresh.load_state_dict(state, CPU)

    assert fresh.progress() == run.progress()
    assert (fresh.epoch, fresh.position, fresh.step) == (1, 48, 11)
    assert (fresh.samples_seen, fresh.total_samples_seen) == (148, 348)
    assert fresh.history.to_list() == run.history.to_list()
    assert fresh.history.steps == run.history.steps
    assert fresh.last_step == run.history.steps[-1]
    assert fresh.metrics.count == run.metrics.count == 16
    assert fresh.metrics.sums.keys() == run.metrics.sums.keys()
    for key, value in run.metrics.sums.items():
        assert torch.equal(fresh.metrics.sums[key], value)
    assert fresh.max_physical_batch == 64 and fresh.seed == 5
    assert fresh.policy.state_dict() == run.policy.state_dict()
    assert fresh.policy.batch_size() == run.policy.batch_size()
    assert fresh.lr_control.state_dict() == run.lr_control.state_dict()
    assert fresh.lr_control.reference_batch == 16 and fresh.lr_control.base_lrs == [0.1]
    assert fresh.noise.state_dict() == run.noise.state_dict()
    assert fresh.noise.estimate() == run.noise.estimate()
    # the whole state again, compared key by key (metrics hold tensors, compared above)
    again, original = fresh.state_dict(), run.state_dict()
    assert again.keys() == original.keys()
    for key in original.keys() - {"metrics"}:
        assert again[key] == original[key], key


def test_the_loaded_history_is_not_shared_with_the_state():
    run = trained(make_run(Fixed(16)))
    state = copy.deepcopy(run.state_dict())
    fresh = make_run(Fixed(16))
    fresh.load_state_dict(state, CPU)
    fresh.history.append({"epoch": 1})
    fresh.history.steps.append({"step": 99})
    assert len(state["history"]["epochs"]) == 1 and len(state["history"]["steps"]) == 3


def test_a_run_without_a_noise_tracker_saves_none_and_loads():
    run = trained(make_run(Fixed(16), noise=True))
    run.noise = None
    state = run.state_dict()
    assert state["noise"] is None
    fresh = make_run(Fixed(16), noise=False)
    fresh.load_state_dict(state, CPU)
    assert fresh.noise is None and fresh.step == 11
    # a run with a tracker keeps its own when the checkpoint has none
    with_tracker = make_run(Fixed(16), noise=True)
    with_tracker.noise.update([4, 4], [1.0, 2.0], 0.5)
    kept = with_tracker.noise.state_dict()
    with_tracker.load_state_dict(state, CPU)
    assert with_tracker.noise.state_dict() == kept


def test_an_empty_history_loads_with_no_last_step():
    run = make_run(Fixed(16))
    fresh = trained(make_run(Fixed(16)))
    fresh.load_state_dict(run.state_dict(), CPU)
    assert fresh.last_step is None and len(fresh.history) == 0 and fresh.history.steps == []
    assert fresh.metrics.count == 0 and fresh.metrics.sums == {}


def test_progress_has_the_checkpoint_keys():
    run = trained(make_run(Fixed(16)))
    progress = run.progress()
    assert tuple(progress) == PROGRESS_KEYS  # what checkpointing/resume.py check_fits requires
    assert progress == {"epoch": 1, "position": 48, "step": 11, "samples_seen": 148,
                        "total_samples_seen": 348, "samples_per_epoch": 100}
    assert all(type(value) is int for value in progress.values())
    assert run.state_dict()["progress"] == progress


def test_clock_matches_the_counters():
    run = make_run(Fixed(16), samples_per_epoch=100, epochs=3)
    assert run.clock() == SampleClock(0, 100, 300)
    run.samples_seen, run.total_samples_seen = 148, 1000  # earlier fits do not count
    assert run.clock() == SampleClock(148, 100, 300)
    assert run.clock().samples_seen == run.samples_seen


def test_interrupt_reads_the_stop_request():
    run = make_run(Fixed(16))
    assert run.interrupt is None
    run.stop_request.received = "SIGTERM"
    assert run.interrupt == "SIGTERM"
    shared = StopRequest()  # the handlers' request, handed to the run
    run.stop_request = shared
    assert run.interrupt is None
    shared.received = "SIGINT"
    assert run.interrupt == "SIGINT"
    assert make_run(Fixed(16)).interrupt is None  # every run has its own request


def test_history_views():
    history = History([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5, "val_loss": 0.7}])
    assert len(history) == 2 and history[1]["val_loss"] == 0.7
    assert history.keys() == ["epoch", "loss", "val_loss"]
    assert history.history == {"epoch": [0, 1], "loss": [1.0, 0.5], "val_loss": [None, 0.7]}
    copied = history.to_list()
    copied[0]["loss"] = 9.0
    assert history[0]["loss"] == 1.0
