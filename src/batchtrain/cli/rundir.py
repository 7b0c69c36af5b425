"""The run directory of `batchtrain fit`: its path, whether it already holds a run, its record.

A run directory holds: config.yaml (the resolved options, seed included), metrics.jsonl,
history.csv, model.safetensors + model.json, test.json (test metrics, when there is a test set),
checkpoints/, one PNG per metric (loss.png, accuracy.png ...), and with --save-best the best
epoch's model in best/ (model.safetensors, model.json, best.json), with --tensorboard the event
files in tensorboard/.

What makes it a run to protect is what training produced: a checkpoint, the model or test
results. The records of an attempt that produced none of them (config.yaml, metrics.jsonl,
history.csv of a fit that failed or stopped before its first checkpoint) are replaced by the next
fit without --overwrite; nothing else in the directory is touched.
"""
import math
import os
import shutil
import time
from pathlib import Path
from typing import TextIO

from batchtrain.callbacks import Callback
from batchtrain.callbacks.best_model import BEST_DIR, RECORD_FILE
from batchtrain.checkpointing.files import PREFIX, complete_checkpoints, list_checkpoints
from batchtrain.cli.config import FitConfig, read_run_record, to_yaml
from batchtrain.distributed.elastic import CLAIM_FILE, claim_run_dir
from batchtrain.errors import ConfigError
from batchtrain.checkpointing.fileio import previous_directory, write_error, write_output
from batchtrain.checkpointing.saved_model import DESCRIPTION_FILE, WEIGHTS_FILE

CONFIG_FILE = "config.yaml"
TEST_FILE = "test.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"  # --tensorboard without a directory
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "history.csv", WEIGHTS_FILE, DESCRIPTION_FILE, TEST_FILE,
             CLAIM_FILE, CHECKPOINT_DIR, BEST_DIR)
RECORD_FILES = (CONFIG_FILE, "metrics.jsonl", "history.csv", CLAIM_FILE)  # an attempt's records


def run_dir_path(config: FitConfig) -> Path:
    """The run directory config.output names, or a new one under runs/."""
    return Path(config.output) if config.output is not None else _new_run_dir(config.data)


def check_run_dir(run_dir: Path, config: FitConfig, resume: bool = False) -> list[str]:
    """Refuse a run directory holding a run (a checkpoint, a model or test results) unless
    overwrite (or resume) is set; changes nothing. Returns the records of an earlier attempt
    that produced none of those (config.yaml ...), which this fit replaces."""
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--output {run_dir} is a file, not a directory; choose another path")
        present = [name for name in RUN_FILES if name != CHECKPOINT_DIR and (run_dir / name).exists()]
        checkpoints = list_checkpoints(run_dir / CHECKPOINT_DIR)
    except OSError as error:  # a name too long, a part of the path that is a file
        raise write_error(run_dir, error) from None
    if resume:
        if not checkpoints:
            raise ConfigError(f"nothing to resume in {run_dir}: it holds no checkpoints "
                              f"({run_dir / CHECKPOINT_DIR}); start a new run without --resume")
        return []
    held = [name for name in present if name not in RECORD_FILES] + [CHECKPOINT_DIR] * bool(checkpoints)
    if held and not config.overwrite:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(held)}); continue it with "
                          f"--resume {run_dir}, replace it with --overwrite, or choose another --output")
    return [name for name in present if name in RECORD_FILES]


def create_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the run directory; with overwrite, remove a previous run's files (and only those)."""
    try:
        if overwrite:
            for path in ([run_dir / name for name in RUN_FILES if name not in (CHECKPOINT_DIR, BEST_DIR)]
                         + list(run_dir.glob("*.png"))
                         + list((run_dir / CHECKPOINT_DIR).glob(f"{PREFIX}*"))
                         + [run_dir / BEST_DIR / name for name in (WEIGHTS_FILE, DESCRIPTION_FILE, RECORD_FILE)]
                         + list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))):
                path.unlink(missing_ok=True)
            if (run_dir / BEST_DIR).is_dir() and not any((run_dir / BEST_DIR).iterdir()):
                (run_dir / BEST_DIR).rmdir()
            # what a crash inside the best model's replacement leaves (fileio.replace_directory)
            for leftover in [previous_directory(run_dir / BEST_DIR), *run_dir.glob(f".{BEST_DIR}.*.tmp")]:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run directory {str(run_dir)[:300]}: {error.strerror}; "
                          "choose another --output") from None


