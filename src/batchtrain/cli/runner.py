"""The jobs behind the CLI: a fit run writes a run directory (cli/rundir.py); evaluate and predict
read one."""
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from batchtrain.batching.budget import resolve_budget
from batchtrain.callbacks import Callback, Checkpoint, MetricsLogger, Plotter, ProgressBar, TensorBoard
from batchtrain.callbacks.best_model import best_model_dir
from batchtrain.checkpointing.files import complete_checkpoints
from batchtrain.checkpointing.saved_model import WEIGHTS_FILE
from batchtrain.checkpointing.fileio import previous_directory, write_error, write_output
from batchtrain.cli.config import FitConfig
from batchtrain.cli.configfiles import quoted
from batchtrain.data.builtin import Splits
from batchtrain.data.dataset import check_test_data, is_streamable, open_dataset
from batchtrain.data.files import load_inputs, load_splits
from batchtrain.data.stream import StreamSource
from batchtrain.runtime.device import resolve_device
from batchtrain.distributed.ddp import Distributed, from_environment, process_device
from batchtrain.distributed.elastic import is_own_restart
from batchtrain.errors import ConfigError
from batchtrain.errors import TrainingInterrupted
from batchtrain.cli.rundir import (BEST_DIR, CHECKPOINT_DIR, CONFIG_FILE, RUN_FILES, TEST_FILE,  # noqa: F401
                               TENSORBOARD_DIR,
                               RunRecord, check_run_dir, create_run_dir, read_run_config,
                               run_dir_path, stopped_note)
from batchtrain.trainer import Trainer

TENSORBOARD_EVERY_STEPS = 20  # --tensorboard's interval unless --log-every-steps sets one


def run_fit(config: FitConfig, out: TextIO | None = None, resume: bool = False) -> dict:
    """Train as `config` says, write the run directory, print the test metrics; returns them.

    resume: continue the run in config.output from its newest checkpoint. Under torchrun every
    rank trains; rank 0 alone checks and writes the run directory, prints, and decides for all.
    A torchrun restart (--max-restarts) continues the run directory its job began, from the
    newest checkpoint there, or begins it again when there is none yet.
    """
    out = out or sys.stdout
    device = process_device(resolve_device(config.device))
    group = from_environment(device)
    main = group is None or group.is_main
    run_dir = run_dir_path(config)  # on every rank: the same path
    restarted = main and is_own_restart(run_dir)
    if restarted:
        config, resume = continue_own_run(config, run_dir, resume, out)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(4), "little")
    # rank 0's seed everywhere: a seed drawn per process would give each rank its own order
    config = config.replace(seed=_from_main(group, device, seed))
    resume = bool(_from_main(group, device, resume))
    # refuses an existing run before slow work; the records of an attempt that saved nothing
    earlier = check_run_dir(run_dir, config, resume) if main and not restarted else []
    splits = load_fit_data(config)
    policy = config.batch_size_policy  # parsed once, when the options were checked (validate)
    if isinstance(splits.x_train, StreamSource) and splits.x_train.table.feature_names:
        config = config.replace(features=list(splits.x_train.table.feature_names))  # for predict
    trainer = make_trainer(config)
    # written as fit begins, once the trainer has checked data and options: bad input must not
    # cost the old run nor leave a directory behind; a restart replaces its own earlier attempt
    record = RunRecord(run_dir, config, (config.overwrite or restarted) and not resume,
                       [] if resume else earlier, out)
    started = time.perf_counter()
    try:
        trainer.fit(splits.x_train, splits.y_train, batch_size=policy,
                    epochs=config.epochs, validation_split=config.validation_split,
                    shuffle=config.shuffle, callbacks=fit_callbacks(config, run_dir, record),
                    resume=run_dir / CHECKPOINT_DIR if resume else None)
    except TrainingInterrupted as interrupted:
        if main:
            print(f"batchtrain fit: {interrupted}; checkpoint written in {run_dir / CHECKPOINT_DIR}; "
                  f"continue with: batchtrain fit --resume {run_dir}", file=sys.stderr, flush=True)
        raise
    if trainer.stop_reason_:  # the trainer has warned, naming the step
        if main:
            print(stopped_note(run_dir), file=sys.stderr, flush=True)
        return {"stopped": trainer.stop_reason_}
    results = {"train_time_s": round(time.perf_counter() - started, 2)}
    if main:  # before evaluating: a failure there must not cost the trained model
        save_model_files(trainer, run_dir)
    if splits.x_test is not None:  # every rank evaluates its shard; the metrics are reduced
        results.update({f"test_{key}": value for key, value in
                        trainer.evaluate(splits.x_test, splits.y_test).items()})
    if main:
        write_output(run_dir / TEST_FILE, lambda path: path.write_text(json.dumps(results, indent=2)))
        print(f"trained in {results['train_time_s']:.1f}s", file=out)
        print(format_results(results, prefix="test_"), file=out, flush=True)
    return results


