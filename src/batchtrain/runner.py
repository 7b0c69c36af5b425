"""The jobs behind the CLI: a fit run writes a run directory; evaluate and predict read one.

A run directory holds: config.yaml (the resolved options, seed included), metrics.jsonl,
history.csv, model.safetensors + model.json, test.json (test metrics, when there is a test set)
and one PNG per metric (loss.png, accuracy.png ...).
"""
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import numpy as np
import yaml

from batchtrain.batching.budget import resolve_budget
from batchtrain.callbacks import Callback, Checkpoint, MetricsLogger, Plotter, ProgressBar
from batchtrain.checkpoint import PREFIX, list_checkpoints
from batchtrain.saving import DESCRIPTION_FILE, WEIGHTS_FILE
from batchtrain.fileio import atomic_write
from batchtrain.config import FitConfig
from batchtrain.data.files import load_splits, scale_pixels
from batchtrain.device import resolve_device
from batchtrain.distributed import from_environment, process_device
from batchtrain.errors import ConfigError, DataError
from batchtrain.interrupts import TrainingInterrupted
from batchtrain.trainer import Trainer

CONFIG_FILE = "config.yaml"
TEST_FILE = "test.json"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "history.csv", WEIGHTS_FILE, DESCRIPTION_FILE, TEST_FILE,
             CHECKPOINT_DIR)


def run_fit(config: FitConfig, out: TextIO | None = None, resume: bool = False) -> dict:
    """Train as `config` says, write the run directory, print the test metrics; returns them.

    resume: continue the run in config.output from its newest checkpoint. Under torchrun every
    rank trains; rank 0 alone checks and writes the run directory and prints.
    """
    out = out or sys.stdout
    device = process_device(resolve_device(config.device))
    group = from_environment(device)
    main = group is None or group.is_main
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(4), "little")
    # rank 0's seed everywhere: a seed drawn per process would give each rank its own order
    config = replace(config, seed=seed if group is None else group.broadcast_int(seed, device))
    run_dir = choose_run_dir(config, resume, check=main)  # refuses an existing run before slow work
    splits = load_splits(config.data, config.data_dir, config.download)
    trainer = make_trainer(config)
    if main:
        create_run_dir(run_dir, config.overwrite and not resume)  # bad input must not cost the old run
        atomic_write(run_dir / CONFIG_FILE, lambda path: path.write_text(yaml.safe_dump(config.to_dict())))
        print(f"run directory: {run_dir}", file=out, flush=True)
    started = time.perf_counter()
    try:
        trainer.fit(splits.x_train, splits.y_train, batch_size=config.batch_size,
                    epochs=config.epochs, validation_split=config.validation_split,
                    shuffle=config.shuffle, callbacks=fit_callbacks(config, run_dir),
                    resume=run_dir / CHECKPOINT_DIR if resume else None)
    except TrainingInterrupted as interrupted:
        if main:
            print(f"batchtrain fit: {interrupted}; checkpoint written in {run_dir / CHECKPOINT_DIR}; "
                  f"continue with: batchtrain fit --resume {run_dir}", file=sys.stderr, flush=True)
        raise
    if trainer.stop_reason_:  # the trainer has warned, naming the step
        return {"stopped": trainer.stop_reason_}
    results = {"train_time_s": round(time.perf_counter() - started, 2)}
    if splits.x_test is not None:  # every rank evaluates its shard; the metrics are reduced
        results.update({f"test_{key}": value for key, value in
                        trainer.evaluate(splits.x_test, splits.y_test).items()})
    if main:
        trainer.save(run_dir)
        atomic_write(run_dir / TEST_FILE, lambda path: path.write_text(json.dumps(results, indent=2)))
        print(f"trained in {results['train_time_s']:.1f}s", file=out)
        print(format_results(results, prefix="test_"), file=out, flush=True)
    return results


def format_results(results: dict, prefix: str = "") -> str:
    """'test loss 0.3034 - test accuracy 0.8913' from {"test_loss": ..., "test_accuracy": ...}."""
    label = prefix.replace("_", " ")
    return " - ".join(f"{label}{key.removeprefix(prefix)} {value:.4f}"
                      for key, value in results.items() if key.startswith(prefix))


def make_trainer(config: FitConfig) -> Trainer:
    optimizer_options = {key: value for key, value in
                         (("momentum", config.momentum), ("nesterov", config.nesterov or None))
                         if value is not None}
    return Trainer(config.model, optimizer=config.optimizer, loss=config.loss, lr=config.lr,
                   device=config.device, seed=config.seed, task=config.task,
                   model_options={"hidden": config.hidden} if config.hidden else None,
                   optimizer_options=optimizer_options, lr_scaling=config.lr_scaling,
                   lr_schedule=config.lr_schedule, memory_budget=config.memory_budget,
                   max_physical_batch=config.max_physical_batch, on_nonfinite=config.on_nonfinite,
                   threads=config.threads)


