"""The `batchtrain fit` configuration: one dataclass whose fields are both the CLI options and the
keys of a YAML/TOML/JSON config file (flags override the file, the file overrides defaults)."""
import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from batchtrain.batching.base import BatchSizePolicy
from batchtrain.batching.budget import parse_budget
from batchtrain.batching.spec import parse_batch_size
from batchtrain.callbacks.best_model import BEST_DIR
from batchtrain.callbacks.spec import monitor_callbacks
from batchtrain.callbacks.tensorboard import summary_writer_class
from batchtrain.cli.configfiles import parse_options, quoted, read_options_text
from batchtrain.runtime.device import resolve_device
from batchtrain.errors import ConfigError, is_count
from batchtrain.optim.optimizers import MAX_LR
from batchtrain.durations import to_samples
from batchtrain.optim.schedules import as_lr_schedule
from batchtrain.runtime.threads import check_threads

MAX_TEXT_CHARS = 4096  # of an option's text (PATH_MAX): bounds every message that repeats it
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
# What a resumed run can still change: its checkpoint restores the model, the optimizer (its lr
# and momentum too), the lr control, the batch-size policy, the seed, the random generators and
# the position in the data's order, so an option that sets any of those would be ignored.
RESUMABLE = ("epochs", "test_data", "data_dir", "download", "cache", "prefetch", "read_workers",
             "device", "threads", "checkpoint_every", "keep_checkpoints", "on_nonfinite",
             "log_every_steps", "progress", "tensorboard")


def int_or_text(value: Any) -> int | str:
    """An integer where the text is one ("128"), else the text ("max", "double:64,1e,1024")."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(value)
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def column_names(value: Any) -> list[str]:
    """Column names from "a,b,c" or a list (of names, possibly comma-separated)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(value)
    names = [name.strip() for item in items for name in str(item).split(",") if name.strip()]
    if not names:
        raise ValueError(value)
    return names


def path_or_on(value: Any) -> str | bool | None:
    """A directory, True ("true", or the flag alone: the run's own tensorboard/) or None ("false")."""
    if isinstance(value, bool):
        return value or None
    if not isinstance(value, str):
        raise TypeError(value)
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    return None if lowered in ("false", "no", "off") else value


def int_or_auto(value: Any) -> int | str:
    """An integer where the text is one ("4"), or "auto"."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(value)
    text = str(value).strip()
    if text == "auto":
        return text
    return int(text)  # "-1" passes here and fails validate() with the option's range


def option(default: Any, help: str, kind: type = str, choices: tuple | None = None) -> Any:
    """A config field: default value, help text, the value's kind, and allowed choices."""
    return field(default=default, metadata={"help": help, "kind": kind, "choices": choices})


