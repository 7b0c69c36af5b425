"""Precision modes (runtime/precision.py): names, "auto", autocast contexts and scalers."""
import math

import pytest
import torch

from batchtrain import Checkpoint, Trainer
from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.memory import memory_ceiling
from batchtrain.checkpointing.files import CheckpointError
from batchtrain.cli.config import FitConfig
from batchtrain.cli.runner import make_trainer
from batchtrain.errors import ConfigError
from batchtrain.runtime import precision as precision_module
from batchtrain.runtime.precision import (Precision, canonical, cpu_flags, native_bf16,
                                          resolve_precision)
from batchtrain.training.step import unscaled

CPU = torch.device("cpu")


@pytest.mark.parametrize("given, name", [
    (32, "32"), ("32", "32"), ("32-true", "32"), ("bf16-mixed", "bf16-mixed"), ("BF16", "bf16-mixed"),
    ("16-mixed", "16-mixed"), (" 16 ", "16-mixed"), ("auto", "auto"),
])
def test_names_and_lightning_aliases(given, name):
    assert canonical(given) == name


@pytest.mark.parametrize("bad", ["64", "fp8", True, 16.0, None, ["32"], ""])
def test_bad_precisions_list_the_choices(bad):
    with pytest.raises(ConfigError, match="precision must be one of 32, bf16-mixed, 16-mixed, auto"):
        canonical(bad)


