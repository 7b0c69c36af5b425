"""PNG plots of loss and each metric over epochs (matplotlib, Agg backend: no display needed)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: runs on servers and in CI without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from batchtrain.callbacks.base import Callback  # noqa: E402
from batchtrain.checkpointing.fileio import write_error  # noqa: E402
from batchtrain.state import History  # noqa: E402

NOT_PLOTTED = {"epoch", "time_s", "samples_per_s", "batch_size", "lr"}  # per step instead


class Plotter(Callback):
    """Writes run_dir/<metric>.png (training and validation curves) after every epoch."""

    main_process_only = True  # under DDP only rank 0 writes

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        try:
            plot_history(trainer.history_, self.run_dir)
        except OSError as error:
            raise write_error(self.run_dir / "*.png", error) from None


def plot_history(history: History, run_dir: str | Path) -> list[Path]:
    """One PNG per metric (loss.png, accuracy.png ...), each with its val_ curve if present."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = history.history
    epochs = columns.get("epoch", list(range(1, len(history) + 1)))
    written = []
    for name in [key for key in columns if key not in NOT_PLOTTED and not key.startswith("val_")]:
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(epochs, columns[name], marker="o", label=f"training {name}")
        if f"val_{name}" in columns:
            axes.plot(epochs, columns[f"val_{name}"], marker="o", label=f"validation {name}")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = run_dir / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    for key, label in (("batch_size", "logical batch (samples)"), ("lr", "learning rate"),
                       ("noise_scale", "gradient noise scale B_simple (samples)")):
        if any(key in step for step in history.steps):
            written.append(_plot_steps(history.steps, key, label, run_dir / f"{key}.png"))
    return written


def _plot_steps(steps: list[dict], key: str, label: str, path: Path) -> Path:
    """`key` of every step against samples seen (a step function: the value holds until the next)."""
    figure, axes = plt.subplots(figsize=(6, 4))
    steps = [step for step in steps if key in step]
    axes.step([step["samples_seen"] for step in steps], [step[key] for step in steps], where="post")
    axes.set_xlabel("samples seen")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
