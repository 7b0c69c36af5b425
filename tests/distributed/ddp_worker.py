"""Worker for test_ddp.py, run under torch.distributed.run: trains, then each rank writes JSON.

argv: mode ("schedule", "schedule-bf16", "adaptive" or "adaptive-adam"), output directory.
"""
import json
import sys
from pathlib import Path

import torch

from batchtrain.distributed import finish
from ddp_problem import make_trainer, problem, run_fit  # noqa: E402 (tests/distributed on sys.path)

mode, out_dir = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
trainer = make_trainer(mode)
history = run_fit(trainer, mode, *problem())
rank = trainer.dist_.rank
record = {"rank": rank, "world": trainer.dist_.world_size,
          "sizes": [step["batch_size"] for step in history.steps],
          "noise": [step.get("noise_scale") for step in history.steps],
          "comm_hooks": [hook.__name__ for hook, _ in getattr(trainer.built_.network,
                                                              "_comm_hooks", [])],
          "history": [{k: v for k, v in logs.items() if k not in ("time_s", "samples_per_s")}
                      for logs in history]}
(out_dir / f"rank{rank}.json").write_text(json.dumps(record))
if rank == 0:
    torch.save([p.detach() for p in trainer.model_.parameters()], out_dir / "params.pt")
finish(0)  # as a user's script should end under torchrun (see distributed.finish)
