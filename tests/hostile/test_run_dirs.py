"""Hostile run directories and inputs for `evaluate`, `predict` and `fit --resume`: files missing,
damaged or edited (model.json, config.yaml, safetensors, checkpoints), and predict inputs and
outputs that do not fit the model. Each case damages a fresh copy of a finished run."""
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors.numpy import save_file

from hostile.harness import X, Case, expect_refusal, params

pytestmark = pytest.mark.usefixtures("single_thread")


def edit_json(name: str, change) -> callable:
    """A damage: model.json (or another JSON file) as `change(parsed)` returns it."""
    def damage(run: Path) -> None:
        path = run / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return damage


def edit_yaml(change) -> callable:
    def damage(run: Path) -> None:
        path = run / "config.yaml"
        path.write_text(yaml.safe_dump(change(yaml.safe_load(path.read_text()))))
    return damage


def write(name: str, content: str | bytes) -> callable:
    def damage(run: Path) -> None:
        path = run / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def replace_by_directory(name: str) -> callable:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()
    return damage


def truncate(name: str, keep: float) -> callable:
    def damage(run: Path) -> None:
        for path in sorted(run.glob(name)):
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * keep)])
    return damage


def weights(change) -> callable:
    """model.safetensors rewritten with change(dict of numpy arrays)."""
    def damage(run: Path) -> None:
        from safetensors.numpy import load_file
        path = run / "model.safetensors"
        save_file(change(load_file(str(path))), str(path))
    return damage


def with_model(**changes):
    def change(description: dict) -> dict:
        description["model"] = {**description["model"], **changes}
        return description
    return change


def with_field(field: str, value):
    def change(description: dict) -> dict:
        description[field] = value
        return description
    return change


def evaluate(case_id: str, damage, match: str, *flags, kind: str = "mlp") -> Case:
    def build(ws) -> list:
        run = ws.run(kind)
        damage(run)
        return ["evaluate", run, "--device", "cpu", *flags]
    return Case(case_id, build, match)


def predict(case_id: str, make_input, match: str, *flags, kind: str = "mlp",
            output=None) -> Case:
    """predict with the input make_input(ws) writes; output(ws, run, input) picks --output."""
    def build(ws) -> list:
        run = ws.run(kind)
        source = make_input(ws)
        target = output(ws, run, source) if output else ws.path("p.npy")
        return ["predict", run, "--input", source, "--output", target, "--device", "cpu", *flags]
    return Case(case_id, build, match)


def resume(case_id: str, damage, match: str, *flags) -> Case:
    def build(ws) -> list:
        run = ws.run("mlp")
        damage(run)
        return ["fit", "--resume", run, "--progress", "none", "--device", "cpu", *flags]
    return Case(case_id, build, match)


def nothing(run: Path) -> None:
    pass


def npy_input(array) -> callable:
    return lambda ws: ws.npy("x.npy", np.asarray(array))


def csv_input(text: str) -> callable:
    return lambda ws: ws.text("new.csv", text)


def huge_header_safetensors(run: Path) -> None:
    (run / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")


def garbage_header_safetensors(run: Path) -> None:
    (run / "model.safetensors").write_bytes(struct.pack("<Q", 8) + b"not json" + b"\0" * 64)


def junk_checkpoints(run: Path) -> None:
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    (run / "checkpoints" / "notes.txt").write_text("keep me\n")
    (run / "checkpoints" / "ckpt-latest.pt").write_bytes(b"not a checkpoint")


def checkpoints_as_file(run: Path) -> None:
    for path in (run / "checkpoints").iterdir():
        path.unlink()
    (run / "checkpoints").rmdir()
    (run / "checkpoints").write_text("moved to S3\n")


def wrong_checksum(run: Path) -> None:
    for path in (run / "checkpoints").glob("*.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({key: "0" * 64 if isinstance(value, str) and len(value) == 64
                                    else value for key, value in record.items()}))


ROWS = [f"{a:.3f},{b:.3f},{c:.3f},{d:.3f}" for a, b, c, d in X[:4]]

