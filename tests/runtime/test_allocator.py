"""glibc malloc settings: freed training memory is kept, unless the user chose otherwise."""
import json
import os
import platform
import subprocess
import sys

import pytest

from batchtrain.runtime import allocator
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process: allocate and free ten 1 MiB blocks per round, after a 2 MiB block has set
# glibc's dynamic thresholds to 2 MiB (mmap) and 4 MiB (trim). Left alone, glibc returns the
# 10 MiB freed at the heap's top every round and the next round faults on every page again.
ROUNDS_SCRIPT = """
import json, resource, sys
import numpy as np
from batchtrain.runtime.allocator import keep_freed_memory
applied = keep_freed_memory()
np.ones(2 << 20, np.uint8)
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(1 << 20, np.uint8) for _ in range(10)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def run_rounds(**env) -> dict:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", ROUNDS_SCRIPT], capture_output=True, text=True,
                            env={**environment, **env}, check=True)
    return json.loads(result.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults():
    pages_per_round = 10 * (1 << 20) // 4096
    tuned = run_rounds()
    default = run_rounds(BATCHTRAIN_MALLOC="default")
    assert tuned["applied"] and not default["applied"]
    assert max(tuned["faults"][1:]) < pages_per_round / 10
    assert min(default["faults"][1:]) > pages_per_round / 2  # what the settings avoid


@pytest.mark.parametrize("variable, value", [("BATCHTRAIN_MALLOC", "default"),
                                             ("MALLOC_TRIM_THRESHOLD_", "1000"),
                                             ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1"),
                                             ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")])
def test_a_users_own_choice_is_left_alone(monkeypatch, variable, value):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_mallopt_all", lambda: pytest.fail("mallopt called"))
    monkeypatch.setenv(variable, value)
    assert allocator.keep_freed_memory() is False


def test_settings_are_made_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_chosen_by_user", lambda: None)
    monkeypatch.setattr(allocator, "_mallopt_all", lambda: calls.append(1) or True)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert calls == [1]
