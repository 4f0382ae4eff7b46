"""The run directory's manifest.json: per stage unit its status, fingerprint, inputs, outputs,
metrics, summary and wall time. A unit is up to date when it is recorded done with the same
fingerprint and all its outputs still exist."""

import json
import time
from pathlib import Path

from kdforge import atomic
from kdforge.errors import UserError


class Manifest:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "manifest.json"
        self.units: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.units = json.loads(self.path.read_text())["units"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{self.path} is corrupt; delete it (every stage then runs again) or choose another run_dir.") from None

    def up_to_date(self, unit: str, fingerprint: str, run_dir: Path) -> bool:
        entry = self.units.get(unit)
        return (
            entry is not None and entry["status"] == "done" and entry["fingerprint"] == fingerprint
            and all((run_dir / out).exists() for out in entry["outputs"])
        )

    def record(self, unit: str, **entry) -> None:
        entry["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.units[unit] = entry
        self.save()

    def save(self) -> None:
        atomic.write_json(self.path, {"units": self.units})
