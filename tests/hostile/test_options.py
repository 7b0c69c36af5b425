"""Hostile option values for `batchtrain fit`, `probe` and `download`: wrong types, ranges, empty
text, huge numbers, unicode, malformed specs. Data, model and output are valid and tiny, so each
case fails on its one bad value (or, wrongly, trains in a second)."""
import pytest

from hostile.harness import Case, expect_refusal, params

pytestmark = pytest.mark.usefixtures("single_thread")


def flag(case_id: str, *flags: str, match: str) -> Case:
    """A fit on valid tiny data with `flags` appended (they override the defaults)."""
    return Case(case_id, lambda ws: ws.fit(*flags), match)


def without_hidden(case_id: str, *flags: str, match: str) -> Case:
    """A fit with `flags` and no --hidden (an mlp option other models reject)."""
    def build(ws) -> list:
        argv = ws.fit(*flags)
        at = argv.index("--hidden")
        return argv[:at] + argv[at + 2:]
    return Case(case_id, build, match)


def probe(case_id: str, *flags: str, match: str) -> Case:
    return Case(case_id, lambda ws: ["probe", "--data", ws.npz(), "--model", "mlp", "--device",
                                     "cpu", "--sizes", "2,4", "--warmup", "8", "--repeats", "1",
                                     "--output", ws.path("probe"), *flags], match)


