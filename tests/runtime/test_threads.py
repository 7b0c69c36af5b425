"""Speed-ups keep the results: fused optimizers, the fused seed-cnn in the library's loop, thread
settings driven by the machine's load; and the throughput benchmark's arithmetic."""
import importlib.util
import math
import os
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from batchtrain import Callback, Trainer, load_dataset
from batchtrain.runtime import threads as speed
from batchtrain import trainer as trainer_module
from batchtrain.data.iterator import epoch_order
from batchtrain.errors import ConfigError
from batchtrain.errors import NonFiniteError
from batchtrain.models import seed_cnn
from batchtrain.optim.optimizers import make_optimizer
from batchtrain.runtime.threads import (
    AdaptiveThreads,
    CpuLoad,
    PinnedThreads,
    thread_callbacks,
    threads_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


# -- fused optimizers ---------------------------------------------------------------------------

def run_optimizer(optimizer, params, steps=30):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator) * 1e-2
        optimizer.step()
    return params


@pytest.mark.parametrize("name, options, plain", [
    ("adam", {}, partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), eps=1e-7)),
    ("adamw", {}, partial(torch.optim.AdamW, lr=1e-3, eps=1e-7, weight_decay=0.004)),
    ("sgd", {"momentum": 0.9, "nesterov": True},
     partial(torch.optim.SGD, lr=0.01, momentum=0.9, nesterov=True)),
])
def test_fused_optimizers_make_the_same_updates_as_the_default_loop(name, options, plain):
    torch.manual_seed(0)
    model = seed_cnn((1, 28, 28), 10)
    reference = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(name, model, **options)
    assert optimizer.defaults["fused"] is True
    ours = run_optimizer(optimizer, list(model.parameters()))
    theirs = run_optimizer(plain(reference), reference)
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got.detach(), expected, rtol=1e-6, atol=1e-7)


def test_fused_is_off_where_the_user_chose_or_torch_has_none():
    model = torch.nn.Linear(3, 2)
    assert make_optimizer("adam", model, fused=False).defaults["fused"] is False
    assert not make_optimizer("adam", model, foreach=True).defaults.get("fused")
    assert not make_optimizer("rmsprop", model).defaults.get("fused")  # torch has no fused RMSprop


# -- the library's loop against the plain one -----------------------------------------------------

def images(n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    x[:, :, :6] = 0.0  # a flat band, as Fashion-MNIST's black background: pooling ties
    return x, torch.arange(n) % 10


def plain_loop(optimizer_factory, x, y, batch_size, epochs, seed):
    """The hand-written loop: the layers one by one, torch's default optimizer implementation."""
    torch.manual_seed(seed)  # as Trainer does before building a named model
    model = seed_cnn((1, 28, 28), 10, fused=False)
    optimizer = optimizer_factory(model.parameters())
    for epoch in range(epochs):
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("optimizer, plain, tolerance", [
    ("sgd", partial(torch.optim.SGD, lr=0.01), 1e-6),
    # Adam divides by sqrt(v): a float32 rounding difference in a near-zero gradient moves a
    # weight by up to a fraction of lr (1e-3), as channels_last or a thread count would.
    ("adam", partial(torch.optim.Adam, lr=1e-3, eps=1e-7), 2e-4),
])
def test_fit_with_every_speed_up_matches_the_plain_loop(optimizer, plain, tolerance):
    x, y = images()
    trainer = Trainer("seed-cnn", optimizer=optimizer, seed=3, device="cpu")
    trainer.fit(x, y, batch_size=16, epochs=2)
    assert trainer.model_.fused and trainer.optimizer_.defaults["fused"]
    reference = plain_loop(plain, x, y, 16, 2, seed=3)
    for ours, theirs in zip(trainer.model_.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=tolerance)


def test_accuracy_is_the_same_with_and_without_speed_ups(idx_dir):
    data = load_dataset("fashion-mnist", data_dir=idx_dir, download=False)
    accuracies = []
    for options in ({}, {"model_options": {"fused": False}, "optimizer_options": {"fused": False}}):
        trainer = Trainer("seed-cnn", seed=0, **options)
        trainer.fit(data.x_train, data.y_train, batch_size=32, epochs=3)
        accuracies.append(trainer.evaluate(data.x_test, data.y_test)["accuracy"])
    assert accuracies[0] == pytest.approx(accuracies[1], abs=1 / 60)  # at most one of 60 test images


# -- thread settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("others_busy, current, expected", [
    (0.0, 2, 2), (0.0, 1, 2),      # a free machine: every core
    (1.0, 2, 1), (3.0, 2, 1),      # one core or more taken: one thread fewer, at least one
    (0.7, 2, 1), (0.45, 2, 2),     # taken from 0.6 of a core on ...
    (0.45, 1, 1), (0.2, 1, 2),     # ... and free again below 0.3
])
def test_threads_follow_the_load_with_hysteresis(others_busy, current, expected):
    assert threads_for(others_busy, 2, current) == expected