EVALUATE = [
    evaluate("evaluate-without-weights", lambda run: (run / "model.safetensors").unlink(), "model.safetensors"),
    evaluate("evaluate-without-model-json", lambda run: (run / "model.json").unlink(), "model.json"),
    evaluate("evaluate-without-config", lambda run: (run / "config.yaml").unlink(), "config.yaml"),
    evaluate("evaluate-model-json-garbage", write("model.json", "{not json"), "model.json"),
    evaluate("evaluate-model-json-empty", write("model.json", ""), "model.json"),
    evaluate("evaluate-model-json-list", write("model.json", "[]"), "model.json"),
    evaluate("evaluate-model-json-deep-nesting", write("model.json", "[" * 100000 + "]" * 100000), "model.json"),
    evaluate("evaluate-model-json-too-large", write("model.json", " " * (2 << 20) + "{}"), "model.json is larger than"),
    evaluate("evaluate-model-json-directory", replace_by_directory("model.json"), "model.json is not a regular file"),
    evaluate("evaluate-model-json-format-2", edit_json("model.json", with_field("format", 2)), "format"),
    evaluate("evaluate-unknown-model-name", edit_json("model.json", with_model(name="resnet50")), "resnet50"),
    evaluate("evaluate-model-options-list", edit_json("model.json", with_model(options=[4])), "field 'model' must be"),
    evaluate("evaluate-hidden-astronomical", edit_json("model.json", with_model(options={"hidden": [10**12]})),
             "model.json"),
    evaluate("evaluate-hidden-text", edit_json("model.json", with_model(options={"hidden": "wide"})), "model.json"),
    evaluate("evaluate-unknown-task", edit_json("model.json", with_field(
        "task", {"kind": "clustering", "n_outputs": 3, "loss": "categorical_crossentropy"})), "field 'task' must be"),
    evaluate("evaluate-n-outputs-text", edit_json("model.json", with_field(
        "task", {"kind": "multiclass", "n_outputs": "3", "loss": "categorical_crossentropy"})), "field 'task' must be"),
    evaluate("evaluate-input-shape-text", edit_json("model.json", with_field("input_shape", "4")), "field 'input_shape' must be"),
    evaluate("evaluate-unknown-metric", edit_json("model.json", with_field("metrics", ["f1"])), "field 'metrics' must be"),
    evaluate("evaluate-weights-truncated", truncate("model.safetensors", 0.5), "cannot read weights"),
    evaluate("evaluate-weights-zero-bytes", write("model.safetensors", b""), "cannot read weights"),
    evaluate("evaluate-weights-huge-header", huge_header_safetensors, "cannot read weights"),
    evaluate("evaluate-weights-garbage-header", garbage_header_safetensors, "cannot read weights"),
    evaluate("evaluate-weights-directory", replace_by_directory("model.safetensors"), "model.safetensors is not a regular file"),
    evaluate("evaluate-weights-wrong-shapes", weights(lambda state: {
        name: np.zeros((8,) + array.shape[1:], array.dtype) for name, array in state.items()}), "do not fit"),
    evaluate("evaluate-weights-missing-tensor", weights(lambda state: {
        name: array for name, array in state.items() if name != "3.bias"}), "do not fit"),
    evaluate("evaluate-weights-extra-tensor", weights(lambda state: {
        **state, "4.weight": np.zeros((3, 3), np.float32)}), "do not fit"),
    evaluate("evaluate-config-garbage", write("config.yaml", "data: [unclosed\n"), "config.yaml is malformed"),
    evaluate("evaluate-config-empty", write("config.yaml", ""), "config.yaml"),
    evaluate("evaluate-config-unknown-key", edit_yaml(lambda config: {**config, "colour": "red"}), "unknown option(s) colour"),
    evaluate("evaluate-config-data-number", edit_yaml(lambda config: {**config, "data": 123}), "unknown data '123'"),
    evaluate("evaluate-config-data-list", edit_yaml(lambda config: {**config, "data": ["a.npz"]}), "a.npz"),
    evaluate("evaluate-config-data-missing", edit_yaml(lambda config: {**config, "data": "/nonexistent/d.npz"}),
             "/nonexistent/d.npz"),
    evaluate("evaluate-batch-size-zero", nothing, "batch_size must be an integer >= 1", "--batch-size", "0"),
    evaluate("evaluate-batch-size-negative", nothing, "batch_size must be an integer >= 1", "--batch-size=-16"),
    evaluate("evaluate-device-gpu", nothing, "unknown device 'gpu'", "--device", "gpu"),
    Case("evaluate-run-dir-is-a-file", lambda ws: ["evaluate", ws.text("run.txt", "a run\n")], "run.txt is a file, not a run directory"),
    Case("evaluate-data-missing", lambda ws: ["evaluate", ws.run(), "--data", ws.path("gone.npz")], "gone.npz not found"),
    Case("evaluate-data-other-features", lambda ws: [
        "evaluate", ws.run(), "--data", ws.npz("five.npz", x_train=np.zeros((6, 5), np.float32),
                                               y_train=np.zeros(6, np.int64))],
         "samples have shape (5,) but the model was built for (4,)"),
    Case("evaluate-table-without-its-target", lambda ws: [
        "evaluate", ws.run("csv"), "--data", ws.text("t.csv", "f0,f1,f2,f3\n" + "\n".join(ROWS) + "\n")],
         "column 'label' not found in t.csv"),
]

