"""Reading small files as untrusted data: pipes, devices and oversized files refused unread."""
import os

import pytest

from batchtrain.checkpointing.fileio import UnreadableFile, read_small_file


def test_a_small_regular_file_is_read_whole(tmp_path):
    (tmp_path / "a.json").write_bytes(b"{}")
    assert read_small_file(tmp_path / "a.json", 2) == b"{}"


def test_a_file_over_the_limit_is_refused(tmp_path):
    (tmp_path / "a.json").write_bytes(b"{ }")
    with pytest.raises(UnreadableFile, match="is larger than 2 bytes"):
        read_small_file(tmp_path / "a.json", 2)


@pytest.mark.parametrize("make", [
    lambda path: os.mkfifo(path),                  # open() would block until a writer comes
    lambda path: path.symlink_to("/dev/zero"),     # read() would never end
    lambda path: path.mkdir(),
], ids=["fifo", "device", "directory"])
def test_what_is_not_a_regular_file_is_refused_unread(tmp_path, make):
    make(tmp_path / "config.yaml")
    with pytest.raises(UnreadableFile, match="is not a regular file"):
        read_small_file(tmp_path / "config.yaml", 1 << 20)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_small_file(tmp_path / "nothing.yaml", 10)


def test_replace_directory_swaps_whole_and_keeps_the_old_one_on_an_error(tmp_path):
    from batchtrain.checkpointing.fileio import previous_directory, replace_directory

    target = tmp_path / "run" / "best"

    def write(version):
        def fill(directory):
            (directory / "a").write_text(version)
            (directory / "b").write_text(version)
        return fill

    replace_directory(target, write("1"))
    replace_directory(target, write("2"))
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
    assert {(target / name).read_text() for name in "ab"} == {"2"}

    def fail(directory):
        (directory / "a").write_text("3")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_directory(target, fail)
    assert {(target / name).read_text() for name in "ab"} == {"2"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["best"]  # no temporary left
    assert not previous_directory(target).exists()
