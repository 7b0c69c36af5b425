"""Hostile data files for `batchtrain fit --data`: .npz archives, .npy pairs and hand-crafted
headers, Parquet and CSV tables, each wrong in one way. Everything else is valid and tiny."""
import io
import os
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hostile.harness import X, Y, Case, expect_refusal, params

pytestmark = pytest.mark.usefixtures("single_thread")


def npz(case_id: str, arrays: dict, match: str) -> Case:
    return Case(case_id, lambda ws: ws.fit(data=ws.npz("data.npz", **arrays)), match)


def npy_pair(case_id: str, x, y, match: str) -> Case:
    """x.npy and y.npy; x or y may be bytes, written as they are (a hand-crafted file)."""
    def build(ws) -> list:
        for name, content in (("x.npy", x), ("y.npy", y)):
            if isinstance(content, bytes):
                ws.bytes(name, content)
            else:
                ws.npy(name, content)
        return ws.fit(data=ws.path("x.npy"))
    return Case(case_id, build, match)


def npy_header(header: dict | str, data: bytes = b"", magic: bytes = b"\x93NUMPY\x01\x00") -> bytes:
    """A version-1 .npy file with this header (a dict, or text written as it is) and data."""
    text = header if isinstance(header, str) else repr(header)
    text += " " * (63 - (len(magic) + 2 + len(text)) % 64) + "\n"  # pad to 64 bytes, as numpy
    return magic + len(text).to_bytes(2, "little") + text.encode("latin1") + data


def table(case_id: str, columns: dict, match: str, *flags: str,
          name: str = "t.parquet") -> Case:
    """A Parquet file of these columns (pyarrow arrays or lists), --target label unless flags
    say otherwise."""
    def build(ws) -> list:
        path = ws.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        return ws.fit("--target", "label", *flags, data=path)
    return Case(case_id, build, match)


def csv(case_id: str, text: str, match: str, *flags: str) -> Case:
    return Case(case_id, lambda ws: ws.fit("--target", "label", *flags, data=ws.text("d.csv", text)),
                match)


def good_columns(**changes) -> dict:
    columns = {f"f{i}": pa.array(X[:, i]) for i in range(4)} | {"label": pa.array(Y)}
    return {**columns, **changes}


def good_csv(rows: list[str] | None = None, header: str = "f0,f1,label") -> str:
    body = rows if rows is not None else [f"{a:.3f},{b:.3f},{label}" for (a, b, *_), label in zip(X, Y)]
    return header + "\n" + "\n".join(body) + "\n"


