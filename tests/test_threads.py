"""`train.threads`: auto counts the cores others leave free and follows them; all and N fix the count."""

import math

import pytest
import torch
from torch.utils.data import Subset

from kdforge.config import DataConfig, TrainConfig
from kdforge.train.data import build_data
from kdforge.train.methods import method_class
from kdforge.train.models import create_model
from kdforge.train.threads import ThreadBudget, _busy_seconds
from kdforge.train.trainer import fit


class Machine:
    """Busy CPU-seconds of all processes and of this one, on a clock the test moves."""

    def __init__(self):
        self.busy = self.own = self.now = 0.0

    def run(self, seconds: float, ours: float, others: float):
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_auto_runs_as_many_threads_as_cores_others_leave(restore_threads):
    m = Machine()
    budget = ThreadBudget(busy=lambda: m.busy, own=lambda: m.own, clock=lambda: m.now, cpus={0, 1})
    torch.set_num_threads(2)
    m.run(0.5, ours=2, others=1)
    assert budget.update() is None and torch.get_num_threads() == 2  # less than a second: not yet looked
    m.run(1.0, ours=1, others=1)
    assert budget.update() == 1 and torch.get_num_threads() == 1     # a neighbour holds a core
    m.run(1.0, ours=1, others=0)
    assert budget.update() == 2                                      # it left
    m.run(1.0, ours=2, others=0)
    assert budget.update() is None                                   # idle and already at 2
    m.run(1.0, ours=0, others=5)
    assert budget.update() == 1                                      # never below one thread


def test_busy_time_is_read_from_proc_stat_for_our_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 900 9 0 0 0 0 0 0\ncpu0 100 10 50 1000 5 1 2 3 0 0\ncpu1 400 0 400 9 0 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    import os

    assert _busy_seconds({0}, stat) == pytest.approx((100 + 10 + 50 + 1 + 2 + 3) / os.sysconf("SC_CLK_TCK"))
    assert _busy_seconds({0}, tmp_path / "missing") is None


def test_fixed_threads_hold_through_training_and_are_restored(restore_threads, tmp_path):
    data = build_data(DataConfig(), seed=0)
    small = type(data)(Subset(data.train, range(128)), Subset(data.val, range(32)), Subset(data.test, range(32)),
                       10, 1, 8, data.mean, data.std, data.class_names)
    seen = []
    cls = method_class("ce")

    class Recording(cls):
        def forward(self, images, labels, progress):
            seen.append(torch.get_num_threads())
            return super().forward(images, labels, progress)

    torch.set_num_threads(2)
    distiller = Recording(create_model("resnet8", 10, 1), None, cls.Options())
    result = fit(distiller, small, TrainConfig(epochs=1, batch_size=32, threads=1), tmp_path / "c.pt", "fp",
                 torch.device("cpu"), 0)
    assert math.isfinite(result.history[-1]["loss"]) and set(seen) == {1} and torch.get_num_threads() == 2
    with pytest.raises(ValueError):
        TrainConfig(threads=0)
    assert TrainConfig().threads == "all"


def test_the_cpu_time_of_our_own_workers_is_ours_not_the_machines():
    import os
    import subprocess
    import sys
    import time

    from kdforge.train.threads import family_seconds

    worker = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])

    def child_seconds() -> float:  # the child's own CPU time, however busy the machine (other test workers)
        fields = open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        time.sleep(0.5)
        before, child_before = family_seconds(), child_seconds()
        time.sleep(1.0)
        spent = child_seconds() - child_before
        assert spent > 0.1 and family_seconds() - before >= 0.9 * spent  # the child's CPU counts as this run's
    finally:
        worker.kill()
        worker.wait()