FIT_FLAGS = [
    # counts and ranges
    flag("epochs-negative", "--epochs=-3", match="epochs must be >= 1, got -3"),
    flag("epochs-exponent", "--epochs", "1e3", match="--epochs must be an integer, got '1e3'"),
    flag("epochs-empty", "--epochs", "", match="--epochs cannot be empty"),
    flag("epochs-fraction", "--epochs", "2.5", match="--epochs must be an integer"),
    flag("validation-split-one", "--validation-split", "1", match="validation_split must be in [0, 1)"),
    flag("validation-split-nan", "--validation-split", "nan", match="validation_split must be in [0, 1), got nan"),
    flag("validation-split-percent", "--validation-split", "20%", match="--validation-split must be a number"),
    flag("validation-split-inf", "--validation-split", "inf", match="validation_split must be in [0, 1), got inf"),
    flag("seed-negative", "--seed=-1", match="seed must be in [0, 2**63)"),
    flag("seed-fraction", "--seed", "1.5", match="--seed must be an integer"),
    flag("seed-word", "--seed", "random", match="--seed must be an integer, got 'random'"),
    flag("keep-checkpoints-negative", "--keep-checkpoints=-2", match="keep_checkpoints must be >= 1"),
    flag("keep-checkpoints-word", "--keep-checkpoints", "all", match="--keep-checkpoints must be an integer"),
    flag("log-every-steps-negative", "--log-every-steps=-1", match="log_every_steps must be >= 0"),
    flag("log-every-steps-fraction", "--log-every-steps", "0.5", match="--log-every-steps must be an integer"),
    flag("shuffle-window-zero", "--shuffle-window", "0", match="shuffle_window must be >= 1"),
    flag("read-workers-zero", "--read-workers", "0", match="read_workers must be >= 1"),
    flag("max-physical-batch-negative", "--max-physical-batch=-8", match="max_physical_batch must be >= 1"),
    flag("max-physical-batch-fraction", "--max-physical-batch", "2.5", match="--max-physical-batch must be an integer"),
    flag("threads-negative", "--threads=-2", match="threads must be 'auto' or an integer >= 1"),
    flag("threads-empty", "--threads", "", match="--threads"),
    # learning rate and optimizer
    flag("lr-zero", "--lr", "0", match="lr must be"),
    flag("lr-negative", "--lr=-0.1", match="lr must be"),
    flag("lr-comma-decimal", "--lr", "0,01", match="--lr must be a number, got '0,01'"),
    flag("lr-empty", "--lr", "", match="--lr cannot be empty"),
    flag("momentum-word", "--momentum", "high", match="--momentum must be a number"),
    flag("momentum-nine", "--optimizer", "sgd", "--momentum", "9", match="momentum must be in [0, 1), got 9.0"),
    flag("momentum-with-adam", "--optimizer", "adam", "--momentum", "0.9", match="momentum applies to sgd and rmsprop, not adam"),
    flag("optimizer-case", "--optimizer", "Adam", match="--optimizer must be one of"),
    flag("optimizer-unicode", "--optimizer", "adаm", match="--optimizer must be one of"),  # Cyrillic a
    flag("loss-unknown", "--loss", "hinge", match="unknown loss 'hinge'"),
    flag("loss-binary-on-three-classes", "--loss", "binary_crossentropy", match="binary labels must be 0 or 1"),
    flag("loss-regression-task-mismatch", "--task", "multiclass", "--loss", "mse", match="mse"),
    flag("task-binary-on-three-classes", "--task", "binary", match="binary labels must be 0 or 1"),
    flag("task-capitalised", "--task", "Multiclass", match="--task must be one of"),
    # model
    flag("hidden-zero", "--hidden", "0", match="hidden sizes must be >= 1"),
    flag("hidden-negative", "--hidden=-4", match="hidden sizes must be >= 1"),
    flag("hidden-word", "--hidden", "64,wide", match="--hidden must be a list of integers"),
    flag("hidden-fraction", "--hidden", "1.5", match="--hidden must be a list of integers"),
    flag("hidden-empty", "--hidden", "", match="--hidden"),
    flag("hidden-astronomical", "--hidden", "1000000000000000", match="hidden sizes"),
    flag("model-trailing-space", "--model", "mlp ", match="unknown model 'mlp '"),
    flag("model-empty", "--model", "", match="--model cannot be empty"),
    flag("model-not-callable", "--model", "math:pi", match="has no callable 'pi'"),
    without_hidden("model-factory-wrong-signature", "--model", "json:dumps", match="json:dumps"),
    without_hidden("model-factory-returns-non-module", "--model", "builtins:slice", match="'builtins:slice' returned slice, not a torch.nn.Module"),
    without_hidden("model-cnn-on-flat-features", "--model", "seed-cnn", match="seed-cnn needs image samples"),
    # batch-size specs
    flag("batch-negative", "--batch-size=-5", match="batch_size must be an integer >= 1, got -5"),
    flag("batch-empty", "--batch-size", "", match="--batch-size cannot be empty"),
    flag("batch-exponent", "--batch-size", "1e3", match="batch size '1e3' is not valid"),
    flag("batch-hex", "--batch-size", "0x80", match="batch size '0x80' is not valid"),
    flag("batch-superscript", "--batch-size", "12²", match="12²"),
    flag("batch-schedule-unordered", "--batch-size", "128,256@2e,512@1e", match="128,256@2e,512@1e"),
    flag("batch-schedule-no-start", "--batch-size", "128,256", match="needs a start"),
    flag("batch-schedule-zero-size", "--batch-size", "128,0@1e", match="batch_size must be an integer >= 1, got 0"),
    flag("batch-schedule-nan-epoch", "--batch-size", "128,256@nane", match="nan"),
    flag("batch-ramp-two-fields", "--batch-size", "ramp:64,512", match="expected 3 comma-separated values"),
    flag("batch-ramp-words", "--batch-size", "ramp:small,big,3e", match="ramp:small,big,3e"),
    flag("batch-double-zero-period", "--batch-size", "double:64,0e,1024", match="double:64,0e,1024"),
    flag("batch-double-cap-below-start", "--batch-size", "double:64,1e,32", match="double:64,1e,32"),
    flag("batch-double-zero-start", "--batch-size", "double:0,1e,1024", match="batch_size must be an integer >= 1, got 0"),
    flag("batch-double-four-fields", "--batch-size", "double:64,1e,1024,5", match="expected 3"),
    flag("batch-adaptive-unknown-rule", "--batch-size", "adaptive:magic", match="magic"),
    flag("batch-huge-text", "--batch-size", "x" * 5000, match="batch"),
    # learning-rate schedules
    flag("schedule-unknown", "--lr-schedule", "exponential", match="bad learning-rate schedule 'exponential'"),
    flag("schedule-step-semicolons", "--lr-schedule", "step:2e;4e", match="step:2e;4e"),
    flag("schedule-cosine-word", "--lr-schedule", "cosine:low", match="cosine:low"),
    flag("schedule-step-empty", "--lr-schedule", "step:", match="step:"),
    flag("schedule-plus-without-warmup", "--lr-schedule", "cosine+step:2e", match="cosine+step:2e"),
    flag("schedule-step-negative-gamma", "--lr-schedule", "step:2e:gamma=-1", match="gamma"),
    flag("schedule-step-unknown-option", "--lr-schedule", "step:2e:factor=0.5", match="factor"),
    flag("schedule-warmup-missing-then", "--lr-schedule", "warmup:1e+", match="warmup:1e+"),
    flag("schedule-warmup-negative", "--lr-schedule", "warmup:-1e+cosine", match="warmup:-1e+cosine"),
    flag("schedule-onecycle-pct-above-one", "--lr-schedule", "onecycle:pct_start=1.5", match="pct_start"),
    flag("schedule-onecycle-pct-zero", "--lr-schedule", "onecycle:pct_start=0", match="pct_start"),
    flag("schedule-constant-argument", "--lr-schedule", "constant:5", match="constant:5"),
    # memory budgets, checkpoints, choices
    flag("budget-zero", "--memory-budget", "0", match="memory budget must be positive"),
    flag("budget-negative-size", "--memory-budget=-1GiB", match="-1GiB"),
    flag("budget-unknown-unit", "--memory-budget", "8GiBs", match="memory budget '8GiBs' is not a size"),
    flag("budget-nan", "--memory-budget", "nan", match="memory budget 'nan' is not a size"),
    flag("budget-fraction-zero", "--memory-budget", "0.0", match="a fractional memory budget must be in (0, 1]"),
    flag("budget-one-byte", "--memory-budget", "1", match="more than the memory budget of 1 B"),
    flag("checkpoint-every-negative", "--checkpoint-every=-100", match="bad duration '-100'"),
    flag("checkpoint-every-negative-epochs", "--checkpoint-every=-0.5e", match="bad duration '-0.5e'"),
    flag("checkpoint-every-bare-e", "--checkpoint-every", "e", match="bad duration 'e'"),
    flag("checkpoint-every-nan", "--checkpoint-every", "nan", match="nan"),
    flag("checkpoint-every-inf-epochs", "--checkpoint-every", "infe", match="infe"),
    flag("prefetch-typo", "--prefetch", "threads", match="--prefetch must be one of"),
    flag("progress-typo", "--progress", "bars", match="--progress must be one of"),
    flag("device-gpu", "--device", "gpu", match="unknown device 'gpu'"),
    flag("device-cuda-word", "--device", "cuda:first", match="cuda:first"),
    flag("device-empty", "--device", "", match="--device cannot be empty"),
    flag("device-list", "--device", "cpu,cuda", match="cpu,cuda"),
    # options that do not apply, and where results go
    flag("target-with-npz", "--target", "label", match="--target applies to data streamed from disk"),
    flag("cache-with-npz", "--cache", "decoded", match="--cache applies to data streamed from disk"),
    flag("nproc-zero", "--nproc", "0", match="--nproc must be >= 1"),
    flag("max-restarts-negative", "--max-restarts=-1", match="--max-restarts must be >= 0"),
    flag("resume-and-overwrite", "--resume", "nowhere", "--overwrite", match="choose one"),
    Case("output-empty", lambda ws: ws.fit("--output", ""), match="--output"),
    Case("output-is-the-data-file", lambda ws: ws.fit("--output", ws.npz("d.npz"), data=ws.npz("d.npz")),
         match="is a file, not a directory"),
    Case("output-below-a-file", lambda ws: ws.fit("--output", ws.text("notes.txt", "mine\n") / "run"),
         match="cannot create run directory"),
    Case("data-empty", lambda ws: ws.fit(data=""), match="--data"),
    Case("data-unicode-missing", lambda ws: ws.fit(data=ws.path("données.npz")), match="données.npz"),
    Case("data-dir-is-a-file", lambda ws: ["fit", "--data", "mnist", "--no-download", "--data-dir",
                                           ws.text("mnist.txt", "not a dir\n"), "--output", ws.path("run")],
         match="mnist.txt"),
]

