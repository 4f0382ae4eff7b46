"""Runs a config's stage graph in its run directory: skips units that are up to date, runs the
rest in order, prints one line per unit and records each in the manifest.

Under torchrun every rank walks the same graph: the training stages (teacher, distill) run on
all ranks, everything else and every write on rank 0 only, with a barrier after each unit; the
other ranks take their skip decisions from the manifest as rank 0 last wrote it.

Rank 0 holds the run directory's lock (pipeline/lock.py) for the whole run. A unit that fails or
is interrupted is recorded as failed (as far as the disk allows) and the next run redoes it; an
interrupted unit is named in the Interrupted it raises."""

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

from kdforge import atomic
from kdforge.config import Config
from kdforge.errors import Interrupted, UserError
from kdforge.pipeline.graph import STAGES, build_graph
from kdforge.pipeline.lock import run_lock
from kdforge.pipeline.manifest import Manifest
from kdforge.pipeline.stages import STAGE_FUNCTIONS, StageContext
from kdforge.train import distributed
from kdforge.train.device import resolve_device


def prepare_run_dir(cfg: Config) -> Path:
    run_dir = cfg.resolved_run_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"run directory {run_dir} cannot be created ({e.strerror}); set run_dir to a writable folder.") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; set run_dir to a writable folder.")
    return run_dir


_TRAINING_STAGES = ("teacher", "distill")


def run_pipeline(cfg: Config, force: bool = False, only: Optional[Iterable[str]] = None, log: Callable[[str], None] = print,
                 wait: bool = False) -> Path:
    """Runs the config's units in its run directory; `wait` queues behind another kdforge process
    on the same directory instead of refusing to start."""
    only = set(only or ())
    unknown = only - set(STAGES)
    if unknown:
        raise UserError(f"--only: unknown stage '{sorted(unknown)[0]}'; stages are {', '.join(STAGES)}.")
    distributed.init_from_environment(resolve_device(cfg.device))
    main = distributed.is_main()
    log = log if main else (lambda line: None)
    if not main:
        return _run_units(cfg, cfg.resolved_run_dir(), force, only, log, main)
    run_dir = prepare_run_dir(cfg)
    with run_lock(run_dir, wait, log):
        return _run_units(cfg, run_dir, force, only, log, main)


def _run_units(cfg: Config, run_dir: Path, force: bool, only: set, log: Callable[[str], None], main: bool) -> Path:
    if main:
        atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    distributed.barrier()
    manifest = Manifest(run_dir)
    units = build_graph(cfg)
    by_key = {u.key: u for u in units}
    cache: dict = {}
    for unit in units:
        if only and unit.stage not in only:
            continue
        if not main:
            manifest = Manifest(run_dir)  # as rank 0 last wrote it, before the last barrier
        if not force and manifest.up_to_date(unit.key, unit.fingerprint, run_dir):
            log(f"[{unit.key}] up to date, skipped")
            continue
        for dep in unit.deps:
            if not manifest.up_to_date(dep, by_key[dep].fingerprint, run_dir):
                raise UserError(f"stage '{unit.key}' needs '{dep}', which is missing or out of date; run without --only first.")
        if not main and unit.stage not in _TRAINING_STAGES:
            distributed.barrier()  # rank 0 runs this unit alone
            continue
        started = time.perf_counter()
        try:
            result = STAGE_FUNCTIONS[unit.stage](StageContext(cfg, run_dir, unit, manifest, cache))
        except BaseException as error:
            if main:
                _record_failure(manifest, unit)
            if isinstance(error, KeyboardInterrupt):
                stop = Interrupted.of(error)
                stop.unit = unit.key
                raise stop from None
            raise
        seconds = time.perf_counter() - started
        if main:
            manifest.record(
                unit.key, status="done", fingerprint=unit.fingerprint, inputs=unit.deps,
                outputs=[str(Path(p).relative_to(run_dir)) for p in result.outputs], metrics=result.metrics,
                summary=result.summary, wall_time=round(seconds, 3),
            )
        distributed.barrier()
        log(f"[{unit.key}] {result.summary} ({seconds:.1f} s)")
    return run_dir


def _record_failure(manifest: Manifest, unit) -> None:
    """Marks the unit failed so the next run redoes it; where even that cannot be written (a full
    disk), the error that stopped the unit is the one worth reporting."""
    try:
        manifest.record(unit.key, status="failed", fingerprint=unit.fingerprint, inputs=unit.deps, outputs=[], metrics={})
    except (OSError, UserError):
        pass