def write_stat(path, busy_ticks, idle_ticks, cpus):
    lines = [f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0"]
    lines += [f"cpu{index} 0 0 0 0 0 0 0 0 0 0" for index in range(cpus)]
    path.write_text("\n".join(lines + ["intr 0"]) + "\n")


def test_cpu_load_subtracts_this_process_from_the_machine(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    clock = {"wall": 100.0, "own": 5.0}
    monkeypatch.setattr(speed.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(speed.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(speed, "usable_cores", lambda: 2)
    ticks = os.sysconf("SC_CLK_TCK")
    write_stat(stat, 0, 0, cpus=2)
    load = CpuLoad(str(stat))
    # Over 2 s the machine was busy 3 core-seconds, 1 of them ours: others kept 1 core busy.
    clock.update(wall=102.0, own=6.0)
    write_stat(stat, 3 * ticks, 1 * ticks, cpus=2)
    assert load.others_busy_cores() == pytest.approx(1.0)
    write_stat(stat, 3 * ticks, 1 * ticks, cpus=4)  # CPUs we may not use: no reading
    clock.update(wall=104.0)
    assert load.others_busy_cores() is None
    assert CpuLoad(str(tmp_path / "missing")).others_busy_cores() is None


class ScriptedLoad:
    readings: ClassVar[list] = []  # what others_busy_cores returns, one reading per call

    def others_busy_cores(self):
        return self.readings.pop(0)


def test_adaptive_threads_follow_the_load_and_restore_the_setting(monkeypatch):
    monkeypatch.setattr(speed, "CpuLoad", ScriptedLoad)
    ScriptedLoad.readings = [1.0, 1.0, None, 0.1]
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        governor = AdaptiveThreads(interval_s=0.0, first_check_s=0.0)
        governor.on_fit_begin(None, None)
        seen = []
        for _ in range(4):
            governor.on_batch_end(None, 8)
            seen.append(torch.get_num_threads())
        assert seen == [1, 1, 1, 2] and [threads for _, threads in governor.changes] == [1, 2]
        torch.set_num_threads(1)
        governor.on_fit_end(None, None)
        assert torch.get_num_threads() == 2  # the setting at fit start
    finally:
        torch.set_num_threads(previous)


def test_disabled_adaptive_threads_change_nothing(monkeypatch):
    monkeypatch.setattr(speed, "CpuLoad", ScriptedLoad)
    ScriptedLoad.readings = [5.0]
    previous = torch.get_num_threads()
    governor = AdaptiveThreads(interval_s=0.0, max_threads=2, first_check_s=0.0, enabled=False)
    governor.on_fit_begin(None, None)
    governor.on_batch_end(None, 8)
    assert torch.get_num_threads() == previous and governor.changes == []


def test_thread_settings_by_name():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert thread_callbacks(None, cpu) == [] and thread_callbacks("auto", cuda) == []
    assert isinstance(thread_callbacks("auto", cpu)[0], AdaptiveThreads)
    pinned = thread_callbacks(2, cpu)[0]
    assert isinstance(pinned, PinnedThreads)
    previous = torch.get_num_threads()
    pinned.on_fit_begin(None, None)
    assert torch.get_num_threads() == 2
    pinned.on_fit_end(None, None)
    assert torch.get_num_threads() == previous
    for bad in (0, "many", 1.5, True):
        with pytest.raises(ConfigError, match="threads must be 'auto' or an integer >= 1"):
            thread_callbacks(bad, cpu)


def test_thread_counts_beyond_a_few_per_core_are_refused_before_torch_sees_them(monkeypatch):
    # 100000 threads crashed the process inside OpenMP; the bound is 4 per core of the machine
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cpu = torch.device("cpu")
    assert isinstance(thread_callbacks(8, cpu)[0], PinnedThreads)
    for bad in (9, 100000):
        with pytest.raises(ConfigError, match=f"threads must be at most 8 .*got {bad}; use auto"):
            thread_callbacks(bad, cpu)


@pytest.fixture
def two_threads():
    """torch at 2 threads for the test (the module runs on 1), restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


class ThreadsSeen(Callback):
    """Records torch's thread count after every step (after the trainer's thread callbacks)."""

    def on_fit_begin(self, trainer, info):
        self.seen = []

    def on_batch_end(self, trainer, batch_size):
        self.seen.append(torch.get_num_threads())


def small_problem(n=24):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=generator), torch.arange(n) % 2


def test_trainer_passes_its_threads_option_to_the_thread_callbacks(monkeypatch, two_threads):
    calls = []

    def spy(threads, device):
        calls.append((threads, device.type))
        return thread_callbacks(threads, device)

    monkeypatch.setattr(trainer_module, "thread_callbacks", spy)
    x, y = small_problem()
    probe = ThreadsSeen()
    Trainer("mlp", seed=0, device="cpu", threads=1).fit(x, y, batch_size=8, epochs=1,
                                                       callbacks=[probe])
    assert calls == [(1, "cpu")] and probe.seen == [1, 1, 1]
    assert torch.get_num_threads() == 2  # restored at the end of fit
    Trainer("mlp", seed=0, device="cpu").fit(x, y, batch_size=8, epochs=1, callbacks=[probe])
    assert calls[-1] == (None, "cpu") and probe.seen == [2, 2, 2]  # torch's setting kept


def test_threads_are_restored_when_fit_raises(two_threads):
    class PoisonAfterFirstStep(Callback):
        def on_batch_end(self, trainer, batch_size):
            trainer.model_[0].weight.data.fill_(math.nan)

    x, y = small_problem()
    trainer = Trainer(torch.nn.Sequential(torch.nn.Linear(4, 2)), seed=0, device="cpu", threads=1,
                      on_nonfinite="raise")
    with pytest.raises(NonFiniteError, match="at step 2"):
        trainer.fit(x, y, batch_size=8, epochs=1, callbacks=[PoisonAfterFirstStep()])
    assert torch.get_num_threads() == 2  # though on_fit_end never ran


def test_auto_threads_adapt_to_the_load_during_fit(monkeypatch, two_threads):
    """threads="auto" with another process scripted to keep one core busy: one thread fewer from
    the first reading on (a fake clock makes every step a reading), two again after fit."""
    clock = iter(range(10**6))
    monkeypatch.setattr(speed.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(speed, "CpuLoad", ScriptedLoad)
    ScriptedLoad.readings = [1.0] * 3
    x, y = small_problem()
    probe = ThreadsSeen()
    Trainer("mlp", seed=0, device="cpu", threads="auto").fit(x, y, batch_size=8, epochs=1,
                                                            callbacks=[probe])
    assert probe.seen == [1, 1, 1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("threads", [0, -1, 1.5, "many", True])
def test_bad_threads_are_refused_before_training(threads):
    x, y = small_problem()
    with pytest.raises(ConfigError, match="threads must be 'auto' or an integer >= 1"):
        Trainer("mlp", device="cpu", threads=threads).fit(x, y, epochs=1)


# -- the benchmark ------------------------------------------------------------------------------

def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_counts_the_issue_s_flops_and_a_peak_from_the_clock():
    bench = load_benchmark()
    # conv1 26*26*32*9 + conv2 11*11*64*288 + dense 1600*64 + 64*10 multiply-adds, x2 x3
    assert bench.training_flops_per_sample(bench.plain_model(), (1, 28, 28)) == 15_168_000
    peak, text = bench.cpu_peak(2)
    assert text.startswith("2 cores x") and "FLOP/cycle" in text and (peak > 0 or math.isnan(peak))


def test_benchmark_runs_end_to_end(capsys):
    load_benchmark().main(["--batches", "16", "--samples", "64", "--repeats", "1",
                           "--overhead-samples", "32", "--overhead-repeats", "2",
                           "--overhead-step-epochs", "1"])
    out = capsys.readouterr().out
    assert "random images" in out  # no dataset in the test environment
    assert "   16 " in out and "overhead at batch 8 with speed-ups off" in out
    assert "2 interleaved repeats of 32 samples" in out and "4 alternating steps" in out


def test_benchmark_overhead_pairs_repeats_and_also_compares_medians():
    figures = load_benchmark().overhead_figures([1.0, 2.0, 3.0], [3.0, 2.2, 3.3])
    # per-repeat extra time: +200 %, +10 %, +10 %; the medians: 2.0 and 3.0
    assert figures["paired"] == pytest.approx(0.1) and figures["of_medians"] == pytest.approx(0.5)
    assert figures["low"] <= figures["paired"] <= figures["high"]


def test_step_race_times_every_batchtrain_step_and_a_plain_step_after_each():
    bench = load_benchmark()
    x, y = images(40)
    contestants = bench.Contestants(8, x, y, speedups=False, adaptive_threads=False)
    plain_s, ours_s = contestants.step_race(epochs=2)
    assert len(plain_s) == len(ours_s) == 10 and min(plain_s + ours_s) > 0
    assert contestants.trainer.step_ == 4 + 10  # after the 4-step warm-up fit of __init__
