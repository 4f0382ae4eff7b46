"""One kdforge process per run directory at a time.

`kdforge run` holds an exclusive lock on RUN_DIR/.kdforge.lock (flock) while it works and writes
its process id into the file. A second process on the same directory ends with a UserError naming
that process, or with `wait=True` waits until the lock is free. The kernel releases a lock when
its process dies however it dies, so a lock left by a killed process is simply taken over; the
id the killed process left in the file tells that it happened.
"""

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from kdforge.errors import UserError

LOCK_NAME = ".kdforge.lock"


def _holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


@contextmanager
def run_lock(run_dir: Path, wait: bool = False, log: Callable[[str], None] = print):
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"cannot create the lock file {path} ({e.strerror}); set run_dir to a writable folder.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "unknown"
            if not wait:
                raise UserError(f"run directory {run_dir} is in use by kdforge process {holder}; wait for it to end, "
                                f"or pass --wait to start when it does.") from None
            log(f"waiting for kdforge process {holder}, which is using {run_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        stale = _holder(fd)
        if stale:
            log(f"took over {path} from process {stale}, which ended without releasing it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
    finally:
        os.close(fd)  # releases the lock