def load_fit_data(config: FitConfig) -> Splits:
    """Training (and test) data: in memory for built-in datasets and .npz files, streamed from
    disk for .npy/.parquet/.csv files and directories (x_train is then a StreamSource, y None)."""
    if not is_streamable(config.data):
        for name in ("target", "features", "test_data", "cache"):
            if getattr(config, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} applies to data streamed from disk "
                                  f"(.parquet, .csv, .npy), not to {config.data}; drop it")
        return load_splits(config.data, config.data_dir, config.download)
    train = open_stream(config, config.data, cache=config.cache)
    if config.test_data is None:
        return Splits(train, None, None, None)
    names = train.table.feature_names  # the test table's columns taken by name, in training's order
    test = open_stream(config.replace(features=list(names)) if names else config, config.test_data)
    check_test_data(test, train)  # now, not after training
    return Splits(train, None, test, None)


def open_stream(config: FitConfig, path: str, require_target: bool = True,
                cache: str | None = None) -> StreamSource:
    """Data streamed with the run's options. cache: only for training data, read every epoch
    (test data, evaluation and prediction read once: a decoded copy would only cost disk)."""
    return open_dataset(path, config.target, config.features, shuffle_window=config.shuffle_window,
                        prefetch=config.prefetch, workers=config.read_workers,
                        standardize=config.standardize, cache=cache, require_target=require_target)


def continue_own_run(config: FitConfig, run_dir: Path, resume: bool,
                     out: TextIO) -> tuple[FitConfig, bool]:
    """(config, resume) for a torchrun restart of the job that began run_dir: the same command
    again, so the seed it drew at first (config.yaml) and its newest checkpoint, if any."""
    checkpoints = complete_checkpoints(run_dir / CHECKPOINT_DIR)
    action = (f"continuing {run_dir} from its newest checkpoint" if checkpoints
              else f"no checkpoint in {run_dir} yet, starting it again")
    print(f"torchrun job {os.environ['TORCHELASTIC_RUN_ID']} restarted: {action}", file=out, flush=True)
    return config.replace(seed=read_run_config(run_dir).seed), resume or bool(checkpoints)


def _from_main(group: Distributed | None, device: torch.device, value: int) -> int:
    """Rank 0's value on every rank (the value itself in a single process)."""
    return value if group is None else group.broadcast_int(int(value), device)


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
                   threads=config.threads, precision=config.precision, compile=config.compile)


def fit_callbacks(config: FitConfig, run_dir: Path, record: Callback) -> list[Callback]:
    """The progress display, the callbacks that decide (early stopping, the lr on a plateau, the
    best model: before the record, so that a monitor the run lacks is refused before the run
    directory is written), the run's record, its logs, plots, checkpoints and TensorBoard."""
    callbacks: list[Callback] = [*config.monitor_callbacks(run_dir), record,
                                 MetricsLogger(run_dir, config.log_every_steps or None),
                                 Plotter(run_dir),
                                 Checkpoint(run_dir / CHECKPOINT_DIR, config.checkpoint_every,
                                            config.keep_checkpoints)]
    if config.tensorboard:
        log_dir = run_dir / TENSORBOARD_DIR if config.tensorboard is True else Path(config.tensorboard)
        callbacks.append(TensorBoard(log_dir, config.log_every_steps or TENSORBOARD_EVERY_STEPS))
    if config.progress != "none":
        terminal = {"auto": None, "bar": True, "lines": False}[config.progress]
        callbacks.insert(0, ProgressBar(terminal=terminal))
    return callbacks


def save_model_files(trainer: Trainer, run_dir: Path) -> None:
    """trainer.save(run_dir); a failed write names the file, and what keeps the training."""
    try:
        trainer.save(run_dir)
    except OSError as error:
        kept = complete_checkpoints(run_dir / CHECKPOINT_DIR)
        saved = (f"; {kept[-1]} keeps the trained state: once fixed, batchtrain fit --resume "
                 f"{run_dir} saves the model" if kept else "")
        raise ConfigError(f"{write_error(run_dir / WEIGHTS_FILE, error)}{saved}") from None


