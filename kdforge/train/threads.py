"""CPU training's intra-op threads (`train.threads`), and `auto`, which makes room for the rest
of the machine.

PyTorch's CPU kernels (and numba's, which run kdforge's adder layers) split every op across a fixed pool of OpenMP threads and wait at a barrier
for the slowest; when another process holds one of the cores, every op waits for the thread the
scheduler has put aside. Measured on a 2-core machine (20 epochs of ResNet-8 on digits): idle,
2 threads 3.0 s and 1 thread 4.3 s; with one core kept busy by another process, 2 threads 14.6 s,
2 threads with OMP_WAIT_POLICY=PASSIVE 10.5 s (and 6.8 s idle), 1 thread 4.0 s. So `auto`
counts, every second, the cores of this process's CPU set that the rest of the machine leaves
free (their busy time in /proc/stat less the CPU time of this process and of its data-loader
workers) and runs that many threads.
Results then depend on the load in their last digits (reductions split by thread count), which is
why the default, `all`, fixes one thread per core and keeps runs bitwise identical. Where
/proc/stat is missing, `auto` leaves the threads as they are.
"""

import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (/proc/stat, after the name)


def _busy_seconds(cpus: set[int], stat: Path = Path("/proc/stat")) -> Optional[float]:
    """CPU-seconds spent busy so far on `cpus`, by every process on the machine."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks += sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def family_seconds(proc: Path = Path("/proc/self")) -> float:
    """CPU-seconds of this process and of its live children (the data loader's workers), which
    are this run's own work, not the rest of the machine's."""
    seconds = time.process_time()
    hz = os.sysconf("SC_CLK_TCK")
    for children in proc.glob("task/*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                fields = (proc.parent / pid / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            seconds += (int(fields[11]) + int(fields[12])) / hz  # utime, stime (fields 14 and 15 of stat)
    return seconds


def cpu_set() -> set[int]:
    """The CPUs this process may run on."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


class ThreadBudget:
    """Sets torch's intra-op threads to the cores others leave free, at most once per `interval` s."""

    def __init__(self, interval: float = 1.0, busy: Optional[Callable[[], Optional[float]]] = None,
                 own: Callable[[], float] = family_seconds, clock: Callable[[], float] = time.monotonic,
                 cpus: Optional[set[int]] = None):
        self.cpus = cpus or cpu_set()
        self.busy = busy or (lambda: _busy_seconds(self.cpus))
        self.own, self.clock, self.interval = own, clock, interval
        self.last = (self.busy(), self.own(), self.clock())

    def threads_for(self, others_cores: float) -> int:
        return max(1, min(len(self.cpus), round(len(self.cpus) - others_cores)))

    def update(self) -> Optional[int]:
        """The thread count set now, or None where nothing changed (or could be known)."""
        now = self.clock()
        if now - self.last[2] < self.interval:
            return None
        busy, own = self.busy(), self.own()
        (busy0, own0, then), self.last = self.last, (busy, own, now)
        if busy is None or busy0 is None:
            return None
        others = max(0.0, (busy - busy0) - (own - own0)) / (now - then)
        threads = self.threads_for(others)
        if threads == torch.get_num_threads():
            return None
        set_threads(threads)
        return threads


def set_threads(threads: int) -> None:
    """torch's intra-op threads, and numba's (kdforge's adder kernels) where numba is loaded;
    numba first, since starting its OpenMP layer resets the OpenMP thread count torch reads."""
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
