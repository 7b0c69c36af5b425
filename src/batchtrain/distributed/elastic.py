"""Elastic restarts under `torchrun --max-restarts N`: when a worker dies, torchrun stops the others
and starts the whole group again, counting attempts in TORCHELASTIC_RESTART_COUNT.

Two things make a restarted group work. Its ranks must meet in a store namespace of their own
(attempt_store), and `batchtrain fit` must recognise the run directory it began as its own, to
continue from its newest checkpoint there instead of refusing it (claim_run_dir, is_own_restart).
"""
import json
import os
import warnings
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from batchtrain.checkpointing.fileio import atomic_write

CLAIM_FILE = "torchelastic.json"  # {"run_id": TORCHELASTIC_RUN_ID} of the job that began the run
STORE_TIMEOUT = timedelta(minutes=30)  # torch's default for a process group


def restart_count() -> int:
    """0 in the first attempt (and outside torchrun), n in the n-th restart."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarts_allowed() -> bool:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0


def attempt_store() -> dist.Store | None:
    """The store this attempt's ranks should join through; None where torch's default is safe.

    torchrun's agent hosts one store for all attempts (TORCHELASTIC_USE_AGENT_STORE=True; the same
    MASTER_PORT every time), and init_process_group bootstraps gloo under keys that are the same in
    every attempt (default_pg/0//cpu//0/<rank> in torch 2.13). A restarted rank that gets there
    before its peer reads the address of the peer's dead predecessor: the connection fails, or
    both ranks wait for each other in init_process_group for 30 minutes (pytorch#135712). One
    namespace per attempt avoids that. The restart count agrees on every rank of one torchrun but
    not across machines (a node restarts its workers without counting when another node's fail),
    so with several nodes the fix is torch's own: TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 makes each
    attempt start a new store.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        if restarts_allowed() and os.environ.get("RANK") == "0":
            warnings.warn("restarted workers may hang in init_process_group when torchrun shares its "
                          "store across machines; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before "
                          "torchrun", stacklevel=2)
        return None
    agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                is_master=False, timeout=STORE_TIMEOUT)
    return dist.PrefixStore(f"batchtrain/attempt-{restart_count()}", agent_store)


def claim_run_dir(run_dir: Path) -> None:
    """Mark run_dir as this torchrun job's, so that its restarts continue it (restarts only)."""
    if restarts_allowed():
        atomic_write(Path(run_dir) / CLAIM_FILE, lambda path: path.write_text(
            json.dumps({"run_id": os.environ.get("TORCHELASTIC_RUN_ID")})))


def is_own_restart(run_dir: Path) -> bool:
    """True in a restart of the torchrun job that claimed run_dir. A directory the first attempt
    refused (another run's) was not claimed, so a restart refuses it too.

    The job is known by its rendezvous id (--rdzv-id; a fresh one with --standalone), not by the
    restart count: with several machines, the one whose worker failed counts a restart and the
    others restart theirs at 0. torchrun's default id, "none", is every job's: with it only a
    counted restart is one.
    """
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if job is None or (job == "none" and restart_count() == 0):
        return False
    try:
        claim = json.loads((Path(run_dir) / CLAIM_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(claim, dict) and claim.get("run_id") == job
