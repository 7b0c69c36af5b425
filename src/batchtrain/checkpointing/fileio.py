"""Crash-safe file writes: temporary file beside the destination, fsync, rename, fsync the directory."""
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from batchtrain.errors import BatchTrainError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through write(temporary_path) so that a crash leaves the old file or the new
    one, never a torn one.

    os.replace is atomic within one filesystem, hence the temporary file in the same directory;
    the file is fsynced before the rename (so the rename cannot expose unwritten data) and the
    directory after it (so the rename itself survives a power cut). On any error the temporary
    file is removed and the destination is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as written:
            written.flush()
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def replace_directory(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a new directory through write(temporary_directory) and put it in place of `path`:
    a crash leaves the old directory or the new one whole, never a mix of their files.

    Two renames (no portable call swaps two directories): the old directory moves aside to
    previous_directory(path) and the new one into place; a crash between them leaves the old one
    there, which readers take when `path` is missing. On an error in write, `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(temporary)
        fsync_directory(temporary)
        previous = previous_directory(path)
        if path.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(path, previous)
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_directory(path.parent)
    shutil.rmtree(previous_directory(path), ignore_errors=True)


def previous_directory(path: Path) -> Path:
    """Where replace_directory keeps the old directory while it swaps in the new one."""
    return path.parent / f".{path.name}.previous"


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(descriptor)


class UnreadableFile(ValueError):
    """A file that must not be read as it is: not a regular file, or larger than allowed.
    The message completes "<path> ...": "is not a regular file", "is larger than N bytes"."""


def read_small_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a small regular file, read as untrusted data: a pipe would block forever and a
    device (a link to /dev/zero) never end, so both are refused unread, as is a file over max_bytes.
    Raises UnreadableFile, or OSError (FileNotFoundError included) from opening it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UnreadableFile("is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFile(f"is larger than {max_bytes} bytes")
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_error(path: Path, error: OSError) -> BatchTrainError:
    """The one-line error for a failed write of `path`: the path, the cause, and its fix."""
    fixes = {errno.ENOSPC: "free space or choose another --output",
             errno.EDQUOT: "free space or choose another --output",
             errno.ENAMETOOLONG: "choose a shorter path",
             errno.EISDIR: "it is a directory: give a file path",
             errno.ENOTDIR: "a part of the path is a file: choose another path",
             errno.EEXIST: "a part of the path is a file: choose another path"}
    fix = fixes.get(error.errno, "choose a path you can write to")
    return BatchTrainError(f"cannot write {str(path)[:300]}: {error.strerror or error}; {fix}")


def write_output(path: Path, write: Callable[[Path], None]) -> None:
    """atomic_write for a file a command writes for the user (a run file, predictions): a failure
    (disk full, a read-only or too long a path) becomes write_error's one clear line."""
    try:
        atomic_write(path, write)
    except OSError as error:
        raise write_error(path, error) from None
