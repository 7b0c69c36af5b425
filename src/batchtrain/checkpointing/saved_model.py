"""Exporting trained models without pickle: safetensors weights + a JSON description.

model.safetensors holds the state dict; model.json the model spec (to rebuild the module), the
task, the input shape and the metric names. Neither format can execute code when loaded, and both
are read as untrusted data: model.json is bounded and checked field by field, an import path in it
is followed only when trusted (models/spec.py), and the weights must be finite and fit the model.
"""
import json
import math
from pathlib import Path
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from batchtrain.errors import BatchTrainError, ConfigError
from batchtrain.checkpointing.fileio import UnreadableFile, atomic_write, read_small_file
from batchtrain.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from batchtrain.models.spec import ModelSpec, check_trusted
from batchtrain.models.standardize import placeholder_standardized, standardization
from batchtrain.tasks.kinds import LOSS_TASKS, TASK_KINDS, Task

WEIGHTS_FILE = "model.safetensors"
DESCRIPTION_FILE = "model.json"
FORMAT_VERSION = 1
MAX_DESCRIPTION_BYTES = 1 << 20  # model.json is a few hundred bytes
MAX_OUTPUTS = 1 << 20  # output units: a classifier of a million classes is the most we rebuild
MAX_INPUT_ELEMENTS = 1 << 28  # values per sample (a 16k x 16k image)


@dataclass(frozen=True)
class SavedModel:
    """A trained model and what describes it: the files of a finished run, in memory.

    spec rebuilds the module (None for a user's nn.Module); metrics: the metric names."""

    model: nn.Module
    spec: ModelSpec | None
    task: Task
    input_shape: tuple[int, ...]
    metrics: tuple[str, ...]


def save_model(saved: SavedModel, run_dir: str | Path) -> None:
    """Write run_dir/model.safetensors and run_dir/model.json."""
    run_dir = Path(run_dir)
    description = {
        "format": FORMAT_VERSION,
        "model": saved.spec.to_dict() if saved.spec is not None else None,
        "task": saved.task.to_dict(),
        "input_shape": list(saved.input_shape),
        "metrics": list(saved.metrics),
        "standardized": standardization(saved.model),
    }
    state = {name: tensor.detach().cpu().contiguous() for name, tensor
             in saved.model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS_FILE, lambda path: save_file(state, str(path)))
    atomic_write(run_dir / DESCRIPTION_FILE,
                 lambda path: path.write_text(json.dumps(description, indent=2) + "\n"))


def load_description(run_dir: str | Path) -> dict:
    """The parsed and validated model.json of a run directory (read as untrusted data: bounded,
    every field checked before use), with a clear error if it is missing or malformed."""
    path = Path(run_dir) / DESCRIPTION_FILE
    text = read_bounded_text(path, MAX_DESCRIPTION_BYTES, missing=(
        f"{path} not found: {run_dir} is not a finished batchtrain run (run `batchtrain fit "
        "--output DIR` first)"))
    try:
        description = json.loads(text)
    except json.JSONDecodeError as error:
        raise BatchTrainError(f"cannot read {path}: {error}; the run directory is damaged") from None
    except RecursionError:
        raise BatchTrainError(f"cannot read {path}: it is nested too deeply; the run directory "
                              "is damaged") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT_VERSION:
        raise BatchTrainError(f"{path} is not a batchtrain model description (format "
                              f"{FORMAT_VERSION}); it may come from another version")
    return check_description(description, path)


def check_description(description: dict, path: Path) -> dict:
    """Raise BatchTrainError naming the first field of model.json that is missing or wrong."""
    def require(condition: bool, field: str, expected: str) -> None:
        if not condition:
            shown = repr(description.get(field))[:100]
            raise BatchTrainError(f"{path}: field {field!r} must be {expected}, got {shown}; the "
                                  "run directory is damaged or was edited: retrain the model")
    spec = description.get("model")
    require(spec is None or (isinstance(spec, dict) and _is_text(spec.get("name"))
                             and isinstance(spec.get("options", {}), dict)
                             and all(isinstance(key, str) and _is_plain(value)
                                     for key, value in spec.get("options", {}).items())),
            "model", "null or {\"name\": text, \"options\": a mapping of plain values}")
    task = description.get("task")
    require(isinstance(task, dict) and task.get("kind") in TASK_KINDS
            and LOSS_TASKS.get(task.get("loss")) == task.get("kind")
            and _is_int(task.get("n_outputs")) and 1 <= task["n_outputs"] <= MAX_OUTPUTS
            and (task["kind"] != "binary" or task["n_outputs"] == 1),
            "task", f"{{\"kind\": one of {list(TASK_KINDS)}, \"n_outputs\": 1..{MAX_OUTPUTS}, "
                    "\"loss\": a loss of that kind}")
    shape = description.get("input_shape")
    require(isinstance(shape, list) and 1 <= len(shape) <= 8
            and all(_is_int(size) and size >= 1 for size in shape)
            and math.prod(shape) <= MAX_INPUT_ELEMENTS,
            "input_shape", f"a list of 1 to 8 positive integers (at most {MAX_INPUT_ELEMENTS} "
                           "values per sample)")
    valid_metrics = REGRESSION_METRICS if task["kind"] == "regression" else CLASSIFICATION_METRICS
    metrics = description.get("metrics")
    require(isinstance(metrics, list) and all(name in valid_metrics for name in metrics),
            "metrics", f"a list of metric names from {list(valid_metrics)}")
    standardized = description.get("standardized")
    require(standardized is None or (isinstance(standardized, dict)
                                     and isinstance(standardized.get("targets"), bool)),
            "standardized", "null or {\"targets\": true or false}")
    return description


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 300


