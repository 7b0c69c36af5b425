"""Worker for test_ddp_stream.py: trains on a streamed Parquet dataset and records, per epoch,
which rows this process trained on (feature 0 of row i is i). argv: data path, output directory.
Without torchrun it runs as the single-process reference."""
import json
import sys
from pathlib import Path

import torch
from torch import nn

from batchtrain import Callback, Trainer
from batchtrain.data import open_dataset
from batchtrain.distributed import finish


class RecordingModel(nn.Module):
    """A small classifier that notes the row ids of every training batch it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1000))  # labels are the row ids
        self.seen: list[list[int]] = []

    def forward(self, x):
        if self.training and torch.is_grad_enabled() and self.seen:  # not the set-up probes
            self.seen[-1] += x[:, 0].long().tolist()
        return self.layers(x)


class NewEpoch(Callback):
    def on_epoch_begin(self, trainer, epoch):
        trainer.model_.seen.append([])


def main(data: str, out_dir: Path) -> None:
    torch.set_num_threads(1)
    model = RecordingModel()
    trainer = Trainer(model, seed=2, lr=0.01)
    source = open_dataset(data, "label", shuffle_window=150, standardize=False)
    trainer.fit(source, batch_size=40, epochs=2, validation_split=0.2, callbacks=[NewEpoch()])
    rank = trainer.dist_.rank if trainer.dist_ is not None else "single"
    (out_dir / f"rank{rank}.json").write_text(json.dumps(
        {"seen": model.seen, "history": [{k: v for k, v in logs.items()
                                          if k not in ("time_s", "samples_per_s")}
                                         for logs in trainer.history_]}))
    if rank in (0, "single"):
        torch.save([p.detach() for p in model.parameters()], out_dir / f"params-{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
    finish(0)  # leaves the group, if torchrun started this process
