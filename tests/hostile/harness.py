"""The harness of the hostile-input suite: one malformed input per case, given to the CLI.

A case builds its inputs in a fresh directory and returns the command line. The harness hashes
every file there (and in the working directory, where a default run directory would land),
runs the command, and checks what bad input must get: exit status 2, exactly one line on
stderr, no traceback, a bounded message naming what was wrong (the case's `match`), and every
file that was on disk before byte-for-byte the same, with no new file anywhere (a refused fit
leaves no run directory that would refuse the corrected retry; an empty directory is allowed).
"""
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from batchtrain.cli.app import main

MAX_MESSAGE_CHARS = 500  # after the case's directory is shortened to <tmp>
MAX_SCRIPT_BYTES = 4 << 30  # address space of a console-script run (torch maps ~1 GiB)
ABORT_MARKS = ("Traceback", "terminate called", "Segmentation fault", "Fatal Python error")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 4)).astype(np.float32)
Y = np.arange(12) % 3  # classes 0, 1, 2
X_TEST, Y_TEST = X[:6] + 0.1, Y[:6]


@dataclass(frozen=True)
class Case:
    """A hostile input: `build(ws)` writes its files and returns argv; `match` must be in the
    error line."""

    id: str
    build: Callable[["Workspace"], list]
    match: str


def params(cases: list[Case], known_failures: dict[str, str]) -> list:
    """pytest.param per case, ids from the cases; the known failures (id -> cause) are marked
    strict xfail, so a fix turns the marker into an error: then delete its entry."""
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert set(known_failures) <= set(ids), f"stale entries: {set(known_failures) - set(ids)}"
    return [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=known_failures[case.id])]
                         if case.id in known_failures else []) for case in cases]


class Workspace:
    """A case's directory, with writers for its inputs and the usual fit command line."""

    def __init__(self, root: Path, cwd: Path, runs: Callable[[str], Path]):
        self.root, self.cwd, self._runs = root, cwd, runs
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def npz(self, name: str = "data.npz", **arrays) -> Path:
        arrays = arrays or {"x_train": X, "y_train": Y, "x_test": X_TEST, "y_test": Y_TEST}
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path

    def npy(self, name: str, array: np.ndarray) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # a handle: np.save would add .npy to other names
            np.save(handle, array)
        return path

    def text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def bytes(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def dir(self, name: str) -> Path:
        path = self.path(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, kind: str = "mlp") -> Path:
        """A copy of a finished run directory (kind "mlp": .npz data; "csv": a CSV table)."""
        copy = self.path(f"{kind}-run")
        shutil.copytree(self._runs(kind), copy)
        return copy

    def fit(self, *flags, data: object = None) -> list:
        """`fit` on tiny data with a fast mlp, then `flags` (later flags override these)."""
        data_flags = [] if data is False else ["--data", data if data is not None else self.npz()]
        return ["fit", *data_flags, "--model", "mlp", "--hidden", "4", "--epochs", "1",
                "--batch-size", "4", "--progress", "none", "--device", "cpu", "--seed", "0",
                "--output", self.path("run"), *flags]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every entry under roots: sha256 of regular files, link targets, and directories."""
    entries = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(directory, name)
                if path.is_symlink():
                    entries[str(path)] = "link:" + os.readlink(path)
                elif path.is_dir():
                    entries[str(path)] = "dir"
                elif path.is_file():
                    entries[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    entries[str(path)] = "special"
    return entries


@dataclass
class Outcome:
    code: object
    out: str
    err: str
    raised: str | None = None  # an exception that escaped main(): a traceback for a user


def run_in_process(capsys, argv: list) -> Outcome:
    """main(argv) in this process. Warnings count as the stderr lines the script would print
    (pytest would otherwise keep them), with the filters of a plain `python` run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        try:
            code, raised = main([str(arg) for arg in argv]), None
        except SystemExit as stop:  # argparse's own errors
            code, raised = stop.code, None
        except Exception as error:  # noqa: BLE001 - any escape is the failure being looked for
            code, raised = None, traceback.format_exception_only(error)[-1].strip()[:300]
    captured = capsys.readouterr()
    warning_lines = "".join(f"batchtrain: warning: {warning.message}\n" for warning in caught)
    return Outcome(code, captured.out, warning_lines + captured.err, raised)


def run_console_script(argv: list, timeout_s: float = 120) -> Outcome:
    """The installed `batchtrain` script in a fresh process: native aborts show as their status
    (negative: the signal). Its address space is capped, so unbounded reading fails, not the host."""
    script = Path(sys.executable).with_name("batchtrain")
    try:
        done = subprocess.run([str(script), *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout_s, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                              preexec_fn=_cap_address_space)
    except subprocess.TimeoutExpired as expired:
        return Outcome(None, _text(expired.stdout), _text(expired.stderr), f"hung past {timeout_s} s")
    return Outcome(done.returncode, done.stdout, done.stderr)


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MAX_SCRIPT_BYTES, MAX_SCRIPT_BYTES))


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def problems(outcome: Outcome, match: str, before: dict, after: dict, short: Path) -> list[str]:
    """What is wrong with how the command treated bad input (empty when all is well)."""
    found = []
    if outcome.raised:
        found.append(f"raised {outcome.raised}")
    if outcome.code != 2:
        found.append(f"exit {outcome.code}")
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    if len(lines) != 1:
        found.append(f"{len(lines)} stderr lines")
    if any(mark in outcome.out + outcome.err for mark in ABORT_MARKS):
        found.append("traceback or abort in the output")
    message = lines[-1] if lines else ""  # the error comes last, after any warnings
    shown = message.replace(str(short), "<tmp>")
    if len(shown) >= MAX_MESSAGE_CHARS:
        found.append(f"message of {len(shown)} chars")
    if lines and match not in message:
        found.append(f"message lacks {match!r}")
    changed = sorted(path for path in before if after.get(path) != before[path])
    if changed:
        found.append(f"changed or removed: {[_short(p, short) for p in changed[:3]]}")
    new_files = sorted(path for path in set(after) - set(before) if after[path] != "dir")
    if new_files:
        found.append(f"new files: {[_short(p, short) for p in new_files[:3]]}")
    return found


def _short(path: str, root: Path) -> str:
    return path.replace(str(root), "<tmp>")


def expect_refusal(capsys, ws: Workspace, case: Case, in_process: bool = True,
                   timeout_s: float = 120) -> None:
    """Build the case, run it, and fail with one readable line if bad input was mishandled.
    in_process False: through the console script, given up as hung after timeout_s."""
    argv = case.build(ws)
    roots = (ws.root, ws.cwd)
    before = snapshot(*roots)
    outcome = run_in_process(capsys, argv) if in_process else run_console_script(argv, timeout_s)
    after = snapshot(*roots)
    found = problems(outcome, case.match, before, after, ws.root.parent)
    if found:
        command = " ".join(_short(str(arg), ws.root.parent) for arg in argv)[:300]
        first = next((line for line in (outcome.err + outcome.out).splitlines() if line.strip()), "")
        last = [line for line in outcome.err.splitlines() if line.strip()][-1:] or [""]
        pytest.fail(f"{'; '.join(found)} | command: batchtrain {command} | first line: "
                    f"{_short(first, ws.root.parent)[:300]} | last line: "
                    f"{_short(last[0], ws.root.parent)[:200]}", pytrace=False)