def zip_member(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
        archive.writestr("y_train.npy", _npy_bytes(Y))
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def parquet_bytes(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def raw(case_id: str, name: str, content: bytes, match: str, *flags: str) -> Case:
    return Case(case_id, lambda ws: ws.fit(*flags, data=ws.bytes(name, content)), match)


def directory(case_id: str, files: dict, match: str, *flags: str) -> Case:
    """A data directory `d` of these files: name -> array (.npy), bytes, text, or None (a
    subdirectory)."""
    def build(ws) -> list:
        root = ws.dir("d")
        for name, content in files.items():
            if content is None:
                ws.dir(f"d/{name}")
            elif isinstance(content, np.ndarray):
                ws.npy(f"d/{name}", content)
            elif isinstance(content, bytes):
                ws.bytes(f"d/{name}", content)
            else:
                ws.text(f"d/{name}", content)
        return ws.fit(*flags, data=root)
    return Case(case_id, build, match)


def dev_zero_npy(ws) -> list:
    os.symlink("/dev/zero", ws.path("x.npy"))
    ws.npy("y.npy", Y)
    return ws.fit(data=ws.path("x.npy"))


def npy_named_directory(ws) -> list:
    ws.dir("x.npy")
    ws.npy("y.npy", Y)
    return ws.fit(data=ws.path("x.npy"))


F4 = X.astype("<f4").tobytes()

NPZ = [
    npz("npz-x-scalar", {"x_train": np.float32(1.0), "y_train": Y}, "x_train"),
    npz("npz-y-scalar", {"x_train": X, "y_train": np.int64(1)}, "y_train"),
    npz("npz-y-three-dimensional", {"x_train": X, "y_train": np.zeros((12, 2, 2), np.int64)}, "targets of shape (N, 2, 2)"),
    npz("npz-x-zero-features", {"x_train": np.zeros((12, 0), np.float32), "y_train": Y}, "x_train"),
    npz("npz-empty-arrays", {"x_train": X[:0], "y_train": Y[:0]}, "x_train is empty (0 samples)"),
    npz("npz-x-strings", {"x_train": X.astype(str), "y_train": Y}, "data.npz has dtype <U"),
    npz("npz-y-bytes", {"x_train": X, "y_train": Y.astype("S1")}, "data.npz has dtype |S1"),
    npz("npz-x-datetimes", {"x_train": np.zeros((12, 4), "datetime64[s]"), "y_train": Y}, "datetime64"),
    npz("npz-x-structured", {"x_train": np.zeros(12, [("a", "f4"), ("b", "f4")]), "y_train": Y}, "data.npz has dtype [("),
    npz("npz-y-longer", {"x_train": X, "y_train": np.arange(13) % 3}, "x_train has 12 samples but y_train has 13"),
    npz("npz-only-test-split", {"x_test": X, "y_test": Y}, "has no array 'x_train'"),
    npz("npz-uppercase-keys", {"X_train": X, "Y_train": Y}, "has no array 'x_train'"),
    npz("npz-test-x-without-y", {"x_train": X, "y_train": Y, "x_test": X}, "both x_test and y_test"),
    npz("npz-x-beyond-float32", {"x_train": np.full((12, 4), 1e300), "y_train": Y}, "x_train contains NaN or infinite"),
    raw("npz-member-without-suffix", "data.npz", zip_member("x_train", b"1,2,3\n"), "data.npz is not a .npy array"),
    raw("npz-member-claims-huge-shape", "data.npz",
        zip_member("x_train.npy", npy_header({"descr": "<f4", "fortran_order": False,
                                              "shape": (10**12, 4)}, F4)), "data.npz"),
    raw("npz-zero-bytes", "data.npz", b"", "data.npz: not a valid .npz archive"),
    Case("npz-directory", lambda ws: ws.fit(data=ws.dir("data.npz")), "data.npz holds no"),
]

NPY = [
    npy_pair("npy-fortran-order", np.asfortranarray(X), Y, "Fortran order"),
    npy_pair("npy-bad-magic", b"\x93NUMPZ\x01\x00" + b" " * 120, Y, "x.npy: not a complete .npy file"),
    npy_pair("npy-huge-shape-claim", npy_header({"descr": "<f4", "fortran_order": False,
                                                 "shape": (10**12, 4)}, F4), Y, "header promises 16000000000128"),
    npy_pair("npy-unknown-version", npy_header({"descr": "<f4", "fortran_order": False, "shape": (12, 4)},
                                               F4, magic=b"\x93NUMPY\x09\x00"), Y, "x.npy: not a complete .npy file"),
    npy_pair("npy-header-without-shape", npy_header({"descr": "<f4", "fortran_order": False}, F4), Y,
             "x.npy: not a complete .npy file"),
    npy_pair("npy-header-not-a-dict", npy_header("{'descr': '<f4', 'shape': (12, 4", F4), Y, "x.npy"),
    npy_pair("npy-header-shape-of-words", npy_header("{'descr': '<f4', 'fortran_order': False, "
                                                     "'shape': ('twelve', 4)}", F4), Y, "shape is not valid"),
    npy_pair("npy-header-unknown-dtype", npy_header({"descr": "<q7", "fortran_order": False,
                                                     "shape": (12, 4)}, F4), Y, "not a valid dtype descriptor"),
    npy_pair("npy-x-strings", X.astype(str), Y, "x.npy has dtype <U"),
    npy_pair("npy-y-strings", X, np.array(["a", "b", "c"] * 4), "y.npy has dtype <U1"),
    npy_pair("npy-y-three-dimensional", X, np.zeros((12, 2, 2), np.int64), "targets of shape (N, 2, 2)"),
    npy_pair("npy-x-scalar", np.float32(1.0), Y, "x.npy holds a single number"),
    npy_pair("npy-zero-rows", X[:0], Y[:0], "hold no rows"),
    npy_pair("npy-zero-bytes", b"", b"", "x.npy: not a complete .npy file"),
    npy_pair("npy-random-bytes", np.random.default_rng(1).bytes(256), Y, "x.npy: not a complete .npy file"),
    npy_pair("npy-y-nan", X, np.where(np.arange(12) == 5, np.nan, 1.0), "row 5: a target is NaN"),
    Case("npy-targets-passed-as-data", lambda ws: ws.fit(data=ws.npy("y.npy", Y)), "name the features file x*.npy"),
    Case("npy-symlink-to-dev-zero", dev_zero_npy, "regular file"),
    Case("npy-directory-named-x-npy", npy_named_directory, "x.npy"),
    directory("npy-shard-without-targets", {"x-00000.npy": X, "y-00000.npy": Y, "x-00001.npy": X},
              "has no targets file y-00001.npy"),
    directory("npy-shard-is-a-directory", {"x-00000.npy": X, "y-00000.npy": Y, "x-00001.npy": None,
                                           "y-00001.npy": Y}, "x-00001.npy"),
    directory("npy-directory-of-text-files", {"notes.txt": "rows\n", "readme.md": "# data\n"},
              "holds no .npy, .parquet or .csv files"),
]

PARQUET = [
    table("parquet-target-missing", good_columns(), "column 'price' not found", "--target", "price"),
    table("parquet-no-target-given", good_columns(), "--target cannot be empty", "--target", ""),
    table("parquet-target-strings", good_columns(label=pa.array(["cat", "dog", "owl"] * 4)),
          "column 'label' in t.parquet holds string"),
    table("parquet-all-null-feature", good_columns(f2=pa.nulls(12, pa.float32())), "column 'f2' is empty"),
    table("parquet-list-feature", good_columns(f1=pa.array([[1.0, 2.0]] * 12)), "column 'f1' in t.parquet holds list"),
    table("parquet-struct-feature", good_columns(f1=pa.array([{"a": 1.0}] * 12)), "column 'f1' in t.parquet holds struct"),
    table("parquet-timestamp-feature", good_columns(f3=pa.array(np.arange(12).astype("datetime64[s]"))),
          "column 'f3' in t.parquet holds timestamp"),
    table("parquet-dictionary-feature", good_columns(f0=pa.array(["a", "b", "c"] * 4).dictionary_encode()),
          "column 'f0' in t.parquet holds dictionary"),
    table("parquet-binary-feature", good_columns(f0=pa.array([b"\x00\x01"] * 12)), "column 'f0' in t.parquet holds binary"),
    table("parquet-zero-rows", {"f0": pa.array([], pa.float32()), "label": pa.array([], pa.int64())}, "t.parquet holds no rows"),
    table("parquet-only-target", {"label": pa.array(Y)}, "has no feature columns"),
    table("parquet-unknown-feature", good_columns(), "column 'nope' not found in t.parquet", "--features", "f0,nope"),
    table("parquet-target-as-feature", good_columns(), "is both the target and a feature", "--features", "f0,label"),
    table("parquet-features-empty", good_columns(), "--features", "--features", ""),
    table("parquet-target-infinite", good_columns(label=pa.array(np.where(Y == 1, np.inf, 0.5))), "infinite in column 'label'"),
    table("parquet-target-null", good_columns(label=pa.array([0, 1, None] * 4, pa.int64())), "column 'label' is empty"),
    raw("parquet-truncated-footer", "t.parquet", parquet_bytes(good_columns())[:-6], "t.parquet as Parquet", "--target", "label"),
    raw("parquet-zero-bytes", "t.parquet", b"", "t.parquet as Parquet", "--target", "label"),
    raw("parquet-random-bytes", "t.parquet", np.random.default_rng(2).bytes(512), "t.parquet as Parquet", "--target", "label"),
    raw("parquet-holding-csv-text", "t.parquet", good_csv().encode(), "t.parquet as Parquet", "--target", "label"),
    directory("parquet-shards-with-different-columns",
              {"a.parquet": parquet_bytes(good_columns()),
               "b.parquet": parquet_bytes({"f0": pa.array(X[:, 0]), "label": pa.array(Y)})},
              "missing from b.parquet", "--target", "label"),
]

CSV = [
    csv("csv-header-only", "f0,f1,label\n", "d.csv holds a header but no rows"),
    csv("csv-missing-target", good_csv(header="f0,f1,class"), "column 'label' not found"),
    csv("csv-word-in-first-row", good_csv(["1.0,abc,0"] + good_csv().splitlines()[2:]), "column 'f1' holds 'abc'"),
    csv("csv-empty-cell", good_csv(["1.0,,0", "2.0,3.0,1"]), "column 'f1' is empty"),
    csv("csv-extra-field", good_csv(["1.0,2.0,0", "1.0,2.0,0,9", "2.0,3.0,1"]), "row 1: 4 fields where the header has 3"),
    csv("csv-trailing-comma-every-row", good_csv([f"{i}.0,{i}.5,{i % 3}," for i in range(12)]), "row 0: 4 fields where the header has 3"),
    csv("csv-very-long-line", good_csv(["1.0," + "9" * 3_000_000 + ",0", "2.0,3.0,1"]), "row 0"),
    csv("csv-zero-bytes", "", "d.csv is empty"),
    csv("csv-only-a-newline", "\n", "d.csv is empty"),
    csv("csv-nan-text", good_csv(["1.0,nan,0", "2.0,3.0,1"]), "column 'f1'"),
    csv("csv-inf-text", good_csv(["1.0,2.0,0", "2.0,-inf,1"]), "infinite in column 'f1'"),
    csv("csv-number-beyond-float", good_csv(["1.0,1e999,0", "2.0,3.0,1"]), "infinite in column 'f1'"),
    csv("csv-thousands-separator", good_csv(['1.0,"1,000",0', "2.0,3.0,1"]), "column 'f1' holds '1,000'"),
    csv("csv-word-labels", good_csv(["1.0,2.0,cat", "2.0,3.0,dog"]), "column 'label' holds 'cat'"),
    csv("csv-comment-line-first", "# exported 2026-12-01\n" + good_csv(), "header has 1"),
    csv("csv-html-error-page", "<html><body><h1>502 Bad Gateway</h1></body></html>\n", "holds a header but no rows"),
    csv("csv-header-repeated-inside", good_csv() + good_csv(), "holds 'f0'"),
    csv("csv-unterminated-quote", good_csv(['"1.0,2.0,0', "2.0,3.0,1"]), "d.csv row 0"),
    csv("csv-target-empty-last-row", good_csv(["1.0,2.0,0", "2.0,3.0,"]), "column 'label' is empty"),
    directory("csv-shards-with-different-headers", {"a.csv": good_csv(), "b.csv": good_csv(header="f0,f9,label")},
              "b.csv has the header 'f0,f9,label'", "--target", "label"),
]


# case id -> why it fails today (strict xfail: delete the entry once it passes)
KNOWN_FAILURES: dict[str, str] = {}


@pytest.mark.parametrize("case", params(NPZ + NPY + PARQUET + CSV, KNOWN_FAILURES))
def test_bad_data_file_is_refused_cleanly(case, ws, capsys):
    expect_refusal(capsys, ws, case)
