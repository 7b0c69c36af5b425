"""Helpers shared by test modules (tests/ is on pytest's pythonpath)."""
from batchtrain.cli.app import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `batchtrain argv...`, argparse's SystemExit included."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_blobs(path, samples: int = 600, train: int = 500, shift: float = 1.5, seed: int = 0):
    """An .npz of three Gaussian blobs in 6 features: x_train/y_train (first `train` samples) and
    x_test/y_test (the rest). Returns the path."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(samples) % 3
    features = rng.normal(0.0, 1.0, (samples, 6)).astype(np.float32)
    features[np.arange(samples), labels] += shift
    np.savez(path, x_train=features[:train], y_train=labels[:train], x_test=features[train:],
             y_test=labels[train:])
    return path


def tree_digest(root) -> dict:
    """{relative path: sha256 (files) or "dir"} of everything under root ({} if it is absent):
    equal before and after a command that must change nothing on disk."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    return {str(path.relative_to(root)): "dir" if path.is_dir() else
            hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(root.rglob("*"))}


def noisy_linear_regression(d: int = 10, n: int = 8192, sigma: float = 1.0, seed: int = 0,
                            probe: int = 0):
    """x ~ N(0, I_d), y = w* . x + sigma * eps; and the model at w0 = w* + delta, |delta| = 1.

    At w0 the per-sample gradient of (w . x - y)^2 is g = 2 r x with r = delta . x - sigma eps, so
    G = 2 delta and tr(Sigma) = E|g|^2 - |G|^2 = 4 ((d + 1) |delta|^2 + d sigma^2) (Gaussian
    fourth moments: E[(delta . x)^2 |x|^2] = (d + 2) |delta|^2): B_simple = (d + 1) + d sigma^2.
    Returns (model, x, y as (n, 1), B_simple, probe_x, probe_y): `probe` more samples without
    noise (their loss is delta' S delta, S ~ I), for measurements that need a held-out loss.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    w_star = torch.randn(d, generator=generator)
    delta = torch.randn(d, generator=generator)
    delta /= delta.norm()
    x = torch.randn(n, d, generator=generator)
    y = x @ w_star + sigma * torch.randn(n, generator=generator)
    probe_x = torch.randn(probe, d, generator=generator)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star + delta)
    return model, x, y[:, None], (d + 1) + d * sigma ** 2, probe_x, (probe_x @ w_star)[:, None]
