"""Runs a config's stage graph in its run directory: skips units that are up to date, runs the
rest in order, prints one line per unit and records each in the manifest."""

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

from kdforge import atomic
from kdforge.config import Config
from kdforge.errors import UserError
from kdforge.pipeline.graph import STAGES, build_graph
from kdforge.pipeline.manifest import Manifest
from kdforge.pipeline.stages import STAGE_FUNCTIONS, StageContext


def prepare_run_dir(cfg: Config) -> Path:
    run_dir = cfg.resolved_run_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"run directory {run_dir} cannot be created ({e.strerror}); set run_dir to a writable folder.") from None
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run directory {run_dir} is not writable; set run_dir to a writable folder.")
    return run_dir


def run_pipeline(cfg: Config, force: bool = False, only: Optional[Iterable[str]] = None, log: Callable[[str], None] = print) -> Path:
    only = set(only or ())
    unknown = only - set(STAGES)
    if unknown:
        raise UserError(f"--only: unknown stage '{sorted(unknown)[0]}'; stages are {', '.join(STAGES)}.")
    run_dir = prepare_run_dir(cfg)
    atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    manifest = Manifest(run_dir)
    units = build_graph(cfg)
    by_key = {u.key: u for u in units}
    cache: dict = {}
    for unit in units:
        if only and unit.stage not in only:
            continue
        if not force and manifest.up_to_date(unit.key, unit.fingerprint, run_dir):
            log(f"[{unit.key}] up to date, skipped")
            continue
        for dep in unit.deps:
            if not manifest.up_to_date(dep, by_key[dep].fingerprint, run_dir):
                raise UserError(f"stage '{unit.key}' needs '{dep}', which is missing or out of date; run without --only first.")
        started = time.perf_counter()
        try:
            result = STAGE_FUNCTIONS[unit.stage](StageContext(cfg, run_dir, unit, manifest, cache))
        except BaseException:
            manifest.record(unit.key, status="failed", fingerprint=unit.fingerprint, inputs=unit.deps, outputs=[], metrics={})
            raise
        seconds = time.perf_counter() - started
        manifest.record(
            unit.key, status="done", fingerprint=unit.fingerprint, inputs=unit.deps,
            outputs=[str(Path(p).relative_to(run_dir)) for p in result.outputs], metrics=result.metrics,
            summary=result.summary, wall_time=round(seconds, 3),
        )
        log(f"[{unit.key}] {result.summary} ({seconds:.1f} s)")
    return run_dir
