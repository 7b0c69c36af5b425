"""The learned state of a run: its History, and the RunState that checkpoints capture whole.

A RunState is made when fit() begins (training.run.begin_run) and is the only place a run's
counters, records, metric sums, position, policy, learning-rate control and noise tracker live.
The trainer owns it and alone writes it; callbacks read it (trainer.state_); checkpoints save and
load it through state_dict / load_state_dict. Counts: samples_seen is this run's (what the step
records say), total_samples_seen every fit's (trainer.samples_seen_).
"""
import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchtrain.batching.base import StepStats
from batchtrain.optim.schedules import SampleClock
from batchtrain.runtime.signals import StopRequest
from batchtrain.stats.tracker import noise_estimate


class History:
    """Per-epoch records (epoch, loss, metrics, val_*, batch_size, lr, time_s, samples_per_s),
    in order, and per-step records in `.steps`.

    Iterate it or index it for the dicts; `.history` gives Keras' dict of lists.
    """

    def __init__(self, epochs: list[dict] | None = None, steps: list[dict] | None = None):
        self.epochs: list[dict] = list(epochs or [])
        # One record per optimizer step: step, samples_seen, batch_size (the logical batch asked
        # for), samples (in this step: fewer at an epoch's end), physical_batch,
        # accumulation_steps, lr (host values only: recording them never waits for the device).
        self.steps: list[dict] = list(steps or [])

    def append(self, logs: dict) -> None:
        self.epochs.append(dict(logs))

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.epochs)

    def __getitem__(self, index: int) -> dict:
        return self.epochs[index]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"

    def keys(self) -> list[str]:
        """Every key of any epoch, in first-seen order."""
        return list(dict.fromkeys(key for logs in self.epochs for key in logs))

    def to_list(self) -> list[dict]:
        return [dict(logs) for logs in self.epochs]

    @property
    def history(self) -> dict[str, list]:
        """Keras' form: {"loss": [...], "val_loss": [...], ...}."""
        return {key: [logs.get(key) for logs in self.epochs] for key in self.keys()}

    def to_csv(self, path: str | Path) -> None:
        """Write one row per epoch, header from keys()."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.keys())
            writer.writeheader()
            writer.writerows(self.epochs)


@dataclass
class RunState:
    """One fit()'s learned state; counts in samples unless named otherwise.

    step: optimizer steps over every fit() of the trainer; total_samples_seen: samples trained
    on over every fit(); samples_seen: samples trained on in this run (what step records and
    checkpoint names count). epoch, position: the epoch in progress (0-based) and the samples of
    its order already delivered over all ranks. samples_per_epoch, total_samples: this run's
    epoch length and epochs x that. max_physical_batch: the micro-batch cap (memory ceiling or
    the user's). seed: the run's seed (initialisation and shuffle order).
    policy, lr_control, metrics, noise: the batch-size policy, the learning-rate control
    (coupling x schedule), the epoch's running metric sums, the gradient-noise tracker (None
    unless the policy measures). last_step: the newest step record; last_noise: its noise
    estimate (empty when none). stop_reason: why training stopped early (a non-finite step);
    precision: the run's precision (runtime/precision.py); scaler: its GradScaler, if any.
    calibration: what the policy's start-up calibration measured (training/calibrate.py), or None.
    brancher: what runs the branches the policy asks for during training (training/branch.py), or
    None (under DDP).
    stop_request: where the signal handlers record a SIGINT or SIGTERM (read it as `interrupt`).
    callbacks: the fit's CallbackList, whose states checkpoints save (callbacks/base.py);
    callback_states: the states a resumed run's checkpoint holds for them.
    """

    policy: Any
    lr_control: Any
    metrics: Any
    noise: Any
    max_physical_batch: int
    seed: int
    samples_per_epoch: int
    total_samples: int
    step: int = 0
    total_samples_seen: int = 0
    samples_seen: int = 0
    epoch: int = 0
    position: int = 0
    history: History = field(default_factory=History)
    last_step: dict | None = None
    last_noise: dict = field(default_factory=dict)
    step_time_s: float = 0.0
    stop_reason: str | None = None
    precision: str = "32"
    scaler: Any = None  # float16's GradScaler ("16-mixed"): its scale is learned state
    calibration: Any = None  # not state: a resumed run keeps the policy's own record of it
    brancher: Any = None  # not state: runs the branches the policy asks for (training/branch.py)
    stop_request: StopRequest = field(default_factory=StopRequest)  # runtime/signals.py
    callbacks: Any = None
    callback_states: dict = field(default_factory=dict)

    @property
    def interrupt(self) -> str | None:
        """The signal ("SIGINT", "SIGTERM") that asked training to stop after this step, or None."""
        return self.stop_request.received

    def advance(self, requested: int, samples: int, physical_batch: int, accumulation_steps: int,
                lr: float, skipped: bool = False) -> dict:
        """Count one optimizer step of `samples` samples (over all ranks) and return its record:
        the step, samples seen in the run, the logical batch asked for, the samples of this step
        (fewer at an epoch's end), the physical batch, the accumulation steps, the lr, and the
        noise scale when measured (host values only: recording never waits for the device)."""
        self.step += 1
        self.total_samples_seen += samples
        self.samples_seen += samples
        record = {"step": self.step, "samples_seen": self.samples_seen, "batch_size": requested,
                  "samples": samples, "physical_batch": physical_batch,
                  "accumulation_steps": accumulation_steps, "lr": lr}
        if skipped:
            record["skipped"] = True
        self.last_noise = noise_estimate(self.noise)  # one per step, for the record and the policy
        if self.last_noise:
            record["noise_scale"] = self.last_noise["noise_scale"]
        self.last_step = record
        return record

    def observe(self, record: dict, walk=None) -> None:
        """Tell the policy about the step of `record`, and run the branches it then asks for
        (walk: the batch iterator walking the epoch, whose next samples they train on: a kept
        branch's steps and samples count as the run's)."""
        self.policy.observe(self.step_stats(record))
        if self.brancher is not None:
            branches = self.brancher(self.policy, self.seed + self.step, walk)
            if branches is not None and branches.from_run and branches.kept is not None:
                self.count_branch(branches.samples, branches.kept_steps)  # the walk skipped them

    def count_branch(self, samples: int, steps: int) -> None:
        """A kept branch trained the run on its epoch's next `samples` in `steps` steps (training/
        branch.py): counted as the run's own, and the epoch's position moves past them."""
        self.step += steps
        self.position += samples
        self.samples_seen += samples
        self.total_samples_seen += samples

    def step_stats(self, record: dict) -> StepStats:
        """What the policy is told after the step of `record` (batching/base.py StepStats)."""
        return StepStats(self.samples_seen, self.epoch, self.samples_per_epoch, record["samples"],
                         gradient=self.last_noise, physical_batch=record["physical_batch"],
                         time_s=self.step_time_s)

    def epoch_record(self, metrics: dict, elapsed_s: float, samples: int) -> dict:
        """The History record of the epoch in progress: its number (1-based), loss and metrics,
        the last step's batch size and lr, its time and speed over its `samples` samples."""
        last = self.history.steps[-1] if self.history.steps else {"batch_size": 0, "lr": 0.0}
        return {"epoch": self.epoch + 1, **metrics, "batch_size": last["batch_size"],
                "lr": last["lr"], "time_s": elapsed_s, "samples_per_s": samples / elapsed_s}

    def clock(self) -> SampleClock:
        """Where the run stands, in samples, for sample-keyed schedules."""
        return SampleClock(self.samples_seen, self.samples_per_epoch, self.total_samples)

    def progress(self) -> dict:
        """The counters, as checkpoints record them."""
        return {"epoch": self.epoch, "position": self.position, "step": self.step,
                "samples_seen": self.samples_seen, "total_samples_seen": self.total_samples_seen,
                "samples_per_epoch": self.samples_per_epoch}

    def attach_callbacks(self, callbacks) -> bool:
        """Keep the fit's callbacks (checkpoints save their states) and, in a resumed run, load the
        states its checkpoint holds into them (after on_fit_begin has reset them). Returns whether
        one of them had stopped the run (an early stop), so it stops where the uninterrupted one
        did."""
        self.callbacks = callbacks
        return callbacks.load_state_dict(self.callback_states)

    def state_dict(self) -> dict:
        """Everything of the run that influences what comes next (checkpointing/resume.py adds the
        model, the optimizer and the random generators)."""
        return {
            "lr_control": self.lr_control.state_dict(),
            "policy": self.policy.state_dict(),
            "progress": self.progress(),
            "metrics": {"sums": dict(self.metrics.sums), "count": self.metrics.count},
            "history": {"epochs": self.history.to_list(), "steps": list(self.history.steps)},
            "max_physical_batch": self.max_physical_batch,
            "seed": self.seed,
            "noise": self.noise.state_dict() if self.noise is not None else None,
            "precision": self.precision,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "callbacks": self.callbacks.state_dict() if self.callbacks is not None else {},
        }

    def load_state_dict(self, state: dict, device) -> None:
        """Restore what state_dict captured; ValueError for a run in another precision (its
        numbers would differ: resume is exact only within one)."""
        saved = state.get("precision", "32")  # checkpoints before precision modes were fp32
        if saved != self.precision:
            raise ValueError(f"it was trained in precision {saved}, this run uses {self.precision}; "
                             f"resume with precision {saved}")
        self.lr_control.load_state_dict(state["lr_control"])
        self.policy.load_state_dict(state["policy"])
        progress = state["progress"]
        self.epoch, self.position = progress["epoch"], progress["position"]
        self.step, self.samples_seen = progress["step"], progress["samples_seen"]
        self.total_samples_seen = progress["total_samples_seen"]
        self.metrics.sums = {key: value.to(device) for key, value in state["metrics"]["sums"].items()}
        self.metrics.count = state["metrics"]["count"]
        self.history = History(state["history"]["epochs"], state["history"]["steps"])
        self.last_step = self.history.steps[-1] if self.history.steps else None
        self.max_physical_batch = state["max_physical_batch"]
        self.seed = state["seed"]
        if self.noise is not None and state["noise"] is not None:
            self.noise.load_state_dict(state["noise"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.callback_states = dict(state.get("callbacks") or {})  # older checkpoints: none