def run_evaluate(run_dir: Path, data: str | None, data_dir: str | None, batch_size: int,
                 device: str, out: TextIO | None = None, model: str | None = None,
                 trust_model_code: bool = False, best: bool = False) -> dict:
    """Evaluate a run's model on the test split of `data` (default: the data it was trained on).
    model, trust_model_code: as Trainer.load's (an import path in model.json is code); best: the
    best epoch's model (RUN/best, --save-best) instead of the final one."""
    config = read_run_config(run_dir)
    trainer = Trainer.load(best_model_dir(run_dir) if best else run_dir, model, device=device,
                           trust_model_code=trust_model_code)
    data = data or config.test_data or config.data
    if is_streamable(data):
        x, y = open_stream(config, data), None
    else:
        splits = load_splits(data, data_dir or config.data_dir, config.download)
        x, y = (splits.x_test, splits.y_test) if splits.x_test is not None else splits[:2]
    results = trainer.evaluate(x, y, batch_size=batch_size)
    print(format_results(results), file=out or sys.stdout)
    return results


def run_predict(run_dir: Path, input_path: Path, output_path: Path, batch_size: int,
                device: str, model: str | None = None, trust_model_code: bool = False,
                best: bool = False) -> np.ndarray:
    """Predict on the samples in a .npy file (or Parquet/CSV with the run's feature columns) and
    write the predictions to a .npy file. model, trust_model_code: as Trainer.load's; best: the
    best epoch's model (RUN/best)."""
    check_output_file(output_path, input_path, run_dir)
    trainer = Trainer.load(best_model_dir(run_dir) if best else run_dir, model, device=device,
                           trust_model_code=trust_model_code)
    if input_path.suffix in (".parquet", ".pq", ".csv") or input_path.is_dir():
        config = read_run_config(run_dir)
        source = open_stream(config, str(input_path), require_target=False)
        predictions = trainer.predict(source, batch_size=batch_size)
        write_output(output_path, lambda path: _save_npy(path, predictions))
        return predictions
    predictions = trainer.predict(load_inputs(input_path), batch_size=batch_size)
    write_output(output_path, lambda path: _save_npy(path, predictions))
    return predictions


def check_output_file(path: Path, input_path: Path, run_dir: Path) -> None:
    """Refuse predict's --output where no file can be, or over the input or a file of the run,
    before the model and data are read."""
    try:
        is_dir, target = path.is_dir(), path.resolve()
        run_files = Path(run_dir).resolve()
        overwrites_input = target == Path(input_path).resolve()
    except OSError as error:  # a name too long
        raise write_error(path, error) from None
    if is_dir:
        raise ConfigError(f"--output {path} is a directory; give a file path, e.g. "
                          f"{path / 'predictions.npy'}")
    if overwrites_input:
        raise ConfigError(f"--output {path} is the --input file; write the predictions to another file")
    if (target.parent == run_files and target.name in RUN_FILES) or any(
            target.is_relative_to(run_files / name)
            for name in (CHECKPOINT_DIR, BEST_DIR, previous_directory(Path(BEST_DIR)).name)):
        raise ConfigError(f"--output {path} would overwrite the run's {target.name}; write the "
                          "predictions to another file")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array)


__all__ = ["check_run_dir", "create_run_dir", "run_dir_path", "run_evaluate", "run_fit", "run_predict"]


def run_probe(args) -> Path:
    """`batchtrain probe`: measure, recommend, write probe.md and probe.png; returns the .md path."""
    from batchtrain.cli.probe import probe, write_report  # matplotlib and the stats only when probing

    sizes = _positive_ints(args.sizes, "--sizes", "16,32,64")
    if args.warmup < 1 or args.repeats < 1:
        raise ConfigError(f"--warmup and --repeats must be >= 1, got {args.warmup} and {args.repeats}")
    hidden = _positive_ints(args.hidden, "--hidden", "128,64") if args.hidden else None
    trainer = Trainer(args.model, optimizer=args.optimizer, lr=args.lr, device=args.device,
                      seed=args.seed, model_options={"hidden": hidden} if hidden else None)
    splits = load_splits(args.data, args.data_dir)
    out_dir = args.output or Path("runs") / f"probe-{time.strftime('%Y%m%d-%H%M%S')}"
    result = probe(trainer, splits.x_train, splits.y_train, sorted(set(sizes)), args.warmup,
                   args.repeats, resolve_budget(args.memory_budget))
    path = write_report(result, Path(out_dir))
    print(f"recommended: --batch-size {result.recommended_batch} --lr {result.recommended_lr:.3g}")
    return path


def _positive_ints(text: str, flag: str, example: str) -> list[int]:
    """"16,32" as [16, 32]; ConfigError naming the flag otherwise."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items or not all(item.isdigit() and int(item) >= 1 for item in items):
        raise ConfigError(f"{flag} must be positive integers separated by commas (e.g. {example}), "
                          f"got {quoted(text)}")
    return [int(item) for item in items]
