"""Many processes: torchrun / DistributedDataParallel glue (ddp), elastic restarts (elastic) and
the rank-0 batch-size decision (policy)."""
from batchtrain.distributed.ddp import Distributed, finish, from_environment

__all__ = ["Distributed", "finish", "from_environment"]