@dataclass
class FitConfig:
    """Every option of `batchtrain fit`; the defaults run the design document's reference job."""

    data: str = option("fashion-mnist", "built-in dataset (fashion-mnist, mnist), a .npz file "
                       "holding x_train, y_train (and optionally x_test, y_test), or data streamed "
                       "from disk: a .parquet, .csv or x*.npy file or a directory of them")
    data_dir: str | None = option(None, "directory holding the dataset's IDX files (searched first)")
    download: bool = option(True, "download a missing built-in dataset", bool)
    target: str | None = option(None, "target column of Parquet/CSV data")
    features: list | None = option(None, "feature columns of Parquet/CSV data (default: all but "
                                   "the target)", column_names)
    test_data: str | None = option(None, "test data streamed from disk, like --data (a .npz or "
                                   "built-in dataset brings its own test split)")
    shuffle_window: int | None = option(None, "rows of streamed data shuffled together (default: "
                                        "as many as fit in 64 MiB)", int)
    prefetch: str = option("auto", "how streamed data is read ahead of training (auto: a "
                           "thread when a core is free of torch's threads, else in line)",
                           choices=("auto", "thread", "process", "none"))
    read_workers: int = option(1, "pieces of streamed data read at once", int)
    cache: str | None = option(None, "directory where streamed Parquet/CSV rows are kept decoded "
                               "after their first read, so later epochs skip decoding (costs "
                               "their size as float32 on disk)")
    standardize: bool | None = option(None, "standardise streamed features (and regression "
                                      "targets) with training-set statistics (default: on for "
                                      "Parquet/CSV, off for .npy)", bool)
    model: str = option("seed-cnn", "seed-cnn, mlp, or an import path package.module:factory")
    hidden: list | None = option(None, "mlp hidden layer sizes, comma-separated (default 64)", list)
    optimizer: str = option("adam", "optimizer", choices=("sgd", "adam", "adamw", "rmsprop"))
    lr: float | None = option(None, "learning rate (default: the optimizer's Keras default)", float)
    momentum: float | None = option(None, "momentum for sgd or rmsprop", float)
    nesterov: bool = option(False, "Nesterov momentum for sgd", bool)
    loss: str | None = option(None, "loss name (default inferred from the task)")
    task: str | None = option(None, "task (default inferred from the labels)",
                              choices=("multiclass", "binary", "regression"))
    batch_size: int | str = option(128, "samples per optimizer step: N, max (the memory "
                                   "ceiling), auto (adaptive), a schedule 128,256@2e,512@4e, "
                                   "ramp:64,512,3e or double:64,1e,1024", int_or_text)
    lr_scaling: str = option("auto", "how the lr follows the batch size (auto: linear for sgd, "
                             "sqrt otherwise)", choices=("auto", "none", "linear", "sqrt", "adascale"))
    lr_schedule: str | None = option(None, "sample-keyed lr schedule, e.g. cosine, "
                                     "warmup:1e+cosine, step:2e,4e, onecycle (default constant)")
    memory_budget: str | None = option(None, "memory for the physical batch: 8GiB, 512MiB or a "
                                       "fraction of available RAM (default 0.5)")
    max_physical_batch: int | None = option(None, "cap on the physical batch, instead of the "
                                            "memory estimate; larger batches accumulate", int)
    epochs: int = option(5, "passes over the training data", int)
    validation_split: float = option(0.2, "last fraction of the training data held out", float)
    shuffle: bool = option(True, "shuffle the training data every epoch", bool)
    seed: int | None = option(None, "random seed (default: drawn and recorded in config.yaml)", int)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int | str | None = option(None, "torch CPU threads while training: N, or auto (all "
                                       "cores, one fewer per core other processes keep busy); "
                                       "default torch's, one per core", int_or_auto)
    precision: str = option("32", "numeric precision: 32; bf16-mixed (forward in bfloat16, weights "
                            "and optimizer state float32); 16-mixed (float16 with a gradient "
                            "scaler, for CUDA); auto (bf16-mixed where the device has bfloat16 "
                            "units, else 32)", choices=("32", "bf16-mixed", "16-mixed", "auto"))
    compile: bool = option(False, "train through torch.compile (it compiles before the first "
                           "step: tens of seconds on a CPU; see README Speed)", bool)
    output: str | None = option(None, "run directory (default runs/<data>-<date>-<time>)")
    overwrite: bool = option(False, "replace the run directory's previous contents", bool)
    checkpoint_every: str | None = option(None, "also checkpoint every N samples (or 0.5e: twice "
                                          "an epoch); checkpoints are always written at epoch ends")
    keep_checkpoints: int = option(3, "number of newest checkpoints kept", int)
    on_nonfinite: str = option("stop", "on a NaN/inf loss or gradient: stop (keep the last good "
                               "checkpoint), skip the step, or raise",
                               choices=("stop", "skip", "raise"))
    log_every_steps: int = option(0, "also log running metrics every N steps (0: per epoch only)", int)
    progress: str = option("auto", "progress display", choices=("auto", "bar", "lines", "none"))
    early_stopping: str | None = option(None, "stop once a monitored quantity stops improving: "
                                        "MONITOR[:patience=N,min_delta=X,mode=min|max,baseline=X,"
                                        "start_from_epoch=N,restore_best], e.g. "
                                        "val_loss:patience=3,restore_best")
    reduce_lr_on_plateau: str | None = option(None, "multiply the lr by factor after patience "
                                              "epochs without improvement: MONITOR[:factor=X,"
                                              "patience=N,min_delta=X,cooldown=N,min_lr=X,mode=..."
                                              "], e.g. val_loss:factor=0.5,patience=2")
    save_best: str | None = option(None, "keep the best epoch's model in RUN/best/ (batchtrain "
                                   "evaluate RUN --best): MONITOR[:mode=min|max,min_delta=X], "
                                   "e.g. val_accuracy")
    tensorboard: str | bool | None = option(None, "write TensorBoard scalars to DIR (the flag "
                                            "alone: RUN/tensorboard) every --log-every-steps "
                                            "steps (default 20); needs the tensorboard package",
                                            path_or_on)

    @cached_property
    def batch_size_policy(self) -> BatchSizePolicy | str:
        """--batch-size parsed (batching/spec.py): the policy fit() trains with, or "max"."""
        return parse_batch_size(self.batch_size)

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with `changes`; the parsed batch size carries over unless it changes."""
        copy = replace(self, **changes)
        if "batch_size" not in changes and "batch_size_policy" in vars(self):
            vars(copy)["batch_size_policy"] = self.batch_size_policy
        return copy

    def validate(self) -> "FitConfig":
        """Raise ConfigError for values out of range or a device that is missing, before any data
        is loaded."""
        self.check_values()
        check_threads(self.threads)  # at most a few per core of this machine
        if self.tensorboard:
            summary_writer_class()  # installed here? (an optional package)
        resolve_device(self.device)  # fail now, not after the data has loaded
        return self

    def check_values(self) -> "FitConfig":
        """Raise ConfigError for values out of range, whatever the machine (the device is not
        looked for, the thread count not compared with this machine's cores)."""
        self.batch_size_policy  # noqa: B018 (parsed here, once: fit() takes the policy)
        as_lr_schedule(self.lr_schedule)
        parse_budget(self.memory_budget)
        _check(self.max_physical_batch is None or self.max_physical_batch >= 1,
               f"max_physical_batch must be >= 1, got {quoted(self.max_physical_batch)}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {quoted(self.epochs)}")
        _check(0.0 <= self.validation_split < 1.0,
               f"validation_split must be in [0, 1), got {quoted(self.validation_split)}")
        # written so that NaN fails every comparison
        _check(self.lr is None or 0 < self.lr <= MAX_LR,
               f"lr must be a number in (0, {MAX_LR:g}], got {quoted(self.lr)}")
        self._check_momentum()
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {quoted(self.keep_checkpoints)}")
        if self.checkpoint_every is not None:
            _check(to_samples(self.checkpoint_every, 1) >= 0, "checkpoint_every must be >= 0")
        _check(self.shuffle_window is None or self.shuffle_window >= 1,
               f"shuffle_window must be >= 1 rows, got {quoted(self.shuffle_window)}")
        _check(self.read_workers >= 1, f"read_workers must be >= 1, got {quoted(self.read_workers)}")
        _check(self.log_every_steps >= 0, f"log_every_steps must be >= 0, got {quoted(self.log_every_steps)}")
        _check(self.hidden is None or all(size >= 1 for size in self.hidden),
               f"hidden sizes must be >= 1, got {quoted(self.hidden)}")
        _check(self.seed is None or 0 <= self.seed < 2**63,
               f"seed must be in [0, 2**63), got {quoted(self.seed)}")
        _check(self.threads in (None, "auto") or is_count(self.threads),
               f"threads must be 'auto' or an integer >= 1, got {quoted(self.threads)}")
        self.monitor_callbacks(Path("run"))  # the specs parse, their monitors can be computed
        return self

    def monitor_callbacks(self, run_dir: Path) -> list:
        """What --early-stopping, --reduce-lr-on-plateau and --save-best ask for (callbacks/spec.py)."""
        return monitor_callbacks(self.early_stopping, self.reduce_lr_on_plateau, self.save_best,
                                 run_dir / BEST_DIR, self.validation_split > 0)

    def _check_momentum(self) -> None:
        if self.momentum is not None:
            _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {quoted(self.momentum)}")
            _check(self.optimizer in MOMENTUM_OPTIMIZERS, f"momentum applies to sgd and rmsprop, "
                   f"not {self.optimizer}; drop --momentum or choose --optimizer sgd")
        if self.nesterov:
            _check(self.optimizer == "sgd", f"nesterov applies to sgd, not {self.optimizer}; drop "
                   "--nesterov or choose --optimizer sgd")
            _check((self.momentum or 0) > 0, "nesterov needs momentum > 0, e.g. --momentum 0.9")

    def to_dict(self) -> dict:
        return asdict(self)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


FIELDS = {spec.name: spec for spec in fields(FitConfig)}


def convert(name: str, value: Any, where: str | None = None) -> Any:
    """Coerce a value from a flag or a config file to the option's kind, or raise ConfigError.

    where: how messages name the value (default: the flag, e.g. "--batch-size").
    """
    label = where or "--" + name.replace("_", "-")
    spec = FIELDS[name]
    kind, choices = spec.metadata["kind"], spec.metadata["choices"]
    if value is None:
        if spec.default is MISSING or spec.default is not None:
            raise ConfigError(f"{label} cannot be empty")
        return None
    if isinstance(value, str) and not value.strip():  # "" would name the working directory
        raise ConfigError(f"{label} cannot be empty; give a value or leave the option out")
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise ConfigError(f"{label} is {len(value)} characters long; a value is at most "
                          f"{MAX_TEXT_CHARS}")
    try:
        value = _coerce(kind, value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{label} must be {_kind_name(kind)}, got {quoted(value)}") from None
    if choices and value not in choices:
        raise ConfigError(f"{label} must be one of {', '.join(choices)}; got {quoted(value)}")
    return value


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise ValueError(value)
    if kind is list:
        return [int(item) for item in column_names(value)]
    if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(value)
    if kind in (str, int, float) and not isinstance(value, (str, int, float)):
        raise TypeError(value)  # str([a, b]) is no path, float({}) no number
    return kind(value)


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number",
            list: "a list of integers (e.g. 128,64)", column_names: "column names (e.g. a,b,c)",
            int_or_text: "an integer or a batch-size spec (max, 128,256@2e ...)",
            int_or_auto: "an integer >= 1 or auto",
            path_or_on: "a directory, or true"}.get(kind, "a string")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a .yaml/.yml, .toml or .json file, keys as option names (dashes allowed)."""
    path = Path(path)
    label = f"config file {path}"
    if path.suffix not in (".toml", ".json", ".yaml", ".yml"):
        raise ConfigError(f"{label} must end in .yaml, .yml, .toml or .json")
    raw = parse_options(read_options_text(path, label), path.suffix, label)
    return options_from(raw, label)


def read_run_record(path: Path) -> "FitConfig":
    """The FitConfig recorded in a run's config.yaml, read as untrusted data: bounded, no YAML
    aliases, every key known and every value converted and checked."""
    damaged = "the run directory is damaged"
    try:
        raw = parse_options(read_options_text(path, str(path), damaged), ".yaml", str(path), damaged)
        if raw is None:  # fit writes every option: an empty file is not a run's record
            raise ConfigError(f"{path} is empty; {damaged}")
        options = options_from(raw, str(path), damaged)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if damaged in message else f"{message}; {damaged}") from None
    try:
        return FitConfig(**options).check_values()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}; {damaged}") from None


def options_from(raw: Any, label: str, fix: str | None = None) -> dict[str, Any]:
    """Converted options from a parsed mapping of option: value (dashes in names allowed)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{label} must hold a mapping of option: value, got {type(raw).__name__}"
                          + (f"; {fix}" if fix else ""))
    options, spelled = {}, {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in options:
            raise ConfigError(f"{label} sets {name} twice ({quoted(spelled[name])} and "
                              f"{quoted(key)}); {fix or 'keep one'}")
        options[name], spelled[name] = value, key
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        names = ", ".join(name[:50] for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ConfigError(f"{label} has unknown option(s) {names}; "
                          f"{fix or _valid_options_hint(unknown)}")
    return {name: convert(name, value, f"{name} in {label}") for name, value in options.items()}


def _valid_options_hint(unknown: list[str]) -> str:
    """The valid options, or (for many unknown keys: not a config file) where to find them."""
    if len(unknown) > 5:
        return "see `batchtrain fit --help` for the valid options"
    close = difflib.get_close_matches(str(unknown[0]), list(FIELDS), n=1)
    shown = ", ".join(list(FIELDS)[:16])  # bounded: the list grows with every option
    return (f"valid options: {shown}, ... ({len(FIELDS)} in all: `batchtrain fit --help`)"
            + (f"; did you mean {close[0]}?" if close else ""))


def to_yaml(config: "FitConfig") -> str:
    """config.yaml's text: every option, without anchors (read_run_record refuses them)."""
    return yaml.dump(config.to_dict(), Dumper=_PlainDumper)


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def resume_config(recorded: "FitConfig", given: dict[str, Any], run_dir: Path) -> "FitConfig":
    """The config of a resumed run: the recorded one, with the given options (flags, a config
    file) that can apply to a run continued from its checkpoint; any other change is refused."""
    output = given.get("output")
    if output is not None and Path(output) != Path(run_dir):
        raise ConfigError(f"--resume {run_dir} continues that run in its own directory; drop "
                          f"--output {quoted(output)} (or start a new run there)")
    changed = [name for name, value in given.items()
               if name not in ("output", "overwrite") and value != getattr(recorded, name)]
    fixed = [name for name in changed if name not in RESUMABLE]
    if fixed:
        flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise ConfigError(f"{flags} cannot change when resuming {run_dir}: its checkpoint restores "
                          "the model, optimizer, learning rate, batch size, seed and data order; "
                          "on --resume only these may change: "
                          f"{', '.join('--' + name.replace('_', '-') for name in RESUMABLE)}; "
                          "start a new run to change the others")
    return FitConfig(**{**recorded.to_dict(), **given, "output": str(run_dir)}).validate()


def resolve_config(file_options: dict[str, Any], flag_options: dict[str, Any]) -> FitConfig:
    """Defaults, overridden by the config file, overridden by flags given on the command line."""
    return FitConfig(**{**file_options, **flag_options}).validate()

