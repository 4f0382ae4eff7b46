"""Atomic writes: every artifact is written to a temporary name beside its target, flushed to
disk and renamed into place, so a killed process leaves either the old file or the new one,
never half of one. A write that fails (a full disk, a read-only folder) removes the temporary
file and ends with a UserError naming the target; what the run wrote before stays as it was."""

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from kdforge.errors import UserError

_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and run again",
    errno.EDQUOT: "the disk quota is used up; free some space and run again",
    errno.EROFS: "the file system is read-only; set run_dir to a writable folder",
    errno.EACCES: "permission denied; set run_dir to a folder you can write",
    errno.EPERM: "permission denied; set run_dir to a folder you can write",
}


@contextmanager
def atomic_path(target: Path):
    """Yields a temporary path to write; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, target)
    except OSError as e:
        hint = _HINTS.get(e.errno, "check the folder")
        raise UserError(f"cannot write {target} ({e.strerror or e}): {hint}; every earlier artifact is intact.") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder where nothing was written
            pass


def _open(path: Path):
    return open(path, "wb")


@contextmanager
def atomic_file(target: Path):
    """Yields a binary file that replaces `target` once written and flushed to disk."""
    with atomic_path(target) as tmp, _open(tmp) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(target: Path, text: str) -> None:
    with atomic_file(target) as f:
        f.write(text.encode())


def write_json(target: Path, data) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def save_torch(target: Path, obj) -> None:
    # through a Python file object: a failed write is then an OSError, not a bare RuntimeError
    with atomic_file(target) as f:
        torch.save(obj, f)
