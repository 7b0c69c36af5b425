"""Precision modes (runtime/precision.py): names, "auto", autocast contexts and scalers."""
import pytest
import torch

from batchtrain.errors import ConfigError
from batchtrain.runtime import precision as precision_module
from batchtrain.runtime.precision import canonical, cpu_flags, native_bf16, resolve_precision

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
