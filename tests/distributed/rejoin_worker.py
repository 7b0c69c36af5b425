"""Worker for test_elastic.py, run under torchrun --max-restarts 1: joins the process group as
batchtrain does. In the first attempt rank 1 dies once the group is up; in the restart rank 0
joins late (argv[2] seconds), so that rank 1 reaches the store first, where the dead attempt's
keys are. Each rank of the restart writes rank<N>.ok into argv[1].
"""
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from batchtrain.distributed.ddp import finish, from_environment

out_dir, late_s = Path(sys.argv[1]), float(sys.argv[2])
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt > 0 and rank == 0:
    time.sleep(late_s)
group = from_environment(torch.device("cpu"))
if attempt == 0 and rank == 1:
    os._exit(1)
dist.barrier()  # rank 0 of the first attempt fails here, and the group restarts
(out_dir / f"rank{rank}.ok").write_text(str(attempt))
finish(0)
