"""Checkpoint files: atomic, checksummed, pruned, refused when unsafe, intact when a save fails."""
import errno
import json

import pytest
import torch

from batchtrain.checkpointing import files as ckpt
from batchtrain.checkpointing.files import (CheckpointError, list_checkpoints, load_checkpoint,
                                   newest_checkpoint, save_checkpoint)
from batchtrain.checkpointing.fileio import sha256_file


def state(samples: int) -> dict:
    return {"progress": {"total_samples_seen": samples}, "weights": torch.full((3,), float(samples)),
            "history": {"epochs": [{"loss": 0.5}], "steps": []}, "name": "run", "none": None}


def write_record(path) -> None:
    """The .json record batchtrain writes beside a checkpoint, for a file made by hand."""
    record = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    path.with_suffix(".json").write_text(json.dumps(record))


def test_round_trip_and_plain_torch_load_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path, state(100))
    assert path.name == "ckpt-00000000000100.pt"
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], torch.full((3,), 100.0)) and loaded["name"] == "run"
    plain = torch.load(path, weights_only=True)  # what a user can do without batchtrain
    assert plain["progress"] == {"total_samples_seen": 100}
    record = json.loads(path.with_suffix(".json").read_text())
    assert set(record) == {"sha256", "bytes"} and record["bytes"] == path.stat().st_size


def test_only_the_newest_k_are_kept(tmp_path):
    for samples in range(100, 600, 100):
        save_checkpoint(tmp_path, state(samples), keep=3)
    assert [path.name for path in list_checkpoints(tmp_path)] == [
        "ckpt-00000000000300.pt", "ckpt-00000000000400.pt", "ckpt-00000000000500.pt"]
    assert len(list(tmp_path.glob("*.json"))) == 3 and not list(tmp_path.glob(".*tmp"))


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, state(100))
    newest = save_checkpoint(tmp_path, state(200))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"ckpt-00000000000200.pt is corrupt: its SHA-256"):
        loaded, path = newest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000000000100.pt" and loaded["weights"][0] == 100


def test_incomplete_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    save_checkpoint(tmp_path, state(100))
    newest = save_checkpoint(tmp_path, state(200))
    newest.with_suffix(".json").unlink()  # killed between writing the .pt and its record
    with pytest.warns(UserWarning, match="is incomplete"):
        _, path = newest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000000000100.pt"


def test_every_checkpoint_broken_is_an_error_and_no_warning(tmp_path, recwarn):
    """No "using the previous checkpoint" when there is none: one error naming the newest."""
    save_checkpoint(tmp_path, state(100)).with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"every checkpoint in .* \(the newest: checkpoint "
                                              r".*ckpt-00000000000100.pt is incomplete"):
        newest_checkpoint(tmp_path)
    assert not recwarn.list
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        newest_checkpoint(tmp_path / "elsewhere")


class Payload:
    """Unpickling this runs code: it would create the file named in the test."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-00000000000100.pt"
    torch.save({"format": 1, "progress": {"total_samples_seen": 100}, "evil": Payload(marker)}, path)
    write_record(path)  # a matching record: the file is intact, just malicious
    with pytest.raises(CheckpointError, match="refusing checkpoint .* pickled objects"):
        newest_checkpoint(tmp_path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "ckpt-00000000000001.pt"
    torch.save({"something": torch.zeros(1)}, path)
    write_record(path)
    with pytest.raises(CheckpointError, match="not a batchtrain checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"garbage" * 10)
    write_record(path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint|refusing"):
        load_checkpoint(path)


def test_disk_full_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    tmp_path = tmp_path / "checkpoints"
    save_checkpoint(tmp_path, state(100))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real_save = torch.save

    def save_half_then_fail(obj, target):
        real_save(obj, target)
        with open(target, "r+b") as handle:
            handle.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", save_half_then_fail)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoints "
                                              "are intact"):
        save_checkpoint(tmp_path, state(200))
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no debris
    loaded, path = newest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000000000100.pt"


def test_unwritable_checkpoint_directory(tmp_path):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(blocker, state(100))
    assert blocker.read_text() == "a file where the directory should be"


def test_a_checkpoint_linked_to_a_device_is_refused_without_reading_it(tmp_path):
    """A link to /dev/zero would be hashed forever; a record claiming any size changes nothing."""
    save_checkpoint(tmp_path, state(100))
    endless = tmp_path / "ckpt-00000000000200.pt"
    endless.symlink_to("/dev/zero")
    endless.with_suffix(".json").write_text(json.dumps({"sha256": "0" * 64, "bytes": 1 << 40}))
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(endless)
    with pytest.warns(UserWarning, match="not a regular file"):
        _, path = newest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000000000100.pt"


@pytest.mark.parametrize("record", [
    "/dev/zero", "[1, 2]", '{"sha256": "ab"}', '{"sha256": "ab", "bytes": true}', "x" * 10000,
], ids=["device", "list", "no-bytes", "bool-bytes", "huge"])
def test_an_unreadable_record_is_refused(tmp_path, record):
    path = save_checkpoint(tmp_path, state(100))
    path.with_suffix(".json").unlink()
    if record.startswith("/dev/"):
        path.with_suffix(".json").symlink_to(record)
    else:
        path.with_suffix(".json").write_text(record)
    with pytest.raises(CheckpointError, match="checkpoint record .* is unreadable"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_size_than_its_record_is_corrupt(tmp_path):
    path = save_checkpoint(tmp_path, state(100))
    with open(path, "ab") as handle:
        handle.write(b"appended")
    with pytest.raises(CheckpointError, match="is corrupt: .* bytes where"):
        load_checkpoint(path)


def test_torch_save_failing_on_a_full_disk_is_a_checkpoint_error(tmp_path, monkeypatch):
    """torch.save's zip writer reports ENOSPC as a RuntimeError, not an OSError."""
    tmp_path = tmp_path / "checkpoints"
    save_checkpoint(tmp_path, state(100))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def fail_like_a_full_disk(obj, target):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(ckpt.torch, "save", fail_like_a_full_disk)
    with pytest.raises(CheckpointError, match="unexpected pos .*the previous checkpoints are intact"):
        save_checkpoint(tmp_path, state(200))
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
