"""Worker for test_sigkill.py: trains (resuming when checkpoints exist), then saves its parameters.

argv: checkpoint_dir output_file [die_in_save N]: with die_in_save, the process SIGKILLs itself
inside its N-th checkpoint write (after the temporary file is written, before the rename), to
hit the one window a random kill rarely finds.
"""
import os
import signal
import sys

import torch
from torch import nn

import batchtrain.checkpointing.fileio as fileio
from batchtrain import Checkpoint, Doubling, Trainer
from batchtrain.checkpointing.files import list_checkpoints

torch.set_num_threads(1)  # one thread: the same summation order in every process
directory, output = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    die_at, replaces = int(sys.argv[4]), [0]
    real_replace = os.replace

    def replace_then_maybe_die(source, target):
        replaces[0] += 1
        if replaces[0] == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)

    fileio.os.replace = replace_then_maybe_die

generator = torch.Generator().manual_seed(0)
x = torch.randn(3000, 20, generator=generator)
y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()
torch.manual_seed(1)
model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 3))
trainer = Trainer(model, optimizer="adam", lr=1e-3, lr_schedule="cosine", seed=3,
                  max_physical_batch=48)
print("training", flush=True)  # the test times its kills from here (imports vary run to run)
trainer.fit(x, y, batch_size=Doubling(16, "1e", 64), epochs=4, validation_split=0.1,
            callbacks=[Checkpoint(directory, every=150, keep=2)],
            resume=directory if list_checkpoints(directory) else None)
torch.save([p.detach() for p in trainer.model_.parameters()], output)