def test_auto_is_bf16_only_with_native_bf16_units(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert resolve_precision("auto", CPU).name == "32"
    assert not native_bf16(CPU)
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(precision_module, "cpu_flags", lambda flag=flag: frozenset({"avx2", flag}))
        assert native_bf16(CPU)
        assert resolve_precision("auto", CPU) == resolve_precision("bf16-mixed", CPU)


def test_resolved_dtypes_and_scaler():
    full, bf16, fp16 = (resolve_precision(name, CPU) for name in ("32", "bf16-mixed", "16-mixed"))
    assert (full.dtype, bf16.dtype, fp16.dtype) == (None, torch.bfloat16, torch.float16)
    assert full.scaler() is None and bf16.scaler() is None
    scaler = fp16.scaler()
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert fp16.scales_loss and not bf16.scales_loss


def test_autocast_runs_the_forward_in_the_low_precision_and_32_leaves_it_alone():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    for name, dtype in [("32", torch.float32), ("bf16-mixed", torch.bfloat16),
                        ("16-mixed", torch.float16)]:
        with resolve_precision(name, CPU).autocast():
            assert layer(x).dtype == dtype, name
    assert layer.weight.dtype == torch.float32  # weights are never cast


def test_mixed_precision_is_refused_on_other_devices():
    with pytest.raises(ConfigError, match="needs a CPU or CUDA device"):
        resolve_precision("bf16-mixed", torch.device("meta"))
    assert resolve_precision("32", torch.device("meta")).dtype is None


def test_cpu_flags_of_this_machine_or_none(monkeypatch, tmp_path):
    cpu_flags.cache_clear()
    monkeypatch.setattr(precision_module, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n")
    assert cpu_flags() == frozenset({"fpu", "sse2", "avx512_bf16"})
    cpu_flags.cache_clear()
    monkeypatch.setattr(precision_module, "CPUINFO", tmp_path / "missing")
    assert cpu_flags() == frozenset()
    cpu_flags.cache_clear()  # the real flags for later tests


# -- training in each precision ------------------------------------------------------------------

def _data(samples=240, features=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def _model(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def test_bf16_mixed_runs_the_forward_in_bfloat16_and_keeps_float32_state():
    x, y = _data()
    model = _model()
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer = Trainer(model, optimizer="adam", seed=0, precision="bf16-mixed", device="cpu")
    trainer.prepare(x, y)  # set-up probes the model's outputs in float32
    seen.clear()
    history = trainer.fit(x, y, batch_size=32, epochs=2)
    assert set(seen) == {torch.bfloat16}  # the memory estimate and every step
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    state = trainer.optimizer_.state_dict()["state"]
    assert state and all(moment.dtype == torch.float32 for entry in state.values()
                         for key, moment in entry.items() if key != "step")
    full = Trainer(_model(), optimizer="adam", seed=0, device="cpu").fit(x, y, batch_size=32, epochs=2)
    assert history[-1]["loss"] == pytest.approx(full[-1]["loss"], rel=0.05)
    assert history[-1]["loss"] != full[-1]["loss"]  # it did compute in bfloat16


def test_bf16_mixed_accumulation_matches_one_big_micro_batch_closely():
    x, y = _data()
    runs = []
    for cap in (None, 16):  # batch 64 in one piece, or accumulated over four micro-batches
        trainer = Trainer(_model(), optimizer="sgd", lr=0.1, seed=0, precision="bf16-mixed",
                          max_physical_batch=cap or 64, device="cpu")
        history = trainer.fit(x, y, batch_size=64, epochs=2)
        runs.append((trainer, history))
    (whole, _), (accumulated, history) = runs
    assert {step["accumulation_steps"] for step in history.steps if step["samples"] == 64} == {4}
    for ours, theirs in zip(accumulated.model_.parameters(), whole.model_.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-2)


def test_16_mixed_overflow_is_skipped_and_lowers_the_scale_without_stopping(monkeypatch):
    huge = 2.0 ** 24  # float16 (at most 65504) overflows at this loss scale; halved per overflow
    monkeypatch.setattr(Precision, "scaler", lambda self: torch.amp.GradScaler(
        "cpu", init_scale=huge) if self.scales_loss else None)
    x, y = _data()
    trainer = Trainer(_model(), optimizer="sgd", lr=0.1, seed=0, precision="16-mixed", device="cpu")
    history = trainer.fit(x, y, batch_size=32, epochs=3)
    skipped = [step for step in history.steps if step.get("skipped")]
    assert trainer.stop_reason_ is None and len(history) == 3
    assert 1 <= len(skipped) < len(history.steps)  # overflows first, then trains
    assert trainer.state_.scaler.get_scale() < huge
    assert history[-1]["loss"] < history[0]["loss"]


class NaNAt(torch.nn.Module):
    """_model() whose `at`-th training forward pass returns NaN outputs."""

    def __init__(self, at):
        super().__init__()
        self.inner, self.at, self.calls = _model(), at, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                return out * float("nan")
        return out


def test_16_mixed_non_finite_loss_is_still_a_stop():
    x, y = _data()
    trainer = Trainer(NaNAt(2), optimizer="sgd", lr=0.1, seed=0, precision="16-mixed",
                      device="cpu", max_physical_batch=64)
    trainer.prepare(x, y)
    trainer.model_.calls = 0
    with pytest.warns(UserWarning, match="non-finite loss"):
        trainer.fit(x, y, batch_size=32, epochs=1)
    assert trainer.stop_reason_ and "step 2" in trainer.stop_reason_


def test_noise_statistics_are_unscaled():
    statistics = {"micro_sizes": [4, 4], "micro_sq_norms": [64.0, 256.0], "batch_sq_norm": 16.0}
    assert unscaled(statistics, 4.0) == {"micro_sizes": [4, 4], "micro_sq_norms": [4.0, 16.0],
                                         "batch_sq_norm": 1.0}
    assert unscaled(statistics, 1.0) is statistics and unscaled(None, 8.0) is None


def test_16_mixed_noise_scale_agrees_with_float32():
    x, y = _data(480)
    estimates = []
    for precision in ("32", "16-mixed"):
        trainer = Trainer(_model(), optimizer="sgd", lr=0.05, seed=0, precision=precision,
                          device="cpu")
        policy = Adaptive(rule="noise-scale")
        policy.stats_every = 1  # both precisions measure the same steps (16-mixed may skip some)
        trainer.fit(x, y, batch_size=policy, epochs=1)
        estimates.append(trainer.noise_.estimate().grad_sq)
    assert estimates[1] == pytest.approx(estimates[0], rel=0.1)  # not scaled by 65536^2


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_resume_within_a_precision_is_exact(tmp_path, precision):
    x, y = _data()

    def trainer():
        return Trainer(_model(), optimizer="adam", seed=3, precision=precision,
                       max_physical_batch=16, device="cpu")

    reference = trainer()
    reference.fit(x, y, batch_size=32, epochs=2)
    trainer().fit(x, y, batch_size=32, epochs=1, callbacks=[Checkpoint(tmp_path, every=96)])
    resumed = trainer()
    resumed.fit(x, y, batch_size=32, epochs=2, resume=tmp_path)
    for ours, theirs in zip(resumed.model_.parameters(), reference.model_.parameters()):
        assert torch.equal(ours, theirs)
    if precision == "16-mixed":
        assert resumed.state_.scaler.state_dict() == reference.state_.scaler.state_dict()


def test_resume_in_another_precision_is_refused(tmp_path):
    x, y = _data()
    Trainer(_model(), seed=3, precision="bf16-mixed", device="cpu").fit(
        x, y, batch_size=32, epochs=1, callbacks=[Checkpoint(tmp_path)])
    with pytest.raises(CheckpointError, match="trained in precision bf16-mixed, this run uses 32"):
        Trainer(_model(), seed=3, device="cpu").fit(x, y, batch_size=32, epochs=2, resume=tmp_path)


def test_the_memory_ceiling_counts_bfloat16_activations_smaller():
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    sample = torch.randn(16, 256)
    full = memory_ceiling(model, sample, "cpu", budget_bytes=1 << 30)
    with resolve_precision("bf16-mixed", CPU).autocast():
        half = memory_ceiling(model, sample, "cpu", budget_bytes=1 << 30)
    assert half.per_sample_bytes < 0.8 * full.per_sample_bytes
    assert half.max_batch > full.max_batch


def test_the_cli_option_reaches_the_trainer():
    trainer = make_trainer(FitConfig(precision="bf16-mixed").validate())
    assert trainer.precision == "bf16-mixed"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_on_cuda(precision):
    x, y = _data()
    trainer = Trainer(_model(), optimizer="adam", seed=0, precision=precision, device="cuda")
    history = trainer.fit(x, y, batch_size=32, epochs=2)
    assert trainer.stop_reason_ is None and history[-1]["loss"] < history[0]["loss"]
    assert (trainer.state_.scaler is not None) == (precision == "16-mixed")
    assert all(parameter.dtype == torch.float32 for parameter in trainer.model_.parameters())


@pytest.mark.gpu
@needs_cuda
def test_auto_is_bf16_on_a_cuda_device_with_bf16_units():
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "32"
    assert resolve_precision("auto", torch.device("cuda")).name == expected


def test_the_reference_cnn_trains_in_each_precision():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (96,), generator=generator)
    for precision in ("bf16-mixed", "16-mixed"):
        trainer = Trainer("seed-cnn", seed=0, precision=precision, max_physical_batch=32,
                          device="cpu")
        history = trainer.fit(x, y, batch_size=32, epochs=2)
        assert trainer.stop_reason_ is None and len(history) == 2, precision
        assert history[-1]["loss"] < history[0]["loss"], precision  # it learns (the plain layers)
        assert math.isfinite(trainer.evaluate(x, y)["loss"]), precision
