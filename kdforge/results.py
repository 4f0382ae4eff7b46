"""The records the export, verify and profile stages write (export's metrics in the manifest,
verify.json, profile.json), as one schema that the writers validate against and the report reads:
a key renamed by a writer fails where it is written, not when the report stage runs."""

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from kdforge.errors import UserError, printable


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntegerTargets(Record):
    """The CPU an INT8 file was made for beside the host that verified it (kdforge.export.int8_cpu.targets)."""
    made_for: Optional[str]
    scheme: Optional[str]
    host: str
    note: Optional[str]
    float_layers: list[str]


class Divergence(Record):
    """The first layer of a failing file whose output diverges from PyTorch's (kdforge.export.divergence)."""
    layer: str
    tensor: str
    relative_error: float
    logits_relative_error: float


class Verdict(Record):
    """One deployed artifact against the PyTorch model on the test split (kdforge.export.verify)."""
    backend: str
    samples: int
    max_abs_diff: float
    top1_agreement: float
    accuracy_pytorch: float
    accuracy_backend: float
    accuracy_drop: float
    atol: Optional[float]  # None for an INT8 file, judged by agreement and accuracy lost
    atol_key: str
    min_agreement: float
    max_accuracy_drop: Optional[float] = None
    passed: bool
    cpu: Optional[IntegerTargets] = None
    first_divergence: Optional[Divergence] = None


class Counts(Record):
    """MACs by kind of the deployed module and of its ONNX file, which must agree."""
    pytorch: dict[str, int]
    onnx: dict[str, int]
    agree: bool
    note: str


class VerifyRecord(Record):
    """verify.json: one verdict per artifact name, beside "counts"."""
    verdicts: dict[str, Verdict]
    counts: Counts

    def to_json(self) -> dict:
        return {**{name: v.model_dump() for name, v in self.verdicts.items()}, "counts": self.counts.model_dump()}

    @classmethod
    def from_json(cls, raw: dict) -> "VerifyRecord":
        return cls(verdicts={k: v for k, v in raw.items() if k != "counts"}, counts=raw["counts"])


class ExportRecord(Record):
    """The export stage's facts of a student's files; each artifact entry may add its own."""
    model_config = ConfigDict(extra="allow")
    onnx_bytes: int
    flavour: str
    tensorrt: bool = False
    int8_onnx_bytes: Optional[int] = None
    fp16_onnx_bytes: Optional[int] = None
    calibration_images: Optional[int] = None
    calibration: Optional[str] = None
    int8_cpu: Optional[str] = None  # the CPU target of model.int8.onnx's integer types, "any" for the exact adder node
    int8_scheme: Optional[str] = None
    int8_search: Optional[dict[str, Any]] = None  # kdforge.export.int8_search's record: its float layers among it


class LatencyFigure(Record):
    """One timed subject at one batch size (kdforge.profile.latency), with what ran it."""
    model_config = ConfigDict(extra="allow")  # what runs it: backend, provider, threads, device, inference_precision, ...
    p50_ms: float
    ci_low_ms: float
    ci_high_ms: float
    stable: bool
    rounds: int
    p90_ms: Optional[float] = None
    batch: Optional[int] = None
    graph: Optional[str] = None
    shared_with: list[str] = []


class ProfileRecord(Record):
    """profile.json: the costs of the deployed module, its figures per artifact (and "pytorch"),
    the batch sweep, the machine, and the estimates per target."""
    costs: dict[str, Any]
    latency: dict[str, LatencyFigure]
    sweep: dict[str, list[dict[str, Any]]] = {}
    environment: dict[str, Any]
    estimates: dict[str, dict[str, Any]] = {}


def read_record(path: Path, parse):
    """`parse` (a record's model_validate or from_json) of the JSON file at `path`; a file that is not
    that record (edited by hand, or written by another version) is one sentence naming the key."""
    from kdforge.safe_files import read_json

    try:
        return parse(read_json(path, "stage record"))
    except (ValidationError, KeyError, AttributeError, TypeError) as e:
        where = e.errors()[0] if isinstance(e, ValidationError) else None
        key = ".".join(str(p) for p in where["loc"]) if where else str(e)
        raise UserError(f"{printable(str(path))} is not the record kdforge writes there (key {key}"
                        f"{': ' + where['msg'] if where else ''}); re-run the stage that wrote it with --force.") from None
