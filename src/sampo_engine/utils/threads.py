"""How many CPU threads torch uses, chosen so that a busy machine does not make a job crawl.

Why. torch runs its CPU kernels on an OpenMP team of one thread per physical core.
Every operator is a parallel region that ends at a barrier, and a thread that reaches the barrier
first *spins* there (libgomp spins ~300,000 times before it sleeps). On a quiet machine that is
what makes small regions cheap. On a machine where other processes want the same cores it is a
disaster: the spinning thread holds a core while its team-mate waits in the run queue behind the
other processes, so every one of the thousands of small operators of a training step waits for
a scheduler time slice. Measured on 2 cores with the ``tiny`` model (batch 4, K = 4): beside a
single one-thread job one step took 0.23 s with one thread but 6.0 s with torch's default two
spinning threads — 26× slower where a fair share of the cores would cost nothing; the main job's
training ran 14.7× faster with the remedies below on a machine kept busy by two other jobs
(``benchmarks/contention.py``, docs/performance.md). Two remedies, both applied by the engine:

1. **Waiting threads sleep** (``OMP_WAIT_POLICY=PASSIVE``): :func:`prefer_passive_wait` sets it
   in the command-line entry, before torch is imported (the OpenMP runtime reads it once, when it
   loads; setting it later does nothing). The same step then took 0.35 s. A user's own
   ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is kept.
2. **No more threads than there are free cores** (:func:`choose_threads`): the cores this
   process may use (its CPU affinity, a cgroup CPU quota, a share under torchrun) minus the cores
   other processes kept busy over a short sample of ``/proc/stat`` when the job starts, at least
   one. One inter-op thread: nothing here uses torch's inter-op pool, and its idle threads would
   only add to the run queue.

``threads`` = N > 0 forces N intra-op threads (inside :func:`job_threads`, for every job of the
block); ``OMP_NUM_THREADS`` set by the user is obeyed in auto mode (torch read it at import). The
choice is made once per job: the passive wait policy is what keeps a job fast when the machine
gets busy *after* it started.

This module imports torch only inside :func:`configure_threads` and :func:`job_threads`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Environment variables through which a user has already decided how OpenMP threads wait.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: Seconds of ``/proc/stat`` sampled to see how busy the other processes keep the cores.
SAMPLE_SECONDS = 0.2
#: Inside :func:`job_threads` with an explicit count: auto choices keep that count (e.g. each
#: training run of ``sampo-engine experiments --threads 2``).
_pinned = 0


@dataclass
class ThreadChoice:
    """What :func:`configure_threads` decided, and why (``reason`` is one line for a log)."""

    intra_op: int
    inter_op: int
    usable_cores: int
    busy_elsewhere: float | None  # cores kept busy by other processes; None = not measured
    reason: str

    def describe(self) -> str:
        return f"torch CPU threads: {self.intra_op} ({self.reason})"


def prefer_passive_wait(environ=None) -> bool:
    """Make idle OpenMP threads sleep instead of spinning, unless the user decided otherwise.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (default ``os.environ``) when none of
    :data:`WAIT_VARIABLES` is set and torch is not imported yet — the OpenMP runtime reads the
    variable once, when torch loads it, so afterwards setting it would only mislead. Returns
    whether it set the variable. Child processes inherit it (DataLoader workers, torchrun ranks).
    """
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(environ.get(name) for name in WAIT_VARIABLES):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def _cgroup_quota_cores() -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max`` or v1 CFS), or None."""
    candidates = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0":  # cgroup v2: the unified hierarchy
                candidates.append(Path("/sys/fs/cgroup") / parts[2].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(Path("/sys/fs/cgroup/cpu.max"))
    for path in candidates:
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    for folder in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):  # cgroup v1
        try:
            quota = int(Path(folder, "cpu.cfs_quota_us").read_text())
            period = int(Path(folder, "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def allowed_cpus() -> set[int] | None:
    """The CPU numbers this process may run on (its affinity), or None where unknown."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """How many cores this process may keep busy: its CPU affinity (or the CPU count), capped
    by a cgroup CPU quota, shared among the ranks torchrun started on this machine."""
    cpus = allowed_cpus()
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    quota = _cgroup_quota_cores()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    try:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        local_ranks = 1
    return max(1, n // max(1, local_ranks))


def _cpu_ticks(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) clock ticks of the given CPUs (all when None) from ``/proc/stat``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        values = [float(v) for v in rest.split()[:8]]
        idle = values[3] + values[4]
        busy += sum(values) - idle
        total += sum(values)
    return (busy, total) if total else None


def busy_cores_elsewhere(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores that *other* processes keep busy, averaged over ``seconds`` (Linux; else None).

    The busy time of the CPUs this process may use, from ``/proc/stat``, minus this process's
    own CPU time over the same interval.
    """
    cpus = allowed_cpus()
    before, own_before = _cpu_ticks(cpus), os.times()
    if before is None:
        return None
    time.sleep(seconds)
    after, own_after = _cpu_ticks(cpus), os.times()
    if after is None or after[1] <= before[1]:
        return None
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    busy_share = (after[0] - before[0]) / (after[1] - before[1])  # of all n CPUs
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    wall = own_after.elapsed - own_before.elapsed
    own_cores = own / wall if wall > 0 else 0.0
    return max(0.0, busy_share * n - own_cores)


def choose_threads(requested: int = 0, sample_seconds: float = SAMPLE_SECONDS) -> ThreadChoice:
    """The intra-/inter-op thread counts for a job (see the module docstring); changes nothing.

    ``requested`` > 0 is taken as it is; 0 (auto) obeys ``OMP_NUM_THREADS`` when the user set
    it, else takes the usable cores minus those other processes keep busy, at least one.
    """
    if requested < 0:
        from sampo_engine.errors import ConfigError

        raise ConfigError(f"--threads must be ≥ 0 (0 = auto), got {requested}")
    usable = usable_cores()
    if requested or _pinned:
        return ThreadChoice(requested or _pinned, 1, usable, None, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), 1, usable, None, "OMP_NUM_THREADS")
    busy = busy_cores_elsewhere(sample_seconds) if usable > 1 else None
    if busy is None:
        return ThreadChoice(usable, 1, usable, None, f"{usable} usable core(s)")
    free = max(1, min(usable, math.floor(usable - busy + 0.5)))
    return ThreadChoice(
        free, 1, usable, busy, f"{usable} usable core(s), {busy:.1f} kept busy by other processes"
    )


def configure_threads(
    requested: int = 0, log=None, sample_seconds: float = SAMPLE_SECONDS
) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and apply torch's CPU thread counts; returns the choice.

    Call it at the start of a job, in the thread that runs the job: OpenMP keeps the thread
    count per calling thread. The inter-op count can be set only once per process, before any
    inter-op work; a later call leaves it as it is. ``log`` (e.g. ``print``) receives one line.
    """
    import torch

    choice = choose_threads(requested, sample_seconds)
    if torch.get_num_threads() != choice.intra_op:
        torch.set_num_threads(choice.intra_op)
    try:
        if torch.get_num_interop_threads() != choice.inter_op:
            torch.set_num_interop_threads(choice.inter_op)
    except RuntimeError:  # already set, or inter-op work has started: keep it
        choice.inter_op = torch.get_num_interop_threads()
    if log is not None:
        log(choice.describe())
    return choice


@contextlib.contextmanager
def job_threads(requested: int = 0, log=None, sample_seconds: float = SAMPLE_SECONDS):
    """Run a command's job with :func:`configure_threads`; restore torch's thread count after.

    An explicit ``requested`` > 0 also holds for the auto choices made inside the block (the
    training runs of an experiment grid configure their own threads, with ``threads`` = 0).
    """
    import torch

    global _pinned
    previous, previous_pin = torch.get_num_threads(), _pinned
    choice = configure_threads(requested, log, sample_seconds)
    _pinned = requested or previous_pin
    try:
        yield choice
    finally:
        _pinned = previous_pin
        torch.set_num_threads(previous)
