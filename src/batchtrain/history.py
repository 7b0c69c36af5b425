"""History: what fit() measured, one dict per epoch."""
import csv
from collections.abc import Iterator
from pathlib import Path


class History:
    """Per-epoch records (epoch, loss, metrics, val_*, batch_size, lr, time_s, samples_per_s),
    in order, and per-step records in `.steps`.

    Iterate it or index it for the dicts; `.history` gives Keras' dict of lists.
    """

    def __init__(self, epochs: list[dict] | None = None, steps: list[dict] | None = None):
        self.epochs: list[dict] = list(epochs or [])
        # One record per optimizer step: step, samples_seen, batch_size (the logical batch asked
        # for), samples (in this step: fewer at an epoch's end), physical_batch,
        # accumulation_steps, lr (host values only: recording them never waits for the device).
        self.steps: list[dict] = list(steps or [])

    def append(self, logs: dict) -> None:
        self.epochs.append(dict(logs))

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.epochs)

    def __getitem__(self, index: int) -> dict:
        return self.epochs[index]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"

    def keys(self) -> list[str]:
        """Every key of any epoch, in first-seen order."""
        return list(dict.fromkeys(key for logs in self.epochs for key in logs))

    def to_list(self) -> list[dict]:
        return [dict(logs) for logs in self.epochs]

    @property
    def history(self) -> dict[str, list]:
        """Keras' form: {"loss": [...], "val_loss": [...], ...}."""
        return {key: [logs.get(key) for logs in self.epochs] for key in self.keys()}

    def to_csv(self, path: str | Path) -> None:
        """Write one row per epoch, header from keys()."""
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.keys())
            writer.writeheader()
            writer.writerows(self.epochs)
