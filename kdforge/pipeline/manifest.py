"""The run directory's manifest.json: per stage unit its status, fingerprint, inputs, outputs,
metrics, summary and wall time. A unit is up to date when it is recorded done with the same
fingerprint and all its outputs still exist."""

import time
from pathlib import Path

from kdforge import atomic
from kdforge.errors import UserError, printable
from kdforge.safe_files import read_json


_ENTRY_TYPES = {"status": str, "fingerprint": str, "outputs": list, "metrics": dict}


def _units(raw) -> dict[str, dict]:
    """The manifest's units, a ValueError unless each is a record with the fields kdforge reads."""
    units = raw["units"]
    if not isinstance(units, dict) or not all(isinstance(e, dict) for e in units.values()):
        raise ValueError("units is not a mapping of records")
    for entry in units.values():
        if any(not isinstance(entry.get(key), kind) for key, kind in _ENTRY_TYPES.items()):
            raise ValueError("a record lacks status, fingerprint, outputs or metrics")
        if not all(isinstance(out, str) for out in entry["outputs"]):
            raise ValueError("an output is not a path")
    return units


class Manifest:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "manifest.json"
        self.units: dict[str, dict] = {}
        if self.path.exists():
            try:
                self.units = _units(read_json(self.path, "manifest"))
            except (UserError, KeyError, TypeError, ValueError):
                raise UserError(f"{printable(str(self.path))} is corrupt; delete it (every stage then runs again) or choose "
                                f"another run_dir.") from None

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
