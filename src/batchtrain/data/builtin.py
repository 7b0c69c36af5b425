"""Built-in datasets (MNIST, Fashion-MNIST): find them on disk, or download and verify them.

Each dataset is the four classic IDX gzip files. `load_dataset` looks in `search_dirs` order and
loads the first directory that holds all four; files found on disk are checked structurally
(IDX headers, counts, label range) rather than by hash, because repackaged copies such as
Debian's `dataset-fashion-mnist` are re-gzipped and so hash differently from the originals.
Downloads, in contrast, are checked against the SHA-256 of the canonical gz files.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from batchtrain.data.idx import read_idx
from batchtrain.errors import DatasetNotFoundError, DataError

# In the order of Splits' fields.
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
# Where Debian's dataset-* packages install; searched last, after per-user places.
APT_DATASETS_DIR = Path("/usr/share/datasets")
# A module constant so tests (and unusual systems) can replace it.
SYSTEM_DIRS: tuple[Path, ...] = (APT_DATASETS_DIR,)
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class DatasetSpec:
    """Where a built-in dataset's files come from and how to recognise the right ones.

    Args:
        name: the dataset's name in `DATASETS` and its directory name on disk.
        files: role (one of `ROLES`) -> file name.
        sha256: file name -> hex SHA-256 of the canonical gz file, checked on download.
        mirrors: base URLs tried in order; a file's URL is base + file name.
        apt_package: Debian package that installs the files under /usr/share/datasets, if any.
        num_classes: labels must lie in [0, num_classes).
    """

    name: str
    files: dict[str, str]
    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    apt_package: str | None = None
    num_classes: int = 10


class Splits(NamedTuple):
    """A dataset's arrays: images float32 in [0, 1] shaped (N, 1, H, W), labels int64 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        apt_package="dataset-fashion-mnist",
    ),
    "mnist": DatasetSpec(
        name="mnist",
        files=_IDX_FILES,
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registered `DatasetSpec` called `name`; DataError listing the known names if none."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; built-in datasets are: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def cache_dir(name: str) -> Path:
    """Per-user download directory: $XDG_CACHE_HOME (else ~/.cache) / batchtrain / name."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative value.
    root = Path(xdg_cache) if os.path.isabs(xdg_cache) else Path.home() / ".cache"
    return root / "batchtrain" / name


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories that may hold dataset `name`, in the order `load_dataset` tries them.

    `data_dir`, then $BATCHTRAIN_DATA (each as the directory itself, then its `name`
    subdirectory), then `cache_dir(name)`, then `<system dir>/name` for each of SYSTEM_DIRS.
    """
    dirs: list[Path] = []
    for root in (data_dir, os.environ.get("BATCHTRAIN_DATA")):
        if root:
            dirs += [Path(root), Path(root) / name]
    dirs.append(cache_dir(name))
    dirs += [system_dir / name for system_dir in SYSTEM_DIRS]
    return list(dict.fromkeys(dirs))  # drop repeats, keep the order


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Splits:
    """Load a built-in dataset from the first directory in `search_dirs` holding all its files.

    Args:
        name: a key of `DATASETS`, e.g. "fashion-mnist".
        data_dir: directory searched first; downloads go to `data_dir/name` when given,
            else to `cache_dir(name)`.
        download: when no directory holds the files, fetch them (True) or fail (False).

    Raises:
        DataError: unknown name, or files found but malformed or inconsistent.
        DatasetNotFoundError: not on disk and not downloadable; the message lists every
            directory searched, each mirror's failure and the remedies.
    """
    spec = get_spec(name)
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise DataError(f"data_dir {data_dir} is a file, not a directory; give the directory "
                        f"holding {name}'s files (--data-dir DIR)")
    searched = search_dirs(name, data_dir)
    for directory in searched:
        if not _missing_files(spec, directory):
            return _load_splits(spec, directory)
    if not download:
        raise DatasetNotFoundError(_not_found_message(spec, searched, None))
    dest_dir = Path(data_dir) / name if data_dir else cache_dir(name)
    failures = _fetch_all(spec, dest_dir, _resolve_mirrors(spec, None))
    if failures:
        raise DatasetNotFoundError(_not_found_message(spec, searched, failures))
    return _load_splits(spec, dest_dir)


def download(name: str, dest_dir: str | os.PathLike | None = None, mirrors: list[str] | None = None) -> Path:
    """Download dataset `name`'s files into `dest_dir` (default `cache_dir(name)`); return it.

    Each file is tried on each mirror in turn (`mirrors`, else $BATCHTRAIN_MIRRORS as
    comma-separated base URLs, else the spec's) and kept only if its SHA-256 matches the
    spec. Files already in `dest_dir` with the right hash are not fetched again.

    Raises:
        DatasetNotFoundError: some file matched on no mirror; nothing unverified is left.
    """
    spec = get_spec(name)
    dest = Path(dest_dir) if dest_dir else cache_dir(name)
    failures = _fetch_all(spec, dest, _resolve_mirrors(spec, mirrors))
    if failures:
        raise DatasetNotFoundError(_not_found_message(spec, [], failures))
    return dest


def _resolve_mirrors(spec: DatasetSpec, mirrors: list[str] | None) -> tuple[str, ...]:
    """Explicit mirrors, else $BATCHTRAIN_MIRRORS, else the spec's."""
    if mirrors:
        return tuple(mirrors)
    from_env = [url.strip() for url in os.environ.get("BATCHTRAIN_MIRRORS", "").split(",")]
    return tuple(url for url in from_env if url) or spec.mirrors


def _missing_files(spec: DatasetSpec, directory: Path) -> list[str]:
    return [spec.files[role] for role in ROLES if not (directory / spec.files[role]).is_file()]


def _load_splits(spec: DatasetSpec, directory: Path) -> Splits:
    """Read and check the four files in `directory`."""
    arrays = {}
    for role in ROLES:
        path = directory / spec.files[role]
        raw = read_idx(path)
        arrays[role] = _images(raw, path) if role.endswith("images") else _labels(raw, path, spec.num_classes)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{directory}: the {split} split has {len(images)} images but {len(labels)} "
                f"labels; the files come from different downloads, delete them and download again"
            )
    return Splits(*(arrays[role] for role in ROLES))


