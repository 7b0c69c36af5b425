"""Hostile `fit --config` files: wrong types, nested structures, lists where scalars go, huge
values, empty and binary files, wrong extensions, directories. The flags give valid tiny data; the
file sets only what the case is about."""
import pytest

from hostile.harness import Case, expect_refusal, params

pytestmark = pytest.mark.usefixtures("single_thread")


def config(case_id: str, name: str, content: str | bytes, match: str) -> Case:
    """fit --config NAME holding `content`, with valid data and a fast model given as flags,
    except the flag of the option the file sets (a flag would override the file)."""
    def build(ws) -> list:
        path = ws.bytes(name, content if isinstance(content, bytes) else content.encode())
        flags = {"--data": ws.npz(), "--model": "mlp", "--device": "cpu", "--output": ws.path("run")}
        text = content if isinstance(content, str) else ""
        kept = [item for flag, value in flags.items() if not text.startswith(flag[2:] + ":")
                for item in (flag, value)]
        return ["fit", "--config", path, *kept, "--progress", "none"]
    return Case(case_id, build, match)


def config_dir(ws) -> list:
    return ["fit", "--config", ws.dir("options.yaml"), "--output", ws.path("run")]


CASES = [
    # files that are not a config at all
    config("json-empty", "c.json", "", "c.json is malformed"),
    config("json-trailing-comma", "c.json", '{"epochs": 1,}', "c.json is malformed"),
    config("yaml-in-json-file", "c.json", "epochs: 1\n", "c.json is malformed"),
    config("yaml-in-toml-file", "c.toml", "epochs: 1\n", "c.toml is malformed"),
    config("yaml-nul-bytes", "c.yaml", b"epochs: 1\n\x00\x00\x00\n", "c.yaml is malformed"),
    config("yaml-tab-indent", "c.yaml", "epochs:\n\t1\n", "c.yaml is malformed"),
    config("yaml-multi-document", "c.yaml", "epochs: 1\n---\nepochs: 2\n", "c.yaml is malformed"),
    config("no-suffix", "options", "epochs: 1\n", "must end in .yaml, .yml, .toml or .json"),
    config("suffix-txt", "options.txt", "epochs: 1\n", "must end in .yaml, .yml, .toml or .json"),
    Case("config-is-a-directory", config_dir, "options.yaml is not a regular file"),
    # not a mapping
    config("yaml-top-level-number", "c.yaml", "5\n", "must hold a mapping of option: value, got int"),
    config("yaml-forgot-colon", "c.yaml", "epochs 1\n", "must hold a mapping of option: value, got str"),
    config("json-top-level-list", "c.json", "[1]", "must hold a mapping of option: value, got list"),
    config("json-top-level-string", "c.json", '"epochs"', "must hold a mapping of option: value, got str"),
    config("toml-section", "c.toml", "[fit]\nepochs = 1\n", "unknown option(s) fit"),
    config("toml-array-of-tables", "c.toml", "[[epochs]]\n", "epochs in config file"),
    # keys
    config("yaml-null-key", "c.yaml", "~: 5\n", "unknown option(s) None"),
    config("yaml-integer-key", "c.yaml", "1: 2\n", "unknown option(s) 1"),
    config("yaml-accented-key", "c.yaml", "épochs: 3\n", "unknown option(s) épochs"),
    config("launcher-key-nproc", "c.yaml", "nproc: 2\n", "unknown option(s) nproc"),
    config("yaml-long-key", "c.yaml", "k" * 5000 + ": 1\n", "c.yaml"),
    config("yaml-many-unknown-keys", "c.yaml", "".join(f"option_{i}: 1\n" for i in range(300)),
           "unknown option"),
    # values of the wrong shape or type
    config("yaml-list-for-epochs", "c.yaml", "epochs: [1, 2]\n", "epochs in config file"),
    config("yaml-mapping-for-lr", "c.yaml", "lr: {value: 0.01}\n", "lr in config file"),
    config("yaml-nested-hidden", "c.yaml", "hidden: [[64, 32]]\n", "hidden in config file"),
    config("yaml-mapping-for-hidden", "c.yaml", "hidden: {first: 64}\n", "hidden in config file"),
    config("yaml-set-for-hidden", "c.yaml", "hidden: !!set {64: null}\n", "hidden in config file"),
    config("yaml-bool-epochs", "c.yaml", "epochs: true\n", "epochs in config file"),
    config("yaml-date-seed", "c.yaml", "seed: 2026-12-01\n", "seed in config file"),
    config("yaml-null-batch-size", "c.yaml", "batch_size: null\n", "batch_size in config file"),
    config("yaml-null-data", "c.yaml", "data: ~\n", "data in config file"),
    config("yaml-string-overwrite", "c.yaml", 'overwrite: "please"\n', "overwrite in config file"),
    config("yaml-string-float-epochs", "c.yaml", 'epochs: "3.0"\n', "epochs in config file"),
    config("yaml-list-for-output", "c.yaml", "output: [a, b]\n", "output"),
    config("yaml-list-for-data", "c.yaml", "data: [a.npz, b.npz]\n", "data in config file"),
    config("yaml-mapping-for-device", "c.yaml", "device: {type: cpu}\n", "device in config file"),
    config("yaml-number-for-model", "c.yaml", "model: 123\n", "unknown model '123'"),
    config("yaml-binary-for-data", "c.yaml", "data: !!binary aGVsbG8=\n", "data in config file"),
    config("yaml-mapping-for-schedule", "c.yaml", "lr_schedule: {cosine: 0.01}\n", "lr_schedule in config file"),
    config("yaml-bool-memory-budget", "c.yaml", "memory_budget: true\n", "memory budget 'True' is not a size"),
    config("toml-datetime-seed", "c.toml", "seed = 1979-05-27T07:32:00Z\n", "seed in config file"),
    config("toml-hidden-semicolons", "c.toml", 'hidden = "64;32"\n', "hidden in config file"),
    config("json-nan-validation-split", "c.json", '{"validation_split": NaN}', "validation_split"),
    config("json-infinite-epochs", "c.json", '{"epochs": 1e999}', "epochs in config file"),
    config("yaml-features-with-npz", "c.yaml", "features: [a, b]\n", "--features applies to data streamed"),
    config("yaml-long-optimizer", "c.yaml", "optimizer: " + "a" * 5000 + "\n", "optimizer in config file"),
    # sizes a parser cannot take
    config("json-huge-integer", "c.json", '{"seed": 1' + "0" * 5000 + "}", "c.json"),
    config("yaml-huge-integer", "c.yaml", "seed: 1" + "0" * 5000 + "\n", "c.yaml"),
    config("toml-huge-integer", "c.toml", "seed = 1" + "0" * 5000 + "\n", "c.toml"),
    config("json-deep-nesting", "c.json", '{"hidden": ' + "[" * 50000 + "]" * 50000 + "}", "c.json"),
    config("yaml-deep-nesting", "c.yaml", "hidden: " + "[" * 5000 + "]" * 5000 + "\n", "c.yaml"),
    config("toml-deep-nesting", "c.toml", "hidden = " + "[" * 5000 + "]" * 5000 + "\n", "c.toml"),
]


# case id -> why it fails today (strict xfail: delete the entry once it passes)
KNOWN_FAILURES = {
}


@pytest.mark.parametrize("case", params(CASES, KNOWN_FAILURES))
def test_bad_config_file_is_refused_cleanly(case, ws, capsys):
    expect_refusal(capsys, ws, case)
