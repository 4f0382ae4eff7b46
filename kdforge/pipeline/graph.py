"""The stage graph: which units a config has, what each depends on, and their fingerprints.

Units, in order: data, teacher (when the config has one), then per student distill/S, strip/S,
qat/S (for a student with `qat`), export/S, verify/S,
then profile (all students at once: their latencies are measured in interleaved rounds, so they are
one measurement) and report. A unit's fingerprint hashes its own part of the config and the
fingerprints of the units it depends on, so a change re-runs that unit and everything after it.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

from kdforge.config import Config

STAGES = ("data", "teacher", "distill", "strip", "qat", "export", "verify", "profile", "report")


@dataclass
class Unit:
    stage: str
    student: Optional[str] = None
    deps: list[str] = field(default_factory=list)
    config_part: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def key(self) -> str:
        return self.stage if self.student is None else f"{self.stage}/{self.student}"


def _dump(model) -> dict:
    return model.model_dump(mode="json")


def build_graph(cfg: Config) -> list[Unit]:
    units = [Unit("data", config_part={"data": _dump(cfg.data), "seed": cfg.seed})]
    if cfg.teacher is not None:
        from kdforge.train.methods import teacher_method

        units.append(Unit("teacher", deps=["data"], config_part={"teacher": _dump(cfg.teacher), "seed": cfg.seed,
                                                                 "method": teacher_method(cfg)}))
    for s in cfg.students:
        # what the student ships (deploy, and the precision read from it) and its qat re-run only those stages and what follows
        trained = {k: v for k, v in _dump(s).items() if k not in ("qat", "deploy", "precision")}
        parts = {
            "distill": ({"student": trained, "seed": cfg.seed}, ["data", "teacher"] if cfg.teacher is not None else ["data"]),
            "strip": ({}, [f"distill/{s.name}"]),
        }
        if s.qat is not None:
            e = cfg.export
            parts["qat"] = ({"qat": _dump(s.qat), "int8_cpu": e.int8_cpu, "calibration_images": e.calibration_images,
                             "seed": cfg.seed}, [f"strip/{s.name}", "data"])
        parts["export"] = ({"export": _dump(cfg.export), "deploy": s.deploy}, [f"qat/{s.name}" if s.qat is not None else f"strip/{s.name}"])
        parts["verify"] = ({"verify": _dump(cfg.verify)}, [f"export/{s.name}", "data"])
        units += [Unit(stage, s.name, deps, part) for stage, (part, deps) in parts.items()]
    units.append(Unit("profile", deps=[f"export/{s.name}" for s in cfg.students],
                      config_part={"profile": _dump(cfg.profile), "seed": cfg.seed}))
    report_deps = [f"{stage}/{s.name}" for s in cfg.students for stage in ("distill", "verify")]
    units.append(Unit("report", deps=[*report_deps, "profile"]))
    by_key = {}
    for unit in units:
        payload = json.dumps([unit.key, unit.config_part, [by_key[d].fingerprint for d in unit.deps]], sort_keys=True)
        unit.fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:16]
        by_key[unit.key] = unit
    return units
