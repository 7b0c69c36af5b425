"""Elastic restarts, driven directly: the store namespace per attempt (torchrun's environment set
by hand). tests/distributed/test_elastic.py kills real workers under torchrun."""
from datetime import timedelta

import pytest
import torch.distributed as dist

from batchtrain.elastic import attempt_store


def torchrun_environment(monkeypatch, attempt: int, run_id: str = "job-1", **extra) -> None:
    """What torchrun --max-restarts 1 tells a worker in attempt `attempt` (0: the first)."""
    variables = {"TORCHELASTIC_RESTART_COUNT": attempt, "TORCHELASTIC_MAX_RESTARTS": 1,
                 "TORCHELASTIC_RUN_ID": run_id, **extra}
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))


def test_each_attempt_sees_none_of_the_previous_attempts_keys(monkeypatch):
    agent_store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=10))
    torchrun_environment(monkeypatch, 0, TORCHELASTIC_USE_AGENT_STORE=True, GROUP_WORLD_SIZE=1,
                         MASTER_ADDR="127.0.0.1", MASTER_PORT=agent_store.port)
    attempt_store().set("default_pg/0//cpu//0/1", "a dead worker's address")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert not attempt_store().check(["default_pg/0//cpu//0/1"])
    assert agent_store.num_keys() >= 1  # the key is there, in the first attempt's namespace


def test_torchs_own_store_where_it_is_not_shared_or_spans_machines(monkeypatch):
    torchrun_environment(monkeypatch, 0, RANK=0)
    assert attempt_store() is None  # TORCHELASTIC_USE_AGENT_STORE unset: no shared store
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # restart counts differ between machines
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert attempt_store() is None
