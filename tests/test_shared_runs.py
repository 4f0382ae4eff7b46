"""Runs that share a machine: two processes on one run directory, signals mid-training, a full
disk or a read-only folder, and one ONNX Runtime session shared by many threads. The process
tests use real processes and real signals."""

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_sentence
from test_resume_and_ddp import _checkpoint_epoch, _command, _teacher_only_config

_UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """A kdforge process whose stdout and stderr go to LOG.out and LOG.err."""
    return subprocess.Popen(command, stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"), env=_UNBUFFERED)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended (code {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finished(proc: subprocess.Popen, log: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc.wait(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text())


def _holds_lock(run_dir: Path, proc: subprocess.Popen):
    lock = run_dir / ".kdforge.lock"
    return lambda: lock.is_file() and lock.read_text().startswith(f"{proc.pid} ")


@pytest.mark.slow  # a 20-epoch run waited on and stopped (2 min)
def test_a_second_run_is_refused_or_waits_and_sigterm_stops_the_first_where_it_can_resume(tmp_path):
    epochs = 20
    config = _teacher_only_config(tmp_path, "shared", epochs)
    run_dir, checkpoint = tmp_path / "shared", tmp_path / "shared" / "teacher" / "checkpoint.pt"
    first = _start(_command(config), tmp_path / "first")
    _wait_for(_holds_lock(run_dir, first), first, "the first run takes the lock")

    second = subprocess.run(_command(config), capture_output=True, text=True)
    assert_one_sentence(second, f"is in use by kdforge process {first.pid}")

    waiting = _start(_command(config) + ["--wait"], tmp_path / "waiting")
    _wait_for(lambda: "waiting for kdforge process" in Path(f"{tmp_path / 'waiting'}.out").read_text(), waiting,
              "the --wait run queues")
    _wait_for(lambda: _checkpoint_epoch(checkpoint) >= 1, first, "two epochs are saved")
    first.send_signal(signal.SIGTERM)
    stopped = _finished(first, tmp_path / "first")
    # The queued run resumes as soon as the first one exits, and saves its own epochs: the
    # checkpoint on disk is no longer the stopped run's, so its count is read from its message.
    # The resumed run's "resumed at epoch" line then shows that the message told the truth.
    reported = re.search(r"\((\d+) of \d+ epochs saved", stopped.stderr)
    assert reported, stopped.stderr
    saved = int(reported.group(1))
    assert 2 <= saved < epochs, "the signal must land mid-training"
    assert_one_sentence(stopped, f"stopped by SIGTERM during teacher ({saved} of {epochs} epochs saved in {checkpoint})",
                        code=128 + signal.SIGTERM, prefix="kdforge: stopped by SIGTERM")
    assert "run the same command again to resume" in stopped.stderr

    resumed = _finished(waiting, tmp_path / "waiting")
    assert resumed.returncode == 0, resumed.stderr
    assert f"waiting for kdforge process {first.pid}" in resumed.stdout
    assert f"resumed at epoch {saved + 1}" in resumed.stdout
    assert not list(run_dir.rglob(".*.tmp*")), "a temporary file was left behind"


def test_ctrl_c_leaves_the_last_complete_epochs_checkpoint(tmp_path):
    epochs = 20
    config = _teacher_only_config(tmp_path, "interrupted", epochs)
    checkpoint = tmp_path / "interrupted" / "teacher" / "checkpoint.pt"
    proc = _start(_command(config), tmp_path / "proc")
    _wait_for(lambda: _checkpoint_epoch(checkpoint) >= 0, proc, "one epoch is saved")
    proc.send_signal(signal.SIGINT)
    out = _finished(proc, tmp_path / "proc")
    saved = _checkpoint_epoch(checkpoint) + 1
    assert_one_sentence(out, f"stopped by SIGINT during teacher ({saved} of {epochs} epochs saved",
                        code=128 + signal.SIGINT, prefix="kdforge: stopped by SIGINT")


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    config = _teacher_only_config(tmp_path, "killed", 20)
    run_dir = tmp_path / "killed"
    proc = _start(_command(config), tmp_path / "proc")
    _wait_for(_holds_lock(run_dir, proc), proc, "the run takes the lock")
    proc.kill()
    proc.wait()
    after = subprocess.run([sys.executable, "-m", "kdforge", "run", config, "--only", "data"], capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
    assert f"took over {run_dir / '.kdforge.lock'} from process {proc.pid}" in after.stdout
    assert (run_dir / ".kdforge.lock").read_text() == ""  # released cleanly this time


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_a_failed_write_is_one_sentence_and_loses_nothing(finished, monkeypatch, capsys, fault):
    """The writes of one stage fail as a full disk (writes land in /dev/full, which answers ENOSPC)
    or a read-only file system would make them fail."""
    from kdforge import atomic
    from kdforge.cli import main

    root, _ = finished
    before = _hashes(root / "run")

    def full_disk(path):
        return open("/dev/full", "wb")

    def read_only(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(atomic, "_open", full_disk if fault == "disk full" else read_only)
    assert main(["run", str(root / "ok.yaml"), "--only", "strip", "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdforge: error: cannot write "), err
    assert ("the disk is full" if fault == "disk full" else "read-only") in err[0]
    assert "every earlier artifact is intact" in err[0]
    assert _hashes(root / "run") == before


@pytest.mark.parametrize("kernel", ["native", "python"])
def test_one_onnx_runtime_session_shared_by_eight_threads(tmp_path, kernel):
    from kdforge.export import ort as ort_backend
    from kdforge.export.onnx_export import export_onnx
    from kdforge.train.models import create_model

    if kernel == "native" and ort_backend.native_library() is None:
        pytest.skip("no C compiler here: the native kernel cannot be built")
    torch.manual_seed(0)
    export_onnx(create_model("resnet8_adder", 10, 1).eval(), torch.zeros(2, 1, 8, 8), tmp_path / "ann.onnx")
    sess = ort_backend.session(tmp_path / "ann.onnx", threads=2, adder_kernel=kernel)
    batches = [np.random.default_rng(i).standard_normal((4, 1, 8, 8)).astype(np.float32) for i in range(32)]
    alone = [ort_backend.run(sess, b) for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda b: ort_backend.run(sess, b), batches))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
