"""Hostile inputs through the installed `batchtrain` script in a fresh process: what an in-process
call cannot see (a native abort at exit, a traceback printed by a worker or at shutdown, memory
that grows without bound) shows here as the exit status and the raw stderr. Each case costs a
process start (a few seconds), so there are few, marked slow."""
import os

import pytest

from hostile.harness import X, Y, Case, expect_refusal, params

pytestmark = pytest.mark.slow
HUNG_AFTER_S = 15  # a refusal takes 2-8 s here, most of it importing torch


def csv_rows(bad_row: int, rows: int = 400) -> str:
    lines = [f"{i % 7}.5,{i % 5}.25,{i % 3}" for i in range(rows)]
    lines[bad_row] = "1.5,oops,1"
    return "f0,f1,label\n" + "\n".join(lines) + "\n"


def dev_zero_config(ws) -> list:
    os.symlink("/dev/zero", ws.path("endless.yaml"))
    return ws.fit("--config", ws.path("endless.yaml"))


def named_pipe(ws, name: str):
    path = ws.path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)  # opening it for reading blocks until a writer comes: none will
    return path


def pipe_config_run(ws) -> list:
    run = ws.run()
    (run / "config.yaml").unlink()
    named_pipe(ws, f"{run.name}/config.yaml")
    return ["evaluate", run, "--device", "cpu"]


CASES = [
    Case("script-csv-bad-cell-read-by-a-thread", lambda ws: ws.fit(
        "--target", "label", "--prefetch", "thread", "--no-standardize", "--shuffle-window", "64",
        data=ws.text("d.csv", csv_rows(390))), "holds 'oops'"),
    Case("script-csv-bad-cell-read-by-a-worker-process", lambda ws: ws.fit(
        "--target", "label", "--prefetch", "process", "--no-standardize", "--shuffle-window", "64",
        data=ws.text("d.csv", csv_rows(390))), "holds 'oops'"),
    Case("script-npy-truncated-rows", lambda ws: ws.fit(data=_truncated_npy_pair(ws)), "x.npy"),
    Case("script-config-symlink-to-dev-zero", dev_zero_config, "endless.yaml"),
    Case("script-csv-named-pipe", lambda ws: ws.fit("--target", "label", data=named_pipe(ws, "d.csv")),
         "d.csv is not a regular file"),
    Case("script-config-named-pipe", lambda ws: ws.fit("--config", named_pipe(ws, "c.yaml")), "c.yaml"),
    Case("script-run-config-named-pipe", pipe_config_run, "config.yaml"),
]


def _truncated_npy_pair(ws):
    path = ws.npy("x.npy", X)
    path.write_bytes(path.read_bytes()[:-40])
    ws.npy("y.npy", Y)
    return path


# case id -> why it fails today (strict xfail: delete the entry once it passes)
KNOWN_FAILURES = {
}


@pytest.mark.parametrize("case", params(CASES, KNOWN_FAILURES))
def test_bad_input_through_the_console_script(case, ws, capsys):
    expect_refusal(capsys, ws, case, in_process=False, timeout_s=HUNG_AFTER_S)