def _images(raw: np.ndarray, path: Path) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    if raw.ndim != 3 or raw.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images shaped (N, H, W), got {raw.dtype} {raw.shape}")
    images = raw.astype(np.float32)
    images /= 255.0  # in place: the full training set is ~190 MB as float32
    return images[:, np.newaxis]


def _labels(raw: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    """Integer (N,) -> int64 (N,), each in [0, num_classes)."""
    if raw.ndim != 1 or raw.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer labels shaped (N,), got {raw.dtype} {raw.shape}")
    labels = raw.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels range over [{labels.min()}, {labels.max()}], expected [0, {num_classes}); "
            f"this is not the right file, delete it and download again"
        )
    return labels


def _fetch_all(spec: DatasetSpec, dest_dir: Path, mirrors: tuple[str, ...]) -> list[str]:
    """Fetch each missing or wrong file into `dest_dir`; failures of the first unobtainable one."""
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return [f"{dest_dir}: cannot create the download directory ({err.strerror or err})"]
    for role in ROLES:
        filename = spec.files[role]
        target = dest_dir / filename
        if target.is_file() and _sha256_of(target) == spec.sha256[filename]:
            continue
        failures = _fetch_file(filename, spec.sha256[filename], target, mirrors)
        if failures:
            # Stop here: when the network is down, each further file would wait out its timeouts too.
            return failures
    return []


def _fetch_file(filename: str, expected_sha256: str, target: Path, mirrors: tuple[str, ...]) -> list[str]:
    """Download `filename` into `target` from the first mirror whose copy verifies; failures."""
    failures = []
    for base_url in mirrors:
        url = base_url.rstrip("/") + "/" + filename
        try:
            partial, actual_sha256 = _download_to_temp(url, target.parent)
        except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {_describe(err)}")
            continue
        if actual_sha256 != expected_sha256:
            partial.unlink()
            failures.append(
                f"{url}: rejected, SHA-256 {actual_sha256[:16]}... is not the expected {expected_sha256[:16]}..."
            )
            continue
        # Only a verified file takes the final name, so a half or wrong download is never loaded.
        os.replace(partial, target)
        return []
    return failures or [f"{filename}: no mirrors configured"]


def _download_to_temp(url: str, directory: Path) -> tuple[Path, str]:
    """Stream `url` into a temporary file in `directory`; (its path, its hex SHA-256)."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".part")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                return partial, _copy_with_progress(response, out, label=url.rsplit("/", 1)[-1])
    except BaseException:  # also on Ctrl-C: never leave a partial file behind
        partial.unlink(missing_ok=True)
        raise


def _copy_with_progress(response, out, label: str) -> str:
    """Copy the HTTP `response` body into the file `out`; the body's hex SHA-256."""
    digest = hashlib.sha256()
    size_bytes = int(response.headers.get("Content-Length") or 0) or None
    # A bar only on a terminal: in logs its carriage returns are noise.
    with tqdm(total=size_bytes, unit="B", unit_scale=True, desc=label,
              disable=not sys.stderr.isatty(), leave=False) as bar:
        while chunk := response.read(_CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _sha256_of(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _describe(err: BaseException) -> str:
    """A short reason for a failed fetch: 'HTTP 404 Not Found', 'Connection refused', ..."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = getattr(err, "reason", None) or err
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def _not_found_message(spec: DatasetSpec, searched: list[Path], failures: list[str] | None) -> str:
    """The DatasetNotFoundError text: what was tried, what failed, and the ways to fix it.

    `failures` is None when downloading was not attempted.
    """
    wanted = ", ".join(spec.files[role] for role in ROLES)
    downloaded = "" if failures is None else " and could not be downloaded"
    lines = [f"dataset {spec.name!r} is not on disk{downloaded}."]
    if searched:
        lines.append(f"Searched for {wanted} in:")
    for directory in searched:
        missing = _missing_files(spec, directory) if directory.is_dir() else None
        lines.append(f"  {directory} ({'does not exist' if missing is None else 'missing ' + ', '.join(missing)})")
    if failures is None:
        lines.append("Downloading was not attempted (download=False).")
    else:
        lines += ["Download failed:"] + [f"  {failure}" for failure in failures]
    lines.append("Fix it one of these ways:")
    if spec.apt_package:
        lines.append(f"  - sudo apt-get install {spec.apt_package}   (installs into {APT_DATASETS_DIR / spec.name})")
    lines += [
        f"  - batchtrain download {spec.name}   (needs network; BATCHTRAIN_MIRRORS=URL,URL picks other mirrors)",
        "  - put the four files in a directory DIR and pass --data-dir DIR or set BATCHTRAIN_DATA=DIR",
    ]
    return "\n".join(lines)
