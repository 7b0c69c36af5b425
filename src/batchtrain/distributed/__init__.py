"""Many processes: torchrun / DistributedDataParallel glue (ddp) and elastic restarts (elastic)."""