PROBE_AND_DOWNLOAD = [
    probe("probe-sizes-word", "--sizes", "32,big", match="--sizes"),
    probe("probe-sizes-empty", "--sizes", "", match="--sizes"),
    probe("probe-sizes-zero", "--sizes", "0,32", match="--sizes"),
    probe("probe-warmup-zero", "--warmup", "0", match="--warmup"),
    probe("probe-repeats-negative", "--repeats=-1", match="--repeats"),
    probe("probe-hidden-word", "--hidden", "64,wide", match="--hidden"),
    probe("probe-lr-negative", "--lr=-0.5", match="lr must be"),
    probe("probe-memory-budget-word", "--memory-budget", "plenty", match="plenty"),
    probe("probe-device-gpu", "--device", "gpu", match="unknown device 'gpu'"),
    Case("probe-streamed-data", lambda ws: ["probe", "--data", ws.text("t.csv", "a,label\n1,0\n"),
                                            "--model", "mlp", "--device", "cpu"], match="t.csv': not a built-in dataset"),
    Case("download-data-dir-is-a-file", lambda ws: ["download", "mnist", "--data-dir",
                                                    ws.text("here.txt", "mine\n")], match="here.txt: cannot create the download directory"),
    Case("download-unknown-name", lambda ws: ["download", "cifar-10"], match="cifar-10"),
]


# case id -> why it fails today (strict xfail: delete the entry once it passes)
KNOWN_FAILURES = {
}


@pytest.mark.parametrize("case", params(FIT_FLAGS + PROBE_AND_DOWNLOAD, KNOWN_FAILURES))
def test_bad_option_is_refused_cleanly(case, ws, capsys):
    expect_refusal(capsys, ws, case)
