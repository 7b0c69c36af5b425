"""Fixtures of the hostile-input suite: a workspace per case, and finished runs to damage."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from batchtrain.cli.app import main
from batchtrain.data import builtin
from hostile.harness import X, X_TEST, Y, Y_TEST, Workspace


def _train_run(root: Path, kind: str) -> Path:
    """One quick `batchtrain fit` (mlp, 1 epoch) on .npz or CSV data; returns its run directory."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "mlp":
        data = root / "train.npz"
        np.savez(data, x_train=X, y_train=Y, x_test=X_TEST, y_test=Y_TEST)
        table_flags = []
    else:
        data = root / "train.csv"
        rows = [f"{a:.4f},{b:.4f},{c:.4f},{d:.4f},{label}" for (a, b, c, d), label in zip(X, Y)]
        data.write_text("f0,f1,f2,f3,label\n" + "\n".join(rows) + "\n")
        table_flags = ["--target", "label"]
    run_dir = root / "run"
    argv = ["fit", "--data", str(data), *table_flags, "--model", "mlp", "--hidden", "4",
            "--epochs", "1", "--batch-size", "4", "--progress", "none", "--device", "cpu",
            "--seed", "0", "--output", str(run_dir)]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("HOME", str(root / "home"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
        monkeypatch.setattr(builtin, "SYSTEM_DIRS", ())
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    assert code == 0 and (run_dir / "model.safetensors").is_file(), err.getvalue()
    return run_dir


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """kind -> a finished run directory, trained on first use (never modified: cases copy it)."""
    runs: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            runs[kind] = _train_run(tmp_path_factory.mktemp(f"hostile-{kind}-run"), kind)
        return runs[kind]
    return get


@pytest.fixture
def ws(tmp_path, finished_runs) -> Workspace:
    """The case's workspace under tmp_path (the autouse isolated_env made tmp_path/env/cwd)."""
    return Workspace(tmp_path / "case", Path.cwd(), finished_runs)
