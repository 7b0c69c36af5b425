"""Training checkpoints on disk: atomic, checksummed, the last K kept, loaded without unpickling.

A checkpoint is two files in the checkpoint directory:
  ckpt-<samples_seen, 14 digits>.pt    torch.save of a dict holding only tensors, numbers, strings,
                                        lists and dicts: torch.load(path, weights_only=True) reads it
  ckpt-<samples_seen, 14 digits>.json  {"sha256": ..., "bytes": ...}: written after the .pt, so a
                                        .pt without its .json is an interrupted save
Both are written atomically (fileio.atomic_write). A checkpoint whose .json is missing or whose
checksum differs is skipped, with a warning, for the previous one.
"""
import json
import pickle
import shutil
import warnings
from pathlib import Path

import torch

from batchtrain.errors import BatchTrainError
from batchtrain.checkpointing.fileio import atomic_write, fsync_directory, read_small_file, sha256_file

PREFIX = "ckpt-"
FORMAT_VERSION = 1
MAX_RECORD_BYTES = 4096  # a checkpoint's .json record is ~100 bytes
FULL_DISK_BYTES = 64 << 20  # less free space than this is named in a failed save's message


class CheckpointError(BatchTrainError):
    """A checkpoint cannot be written, found or trusted."""


def checkpoint_path(directory: Path, samples_seen: int) -> Path:
    return Path(directory) / f"{PREFIX}{samples_seen:014d}.pt"


def save_checkpoint(directory: str | Path, state: dict, keep: int = 3) -> Path:
    """Write `state` as the checkpoint for state["progress"]["samples_seen"]; keep the newest `keep`.

    Raises CheckpointError (disk full, unwritable directory): the previous checkpoints are intact.
    """
    directory = Path(directory)
    path = checkpoint_path(directory, state["progress"]["total_samples_seen"])
    try:
        atomic_write(path, lambda temporary: torch.save({"format": FORMAT_VERSION, **state}, temporary))
        record = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        atomic_write(path.with_suffix(".json"), lambda temporary: temporary.write_text(json.dumps(record)))
    except (OSError, RuntimeError) as error:  # torch.save's writer reports ENOSPC as RuntimeError
        reason = error.strerror if isinstance(error, OSError) and error.strerror else \
            str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}{_free_space(directory)}; "
                              "the previous checkpoints are intact; free space or choose another "
                              "--output and resume") from None
    _prune(directory, keep)
    return path


def _free_space(directory: Path) -> str:
    """' (the disk is full: 12 KiB free)' when the disk holding directory is nearly full."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    return f" (the disk is full: {free // 1024} KiB free)" if free < FULL_DISK_BYTES else ""


def _prune(directory: Path, keep: int) -> None:
    """Remove all but the newest `keep` complete checkpoints, and leftovers of interrupted saves."""
    complete = complete_checkpoints(directory)
    for path in complete[:-keep] if keep > 0 else []:
        path.with_suffix(".json").unlink(missing_ok=True)  # first: a .pt alone reads as incomplete
        path.unlink(missing_ok=True)
    for leftover in directory.glob(f".{PREFIX}*.tmp"):
        leftover.unlink(missing_ok=True)
    fsync_directory(directory)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The .pt files of a checkpoint directory, oldest first (by samples seen)."""
    return sorted(Path(directory).glob(f"{PREFIX}*.pt"))


def complete_checkpoints(directory: str | Path) -> list[Path]:
    """The .pt files whose save finished (their .json record exists), oldest first."""
    return [path for path in list_checkpoints(directory) if path.with_suffix(".json").exists()]


def load_checkpoint(path: str | Path) -> dict:
    """Read one checkpoint after checking its checksum; refuses anything that needs unpickling.

    Both files are untrusted: the record is read up to MAX_RECORD_BYTES, and the checkpoint only
    when it is a regular file of the size its record gives (a link to /dev/zero is never hashed).
    """
    path = Path(path)
    record_path = path.with_suffix(".json")
    if not record_path.exists():
        raise CheckpointError(f"checkpoint {path} is incomplete (no {record_path.name}): the save "
                              "was interrupted")
    record = _read_record(record_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file; it cannot be a checkpoint "
                              "batchtrain wrote")
    if path.stat().st_size != record["bytes"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: {path.stat().st_size} bytes where "
                              f"{record_path.name} records {record['bytes']}")
    if sha256_file(path) != record["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match "
                              f"{record_path.name}")
    return read_checkpoint_file(path)


def _read_record(record_path: Path) -> dict:
    """A checkpoint's {"sha256": hex, "bytes": int} record, read as untrusted data."""
    try:
        record = json.loads(read_small_file(record_path, MAX_RECORD_BYTES))
    except (OSError, ValueError) as error:  # UnreadableFile and JSON's errors are ValueErrors
        raise CheckpointError(f"checkpoint record {record_path} is unreadable: "
                              f"{str(error)[:160]}") from None
    if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and isinstance(record.get("bytes"), int) and not isinstance(record["bytes"], bool)):
        raise CheckpointError(f"checkpoint record {record_path} is unreadable: not "
                              '{"sha256": ..., "bytes": ...}')
    return record


def read_checkpoint_file(path: Path) -> dict:
    """torch.load with weights_only=True: tensors and plain data only, never arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise CheckpointError(f"refusing checkpoint {path}: it holds pickled objects that could run "
                              f"code when loaded ({first_line[:160]}); only checkpoints written "
                              "by batchtrain can be resumed") from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a batchtrain checkpoint (format {FORMAT_VERSION})")
    return state


def newest_checkpoint(location: str | Path) -> tuple[dict, Path]:
    """The newest valid checkpoint in a checkpoint directory, a run directory, or one .pt file.

    Incomplete or corrupt checkpoints are skipped with a warning naming them; a refused (unsafe)
    checkpoint stops the search: it is not silently replaced by an older one.
    """
    location = Path(location)
    if location.is_file():
        return load_checkpoint(location), location
    directory = location / "checkpoints" if (location / "checkpoints").is_dir() else location
    candidates = list_checkpoints(directory)
    if not candidates:
        raise CheckpointError(f"no checkpoint to resume from in {location} (looked for "
                              f"{directory}/{PREFIX}*.pt); start a new run instead of resuming")
    skipped = []  # warned about only once an older checkpoint is found to replace them
    for path in reversed(candidates):
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            if "refusing" in str(error):
                raise
            skipped.append(error)
            continue
        for error in skipped:
            warnings.warn(f"{error}; using the previous checkpoint", stacklevel=2)
        return state, path
    newest = str(skipped[0])[:300]
    raise CheckpointError(f"every checkpoint in {directory} is incomplete or corrupt (the newest: "
                          f"{newest}); start a new run")