def _is_plain(value: object, depth: int = 0) -> bool:
    """Numbers, text, booleans, null, and short lists of them: what a model option can be."""
    if value is None or isinstance(value, (bool, int, str)):
        return not isinstance(value, str) or len(value) <= 300
    if isinstance(value, float):
        return math.isfinite(value)
    return (isinstance(value, list) and depth < 2 and len(value) <= 64
            and all(_is_plain(item, depth + 1) for item in value))


def read_bounded_text(path: Path, max_bytes: int, missing: str) -> str:
    """A small regular file's UTF-8 text (fileio.read_small_file); `missing`: the message when
    it does not exist."""
    try:
        data = read_small_file(path, max_bytes)
    except FileNotFoundError:
        raise BatchTrainError(missing) from None
    except UnreadableFile as refused:
        raise BatchTrainError(f"{path} {refused}; the run directory is damaged") from None
    except OSError as error:
        raise BatchTrainError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BatchTrainError(f"{path} is not UTF-8 text; the run directory is damaged") from None


def first_shape_difference(expected: dict, found: dict) -> str | None:
    """The first tensor name (sorted) that one of two {name: shape} maps lacks or shapes
    differently, cut to 100 characters; None when they agree."""
    different = sorted(set(expected) ^ set(found)) or sorted(
        name for name in expected if expected[name] != found[name])
    return different[0][:100] if different else None


def load_model_state(run_dir: str | Path, model: nn.Module) -> nn.Module:
    """Load run_dir/model.safetensors into `model` (strict: every tensor must match, and be finite)."""
    path = Path(run_dir) / WEIGHTS_FILE
    state = _read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise BatchTrainError(f"the weights in {path} do not fit the model: {first_line}"[:400]) from None
    return model


def _read_weights(path: Path) -> dict:
    _check_weights_file(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise BatchTrainError(f"cannot read weights {path}: {str(error)[:200]}; the file is "
                              "damaged") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BatchTrainError(f"the weights in {path} hold NaN or infinite values ({name[:100]}); "
                                  "the model is unusable: retrain it, or resume its run from a "
                                  "checkpoint")
    return state


def _check_weights_file(path: Path) -> None:
    if not path.exists():
        raise BatchTrainError(f"{path} not found: the run has no saved weights")
    if not path.is_file():
        raise BatchTrainError(f"{path} is not a regular file; the run directory is damaged")


def _weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the safetensors header alone (no tensor data is read)."""
    _check_weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise BatchTrainError(f"cannot read weights {path}: {str(error)[:200]}; the file is "
                              "damaged") from None


def _build_fitting(spec: ModelSpec, input_shape: tuple, description: dict, path: Path) -> nn.Module:
    """Build the model, after checking on the meta device (no memory) that its tensors have the
    shapes of the saved weights: a damaged model.json cannot make us allocate a huge model."""
    task = Task(**description["task"])
    try:
        with torch.device("meta"):
            skeleton = _with_standardization(spec.build(input_shape, task.n_outputs), description)
    except ConfigError as error:  # a model or options from model.json that cannot build
        raise ConfigError(f"{path.with_name(DESCRIPTION_FILE)}: {error}") from None
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    found = _weight_shapes(path)
    different = first_shape_difference(expected, found)
    if different is not None:
        raise BatchTrainError(f"the weights in {path} do not fit the model {spec.name!r} described "
                              f"by model.json (first difference: {different}); the run "
                              "directory is damaged or mixes files of two runs")
    return _with_standardization(spec.build(input_shape, task.n_outputs), description)


def _with_standardization(model: nn.Module, description: dict) -> nn.Module:
    if not description.get("standardized"):
        return model
    outputs = description["task"]["n_outputs"] if description["standardized"]["targets"] else None
    return placeholder_standardized(model, tuple(description["input_shape"]), outputs)


def load_saved_model(run_dir: str | Path, model: nn.Module | str | ModelSpec | None,
                     device: torch.device, trust_model_code: bool = False) -> SavedModel:
    """The model saved in a run directory, on `device`, with its description.

    model: the module to load the weights into, or the model factory named by the user (a name or
    ModelSpec: rebuilt with model.json's options); None rebuilds what model.json names, an import
    path only with trust_model_code (models/spec.py says why).
    """
    run_dir = Path(run_dir)
    description = load_description(run_dir)
    input_shape = tuple(description["input_shape"])
    spec = None
    if not isinstance(model, nn.Module):
        spec = _spec_to_build(model, description, run_dir, trust_model_code)
        model = _build_fitting(spec, input_shape, description, run_dir / WEIGHTS_FILE)
    else:
        model = _with_standardization(model, description)
    return SavedModel(load_model_state(run_dir, model).to(device), spec,
                      Task(**description["task"]), input_shape, tuple(description["metrics"]))


def _spec_to_build(model: str | ModelSpec | None, description: dict, run_dir: Path,
                   trust_model_code: bool) -> ModelSpec:
    saved = description["model"]
    if saved is None and model is None:
        raise BatchTrainError(f"{run_dir} holds weights of a custom nn.Module; pass the module: "
                              "Trainer.load(run_dir, model=MyModel())")
    if isinstance(model, ModelSpec):
        return model
    options = dict((saved or {}).get("options", {}))
    if model is not None:  # named by the user: trusted
        return ModelSpec(str(model), options)
    check_trusted(saved["name"], str(run_dir / DESCRIPTION_FILE), trust_model_code)
    return ModelSpec(saved["name"], options)


__all__ = ["SavedModel", "load_description", "load_model_state", "load_saved_model", "save_model"]