def fit_callbacks(config: FitConfig, run_dir: Path) -> list[Callback]:
    callbacks: list[Callback] = [MetricsLogger(run_dir, config.log_every_steps or None),
                                 Plotter(run_dir),
                                 Checkpoint(run_dir / CHECKPOINT_DIR, config.checkpoint_every,
                                            config.keep_checkpoints)]
    if config.progress != "none":
        terminal = {"auto": None, "bar": True, "lines": False}[config.progress]
        callbacks.insert(0, ProgressBar(terminal=terminal))
    return callbacks


def choose_run_dir(config: FitConfig, resume: bool = False, check: bool = True) -> Path:
    """The run directory to use; refuses one holding a run unless overwrite (or resume) is set.
    Changes nothing on disk. check=False (ranks other than 0): only the path."""
    run_dir = Path(config.output) if config.output is not None else _new_run_dir(config.data)
    if not check:
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output {run_dir} is a file, not a directory; choose another path")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not list_checkpoints(run_dir / CHECKPOINT_DIR):
            raise ConfigError(f"nothing to resume in {run_dir}: it holds no checkpoints "
                              f"({run_dir / CHECKPOINT_DIR}); start a new run without --resume")
    elif existing and not config.overwrite:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(existing)}); continue it with "
                          f"--resume {run_dir}, replace it with --overwrite, or choose another --output")
    return run_dir


def create_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the run directory; with overwrite, remove a previous run's files (and only those)."""
    if overwrite:
        for path in ([run_dir / name for name in RUN_FILES if name != CHECKPOINT_DIR]
                     + list(run_dir.glob("*.png"))
                     + list((run_dir / CHECKPOINT_DIR).glob(f"{PREFIX}*"))):
            path.unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run directory {run_dir}: {error.strerror}; choose "
                          "another --output") from None


def _new_run_dir(data: str) -> Path:
    stem = Path(data).stem if data.endswith(".npz") else data
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the same name on every rank, without a clock
        return Path("runs") / f"{stem}-{os.environ.get('TORCHELASTIC_RUN_ID', 'ddp')}-{os.environ.get('MASTER_PORT', '')}"
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    return run_dir


def read_run_config(run_dir: Path) -> FitConfig:
    """The FitConfig a run directory was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return FitConfig(**yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: {run_dir} is not a batchtrain run directory") from None
    except (OSError, yaml.YAMLError, TypeError) as error:
        raise ConfigError(f"cannot read {path}: {error}; the run directory is damaged") from None


def run_evaluate(run_dir: Path, data: str | None, data_dir: str | None, batch_size: int,
                 device: str, out: TextIO | None = None) -> dict:
    """Evaluate a run's model on the test split of `data` (default: the data it was trained on)."""
    config = read_run_config(run_dir)
    trainer = Trainer.load(run_dir, device=device)
    splits = load_splits(data or config.data, data_dir or config.data_dir, config.download)
    x, y = (splits.x_test, splits.y_test) if splits.x_test is not None else splits[:2]
    results = trainer.evaluate(x, y, batch_size=batch_size)
    print(format_results(results), file=out or sys.stdout)
    return results


def run_predict(run_dir: Path, input_path: Path, output_path: Path, batch_size: int,
                device: str) -> np.ndarray:
    """Predict on the samples in a .npy file and write the predictions to another .npy file."""
    trainer = Trainer.load(run_dir, device=device)
    try:
        x = np.load(input_path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"input file {input_path} not found; check the path") from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read input file {input_path}: {error}; pass a .npy file "
                        "written by numpy.save") from None
    predictions = trainer.predict(scale_pixels(x), batch_size=batch_size)
    atomic_write(output_path, lambda path: _save_npy(path, predictions))
    return predictions


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array)


__all__ = ["choose_run_dir", "create_run_dir", "run_evaluate", "run_fit", "run_predict"]


def run_probe(args) -> Path:
    """`batchtrain probe`: measure, recommend, write probe.md and probe.png; returns the .md path."""
    from batchtrain.probe import probe, write_report  # matplotlib and the stats only when probing

    sizes = [int(size) for size in str(args.sizes).split(",") if size.strip()]
    if not sizes or min(sizes) < 1 or args.warmup < 1 or args.repeats < 1:
        raise ConfigError("--sizes must be positive integers and --warmup, --repeats >= 1")
    hidden = [int(size) for size in args.hidden.split(",")] if args.hidden else None
    trainer = Trainer(args.model, optimizer=args.optimizer, lr=args.lr, device=args.device,
                      seed=args.seed, model_options={"hidden": hidden} if hidden else None)
    splits = load_splits(args.data, args.data_dir)
    out_dir = args.output or Path("runs") / f"probe-{time.strftime('%Y%m%d-%H%M%S')}"
    result = probe(trainer, splits.x_train, splits.y_train, sorted(set(sizes)), args.warmup,
                   args.repeats, resolve_budget(args.memory_budget))
    path = write_report(result, Path(out_dir))
    print(f"recommended: --batch-size {result.recommended_batch} --lr {result.recommended_lr:.3g}")
    return path
