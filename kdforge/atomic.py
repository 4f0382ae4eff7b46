"""Atomic writes: every artifact is written to a temporary name beside its target and renamed
into place, so a killed process leaves either the old file or the new one, never half of one."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def atomic_path(target: Path):
    """Yields a temporary path to write; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: Path, data) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def save_torch(target: Path, obj) -> None:
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