PREDICT = [
    predict("predict-one-sample-without-batch-axis", npy_input(X[0]), "but the model was built for (4,)"),
    predict("predict-scalar-input", npy_input(np.float32(1.0)), "x.npy holds a single number"),
    predict("predict-five-features", npy_input(np.zeros((3, 5), np.float32)), "samples have shape (5,)"),
    predict("predict-features-as-2x2", npy_input(X[:3].reshape(3, 2, 2)), "samples have shape (2, 2)"),
    predict("predict-nan-input", npy_input(np.where(np.eye(4, dtype=bool), np.nan, 1.0).astype(np.float32)), "contains NaN"),
    predict("predict-inf-input", npy_input(np.full((2, 4), np.inf, np.float32)), "infinite"),
    predict("predict-string-input", npy_input(X[:3].astype(str)), "has dtype <U"),
    predict("predict-text-file-input", lambda ws: ws.text("x.txt", "1 2 3 4\n"), "cannot read input file"),
    predict("predict-directory-named-npy", lambda ws: ws.dir("x.npy"), "x.npy holds no"),
    predict("predict-output-below-a-file", npy_input(X[:3]), "notes.txt/p.npy",
            output=lambda ws, run, source: ws.text("notes.txt", "mine\n") / "p.npy"),
    predict("predict-output-is-the-input", npy_input(X[:3]), "x.npy",
            output=lambda ws, run, source: source),
    predict("predict-output-over-the-weights", npy_input(X[:3]), "model.safetensors",
            output=lambda ws, run, source: run / "model.safetensors"),
    predict("predict-batch-size-zero", npy_input(X[:3]), "batch_size must be an integer >= 1", "--batch-size", "0"),
    predict("predict-table-missing-a-feature", csv_input("f0,f1,f3\n1,2,3\n"), "column 'f2' not found in new.csv", kind="csv"),
    predict("predict-table-word-in-a-feature", csv_input("f0,f1,f2,f3\n" + ROWS[0] + "\n1,abc,2,3\n"),
            "column 'f1' holds 'abc'", kind="csv"),
    predict("predict-table-list-column", lambda ws: _parquet(ws, {
        "f0": pa.array([1.0]), "f1": pa.array([[1.0]]), "f2": pa.array([1.0]), "f3": pa.array([1.0])}),
        "column 'f1' in new.parquet holds list", kind="csv"),
    predict("predict-table-header-only", csv_input("f0,f1,f2,f3\n"), "new.csv holds a header but no rows", kind="csv"),
    predict("predict-table-for-array-run", csv_input("a,b,c\n1,2,3\n"), "samples have shape (3,)"),
]

RESUME = [
    resume("resume-without-checkpoints", lambda run: [p.unlink() for p in (run / "checkpoints").iterdir()],
           "nothing to resume"),
    resume("resume-junk-checkpoints", junk_checkpoints, "checkpoints"),
    resume("resume-checkpoints-is-a-file", checkpoints_as_file, "holds no checkpoints"),
    resume("resume-truncated-checkpoint", truncate("checkpoints/*.pt", 0.5), "is incomplete or corrupt"),
    resume("resume-checkpoint-record-garbage", lambda run: [p.write_text("{oops") for p in
                                                             (run / "checkpoints").glob("*.json")], "is incomplete or corrupt"),
    resume("resume-checkpoint-wrong-checksum", wrong_checksum, "is incomplete or corrupt"),
    resume("resume-config-list", write("config.yaml", "- epochs\n"), "config.yaml must hold a mapping"),
    resume("resume-config-epochs-text", edit_yaml(lambda config: {**config, "epochs": "many"}), "config.yaml must be an integer, got 'many'"),
    resume("resume-config-batch-size-word", edit_yaml(lambda config: {**config, "batch_size": "huge"}), "huge"),
    resume("resume-config-lr-text", edit_yaml(lambda config: {**config, "lr": "fast"}), "config.yaml must be a number, got 'fast'"),
    Case("resume-missing-directory", lambda ws: ["fit", "--resume", ws.path("gone")], "gone is not a batchtrain run directory"),
    Case("resume-a-file", lambda ws: ["fit", "--resume", ws.text("run.yaml", "epochs: 1\n")], "not the file"),
]


def _parquet(ws, columns: dict) -> Path:
    path = ws.path("new.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


# case id -> why it fails today (strict xfail: delete the entry once it passes)
KNOWN_FAILURES = {
}


@pytest.mark.parametrize("case", params(EVALUATE + PREDICT + RESUME, KNOWN_FAILURES))
def test_bad_run_directory_or_input_is_refused_cleanly(case, ws, capsys):
    expect_refusal(capsys, ws, case)
