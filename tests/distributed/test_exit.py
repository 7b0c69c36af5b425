"""How a process that was in a process group exits: flushed, with its status, without the
interpreter's finalization (gloo's threads outlive destroy_process_group once DDP was built)."""
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from batchtrain.distributed.ddp import exit_process, leave_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    model = DistributedDataParallel(nn.Linear(3, 2))
    model(torch.randn(4, 3)).sum().backward()
    del model
    leave_process_group()
    threads = sorted(open(f"/proc/self/task/{task}/comm").read().strip()
                     for task in os.listdir("/proc/self/task"))
    print("threads after leaving:", ",".join(threads), file=sys.stderr)
    print("last words", end="")  # buffered: must still reach the pipe
    exit_process(3)
    print("not reached")
''')


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_process_that_joined_a_group_exits_flushed_with_its_status():
    done = subprocess.run([sys.executable, "-c", WORKER, str(free_port())], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "last words"
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr


def test_a_process_that_never_joined_returns_from_exit_process():
    script = "from batchtrain.distributed.ddp import exit_process; exit_process(3); print('returned')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "returned", done.stderr


FINISHING = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from batchtrain.distributed import finish
    from batchtrain.distributed.ddp import from_environment

    if sys.argv[1] != "alone":
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0",
                          WORLD_SIZE="1")
        dist.init_process_group("gloo")  # the user's own group, which batchtrain then reuses
        assert from_environment(torch.device("cpu")) is not None
        model = DistributedDataParallel(nn.Linear(3, 2))
        model(torch.randn(4, 3)).sum().backward()
    print("trained", end="")  # buffered: must still reach the pipe
    finish(4)
    print(", returned", end="")
''')


def test_finish_leaves_the_group_and_exits_flushed_with_the_status_it_was_given():
    done = subprocess.run([sys.executable, "-c", FINISHING, str(free_port())], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout) == (4, "trained"), done.stderr
    assert "terminate called" not in done.stderr


def test_finish_returns_in_a_process_that_was_never_in_a_group():
    done = subprocess.run([sys.executable, "-c", FINISHING, "alone"], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "trained, returned"), done.stderr
