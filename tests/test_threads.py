"""Torch's CPU threads — the passive OpenMP wait policy set before torch loads, and the
thread count each job chooses from the cores it may use and the cores other processes keep busy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sampo_engine.utils import threads
from sampo_engine.utils.threads import (
    busy_cores_elsewhere,
    choose_threads,
    configure_threads,
    job_threads,
    prefer_passive_wait,
    usable_cores,
)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=120,
    )


def test_the_cli_entry_makes_openmp_threads_sleep_before_torch_loads():
    """The OpenMP runtime itself reports spin count 0 (passive) when torch is imported after
    the entry's :func:`prefer_passive_wait`; a user's own choice is kept."""
    code = (
        "from sampo_engine.utils.threads import prefer_passive_wait as p\n"
        "print(p())\n"
        "import torch\n"
        "torch.ones(8).sum()\n"
    )
    done = _python(code, OMP_DISPLAY_ENV="VERBOSE")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    if "GOMP_SPINCOUNT" not in done.stderr:
        pytest.skip("torch's OpenMP runtime is not libgomp: it does not report its spin count")
    assert "GOMP_SPINCOUNT = '0'" in done.stderr
    mine = _python(code, OMP_DISPLAY_ENV="VERBOSE", GOMP_SPINCOUNT="300000")
    assert mine.stdout.strip() == "False" and "GOMP_SPINCOUNT = '300000'" in mine.stderr


def test_passive_wait_is_set_only_when_it_can_still_act_and_nobody_chose():
    env = {}
    assert "torch" in sys.modules  # imported above: too late to change this process
    assert prefer_passive_wait(env) is False and env == {}
    done = _python(
        "import os\n"
        "from sampo_engine.cli import main\n"
        "main(['weights', 'list'])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    assert done.stdout.strip().splitlines()[-1] == "PASSIVE"
    done = _python(
        "import os\nfrom sampo_engine.cli import main\nmain(['weights', 'list'])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n",
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert done.stdout.strip().splitlines()[-1] == "ACTIVE"


def test_the_count_follows_the_usable_cores_and_other_processes_load(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: None)
    assert usable_cores() == 8
    monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: 2.5)  # a container's quota
    assert usable_cores() == 3
    monkeypatch.setattr(threads, "_cgroup_quota_cores", lambda: None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks share the machine
    assert usable_cores() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")

    for busy, expected in ((0.0, 8), (0.3, 8), (2.6, 5), (7.7, 1), (12.0, 1), (None, 8)):
        monkeypatch.setattr(threads, "busy_cores_elsewhere", lambda s, b=busy: b)
        choice = choose_threads(0)
        assert (choice.intra_op, choice.inter_op) == (expected, 1), busy
        assert choice.usable_cores == 8 and choice.busy_elsewhere == busy
    assert choose_threads(3).intra_op == 3 and choose_threads(3).reason == "--threads"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's variable wins in auto mode
    assert choose_threads(0).intra_op == 2 and choose_threads(0).reason == "OMP_NUM_THREADS"
    assert choose_threads(5).intra_op == 5
    with pytest.raises(ValueError, match="--threads must be ≥ 0"):
        choose_threads(-1)


def test_busy_cores_are_measured_without_counting_this_process():
    """Measured for real: this process spinning during the sample is not 'other processes'."""
    import threading

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        busy = busy_cores_elsewhere(0.3)
    finally:
        stop.set()
        worker.join()
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    n = len(os.sched_getaffinity(0))
    assert 0.0 <= busy <= n
    # the other processes cannot have kept busier than all the cores minus this one's spin
    assert busy <= n - 0.5


def test_configure_and_job_threads_set_and_restore(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    choice = configure_threads(1)
    try:
        assert torch.get_num_threads() == 1 and choice.intra_op == 1
    finally:
        torch.set_num_threads(before)
    lines = []
    with job_threads(1, log=lines.append):
        assert torch.get_num_threads() == 1
        # an explicit count holds for the auto choices inside (each run of a grid)
        assert choose_threads(0).intra_op == 1 and choose_threads(0).reason == "--threads"
    assert torch.get_num_threads() == before and threads._pinned == 0
    assert lines == ["torch CPU threads: 1 (--threads)"]