def _new_run_dir(data: str) -> Path:
    stem = Path(data).stem or "data"  # fashion-mnist, houses (.parquet), a directory's name
    # the same name on every rank, without a clock; under torchrun in every restart too (its job
    # id: --rdzv-id, or a fresh one with --standalone), where MASTER_PORT may change
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return Path("runs") / f"{stem}-{os.environ['TORCHELASTIC_RUN_ID']}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # another launcher
        return Path("runs") / f"{stem}-ddp-{os.environ.get('MASTER_PORT', '')}"
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    return run_dir


def read_run_config(run_dir: Path) -> FitConfig:
    """The FitConfig a run directory was trained with (config.yaml read as untrusted data)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        if Path(run_dir).is_file():
            raise ConfigError(f"{run_dir} is a file, not a run directory; pass the directory that "
                              f"batchtrain fit wrote (it holds {CONFIG_FILE} and {CHECKPOINT_DIR}/)")
        found = path.exists()
    except OSError as error:
        raise ConfigError(f"cannot read {str(path)[:300]}: {error.strerror}") from None
    if not found:
        raise ConfigError(f"{path} not found: {run_dir} is not a batchtrain run directory")
    return read_run_record(path)


class RunRecord(Callback):
    """Creates the run directory and writes config.yaml when fit begins: after the trainer has
    checked the data and the options (labels, split, optimizer settings, a resumed checkpoint),
    so that a fit refused for bad input leaves nothing on disk.

    overwrite: remove a previous run's files first; earlier: the records of an earlier attempt
    that saved nothing (check_run_dir), removed first.
    """

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, run_dir: Path, config: FitConfig, overwrite: bool, earlier: list[str],
                 out: TextIO):
        self.run_dir = run_dir
        self.config = config
        self.overwrite = overwrite
        self.earlier = earlier
        self.out = out

    def on_fit_begin(self, trainer, info) -> None:
        run = trainer.state_
        trained_epochs = run.samples_seen / run.samples_per_epoch  # a resumed run's
        if trained_epochs > self.config.epochs:  # nothing would train, yet epochs be recorded
            raise ConfigError(f"--epochs {self.config.epochs} is fewer than the {trained_epochs:g} "
                              f"epochs {self.run_dir} has trained; give --epochs "
                              f"{math.ceil(trained_epochs)} or more")
        create_run_dir(self.run_dir, self.overwrite)
        for name in self.earlier:
            try:
                (self.run_dir / name).unlink(missing_ok=True)
            except OSError as error:
                raise write_error(self.run_dir / name, error) from None
        write_output(self.run_dir / CONFIG_FILE,
                       lambda path: path.write_text(to_yaml(self.config)))
        claim_run_dir(self.run_dir)
        print(f"run directory: {self.run_dir}", file=self.out, flush=True)
        if self.earlier:
            print(f"replaced {', '.join(self.earlier)} of an earlier attempt that saved no model "
                  "or checkpoint", file=self.out, flush=True)


def stopped_note(run_dir: Path) -> str:
    """What a fit stopped by a non-finite step leaves in run_dir, and how to go on from it."""
    checkpoints = complete_checkpoints(run_dir / CHECKPOINT_DIR)
    if checkpoints:
        return (f"batchtrain fit: no model was saved; {checkpoints[-1]} holds the last state "
                f"before that step; start again with --overwrite (a lower --lr, checked data)")
    return (f"batchtrain fit: no model or checkpoint was saved; {run_dir} holds only this "
            "attempt's records, and the corrected fit may reuse it without --overwrite")
