"""Built-in datasets: search order, structural checks, and the verified downloader.

Downloads go to a local http.server on 127.0.0.1; nothing here touches the real ~/.cache or
/usr/share/datasets except the last test, which reads the installed Fashion-MNIST if present.
"""

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from batchtrain.data import builtin
from batchtrain.data.builtin import DatasetSpec, cache_dir, download, load_dataset, search_dirs
from batchtrain.data.idx import write_idx
from batchtrain.errors import DatasetNotFoundError, DataError

NAME = "tiny"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def make_dataset(directory, seed, n_train=50, n_test=20):
    """Write the four IDX files of a random 28x28, 10-class dataset; return its arrays by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for role, array in arrays.items():
        write_idx(directory / FILES[role], array)
    return arrays


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Point every search location into tmp_path, so real caches and system dirs are ignored."""
    for variable in ("BATCHTRAIN_DATA", "BATCHTRAIN_MIRRORS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(builtin, "SYSTEM_DIRS", (tmp_path / "system",))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Register dataset NAME whose hashes match `served/good/`; `bad/` and `short/` are corrupt."""
    root = tmp_path / "served"
    good = make_dataset(root / "good", seed=0)
    make_dataset(root / "bad", seed=1)  # well-formed IDX, wrong content: only the hash can tell
    (root / "short").mkdir()
    for filename in FILES.values():
        (root / "short" / filename).write_bytes((root / "good" / filename).read_bytes()[:-10])
    sha256 = {f: hashlib.sha256((root / "good" / f).read_bytes()).hexdigest() for f in FILES.values()}
    spec = DatasetSpec(NAME, FILES, sha256, mirrors=("http://127.0.0.1:9/",), apt_package="dataset-tiny")
    monkeypatch.setitem(builtin.DATASETS, NAME, spec)
    return root, good


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server(served):
    """Base URL of an HTTP server on 127.0.0.1 serving the `served` directory."""
    root, _ = served
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_url():
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def assert_same_as(splits, arrays):
    np.testing.assert_array_equal(splits.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(splits.x_test[:, 0] * 255, arrays["test_images"])


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", builtin.DATASETS.values(), ids=list(builtin.DATASETS))
def test_registered_specs_are_complete(spec):
    assert set(spec.files) == set(builtin.ROLES)
    assert set(spec.sha256) == set(spec.files.values())
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in spec.sha256.values())
    assert spec.mirrors and all(url.endswith("/") for url in spec.mirrors)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*fashion-mnist, mnist"):
        load_dataset("cifar")


# --- search order and loading ---------------------------------------------------------------


def test_search_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHTRAIN_DATA", str(tmp_path / "env"))
    assert search_dirs(NAME, tmp_path / "given") == [
        tmp_path / "given",
        tmp_path / "given" / NAME,
        tmp_path / "env",
        tmp_path / "env" / NAME,
        tmp_path / "xdg" / "batchtrain" / NAME,
        tmp_path / "system" / NAME,
    ]


def test_cache_dir_falls_back_to_home_when_xdg_is_unset_or_relative(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir(NAME) == tmp_path / "home" / ".cache" / "batchtrain" / NAME
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_dir(NAME) == tmp_path / "home" / ".cache" / "batchtrain" / NAME


def test_each_location_beats_the_ones_after_it(tmp_path, monkeypatch, served):
    in_data_dir = make_dataset(tmp_path / "given", seed=11)
    in_env = make_dataset(tmp_path / "env" / NAME, seed=12)
    in_cache = make_dataset(cache_dir(NAME), seed=13)
    in_system = make_dataset(tmp_path / "system" / NAME, seed=14)
    monkeypatch.setenv("BATCHTRAIN_DATA", str(tmp_path / "env"))

    assert_same_as(load_dataset(NAME, data_dir=tmp_path / "given", download=False), in_data_dir)
    assert_same_as(load_dataset(NAME, download=False), in_env)
    monkeypatch.delenv("BATCHTRAIN_DATA")
    assert_same_as(load_dataset(NAME, download=False), in_cache)
    for filename in FILES.values():
        (cache_dir(NAME) / filename).unlink()
    assert_same_as(load_dataset(NAME, download=False), in_system)


def test_loaded_arrays_are_scaled_channels_first(tmp_path, served):
    arrays = make_dataset(tmp_path / "given", seed=3)
    x_train, y_train, x_test, y_test = load_dataset(NAME, data_dir=tmp_path / "given", download=False)
    assert x_train.shape == (50, 1, 28, 28) and x_test.shape == (20, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_allclose(x_train[:, 0], arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


def test_directory_missing_a_file_is_skipped(tmp_path, monkeypatch, served):
    make_dataset(tmp_path / "given", seed=1)
    (tmp_path / "given" / FILES["test_labels"]).unlink()
    complete = make_dataset(tmp_path / "env", seed=2)
    monkeypatch.setenv("BATCHTRAIN_DATA", str(tmp_path / "env"))
    assert_same_as(load_dataset(NAME, data_dir=tmp_path / "given", download=False), complete)


def test_image_and_label_counts_must_agree(tmp_path, served):
    make_dataset(tmp_path / "given", seed=1)
    write_idx(tmp_path / "given" / FILES["train_labels"], np.zeros(49, np.uint8))
    with pytest.raises(DataError, match="train split has 50 images but 49 labels"):
        load_dataset(NAME, data_dir=tmp_path / "given", download=False)


def test_labels_must_be_below_num_classes(tmp_path, served):
    make_dataset(tmp_path / "given", seed=1)
    write_idx(tmp_path / "given" / FILES["test_labels"], np.full(20, 10, np.uint8))
    with pytest.raises(DataError, match=r"labels range over \[10, 10\], expected \[0, 10\)"):
        load_dataset(NAME, data_dir=tmp_path / "given", download=False)


def test_not_found_without_download_lists_every_dir_and_the_remedies(tmp_path, served):
    make_dataset(tmp_path / "given", seed=1)
    (tmp_path / "given" / FILES["train_images"]).unlink()
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset(NAME, data_dir=tmp_path / "given", download=False)
    message = str(excinfo.value)
    for directory in search_dirs(NAME, tmp_path / "given"):
        assert str(directory) in message
    assert f"missing {FILES['train_images']}" in message
    assert "not attempted" in message
    for remedy in ("apt-get install dataset-tiny", "batchtrain download tiny", "--data-dir DIR", "BATCHTRAIN_DATA"):
        assert remedy in message


def test_no_apt_remedy_for_a_dataset_without_a_package():
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset("mnist", download=False)
    assert "apt-get" not in str(excinfo.value)
    assert "batchtrain download mnist" in str(excinfo.value)


# --- downloading ----------------------------------------------------------------------------


def test_download_verifies_then_loads_into_data_dir(tmp_path, monkeypatch, served, server, capfd):
    _, good = served
    monkeypatch.setenv("BATCHTRAIN_MIRRORS", server + "good/")
    assert_same_as(load_dataset(NAME, data_dir=tmp_path / "given"), good)
    assert sorted(p.name for p in (tmp_path / "given" / NAME).iterdir()) == sorted(FILES.values())
    assert capfd.readouterr().err == ""  # no progress bar when stderr is not a terminal


def test_download_defaults_to_the_cache_dir(served, server):
    assert download(NAME, mirrors=[server + "good"]) == cache_dir(NAME)  # no trailing slash needed
    assert all((cache_dir(NAME) / f).is_file() for f in FILES.values())


def test_corrupt_mirror_is_rejected_and_the_next_one_used(tmp_path, served, server):
    root, _ = served
    dest = download(NAME, tmp_path / "dest", mirrors=[server + "bad/", server + "good/"])
    for filename in FILES.values():
        assert (dest / filename).read_bytes() == (root / "good" / filename).read_bytes()


def test_all_mirrors_corrupt_raises_and_leaves_nothing(tmp_path, served, server):
    with pytest.raises(DatasetNotFoundError) as excinfo:
        download(NAME, tmp_path / "dest", mirrors=[server + "bad/", server + "short/"])
    message = str(excinfo.value)
    assert f"{server}bad/{FILES['train_images']}: rejected, SHA-256" in message
    assert f"{server}short/{FILES['train_images']}: rejected, SHA-256" in message
    assert list((tmp_path / "dest").iterdir()) == []


def test_unreachable_mirrors_error_names_dirs_failures_and_remedies(
    tmp_path, monkeypatch, served, server, closed_url
):
    monkeypatch.setenv("BATCHTRAIN_MIRRORS", f"{closed_url}, {server}missing/")
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset(NAME, data_dir=tmp_path / "given")
    message = str(excinfo.value)
    for directory in search_dirs(NAME, tmp_path / "given"):
        assert str(directory) in message
    assert f"{closed_url}{FILES['train_images']}: " in message
    assert f"{server}missing/{FILES['train_images']}: HTTP 404" in message
    assert "apt-get install dataset-tiny" in message and "--data-dir DIR" in message
    assert list((tmp_path / "given" / NAME).iterdir()) == []


def test_explicit_mirrors_beat_the_environment(tmp_path, monkeypatch, served, server, closed_url):
    monkeypatch.setenv("BATCHTRAIN_MIRRORS", closed_url)
    download(NAME, tmp_path / "dest", mirrors=[server + "good/"])
    assert all((tmp_path / "dest" / f).is_file() for f in FILES.values())


def test_verified_files_already_present_are_not_fetched_again(tmp_path, served, closed_url):
    make_dataset(tmp_path / "dest", seed=0)  # byte-identical to served/good
    assert download(NAME, tmp_path / "dest", mirrors=[closed_url]) == tmp_path / "dest"


# --- the real dataset -----------------------------------------------------------------------

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_loads_with_known_shapes():
    x_train, y_train, x_test, y_test = load_dataset("fashion-mnist", data_dir=DEBIAN_FASHION_MNIST, download=False)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.99
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class (Xiao et al. 2017).
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), np.full(10, 1000))
